"""`GET /crm` benchmark: the real agent against a floor, side by side, with wrk.

    python bench/http_bench.py --store sqlite:///var/bench/store.db [--connections 10,50]
                               [--seconds 10] [--callers 2000] [--uvloop]

The floor is a minimal aiohttp handler answering a constant text (no lookup, no rules), on
asyncio; `--uvloop` runs the agent on uvloop, `--floor-uvloop` the floor.
Both servers run pinned to core 0, wrk (Debian package `wrk`) on core 1 with keep-alive
connections, one thread. Callers are drawn from the store's contacts (the numbers
`store_bench.py` generates) in mixed formats: +33…, 0033…, 06…, with spaces, URL-encoded.
Target (issue #3): the agent serves ≥ 0.8× the floor's requests/s.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
FLOOR = """
import os, sys
from aiohttp import web
os.sched_setaffinity(0, {0})
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.install()
async def crm(request):
    return web.Response(text="OR", content_type="text/plain")
app = web.Application()
app.router.add_get("/crm", crm)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def callers(count: int, contacts: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        digits = f"{10_000_000 + rng.randrange(contacts) * 7:08d}"  # see store_bench.number()
        spaced = " ".join(digits[i:i + 2] for i in range(0, 8, 2))
        out.append(rng.choice([f"+336{digits}", f"00336{digits}", f"06{digits}",
                               f"06 {spaced}", f"+33 6 {spaced}"]))
    return out


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def wrk(port: int, connections: int, seconds: int, script: Path) -> tuple[float, str, str]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (the load generator)")
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} failed requests on port {port}:\n{out}")
    return rps, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'var/bench/store.db'}")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--callers", type=int, default=2000)
    parser.add_argument("--connections", default="10,50")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--uvloop", action="store_true", help="run the agent on uvloop")
    parser.add_argument("--floor-uvloop", action="store_true", help="run the floor on uvloop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    paths = work / "paths.txt"
    paths.write_text("".join(f"/crm?field_name=segment&callerid={quote(c)}\n"
                             for c in callers(args.callers, args.contacts)))
    script = work / "crm.lua"
    script.write_text(LUA % paths)
    agent = subprocess.Popen([sys.executable, str(ROOT / "bench/agent_server.py"), "--store",
                              args.store, "--http", "18080", "--agi", "14573", "--cpu", "0",
                              *(["--uvloop"] if args.uvloop else [])],
                             stdout=subprocess.PIPE, text=True)
    floor = subprocess.Popen([sys.executable, "-c", FLOOR, "18081",
                              "uvloop" if args.floor_uvloop else "asyncio"])
    try:
        wait_port(18080)
        wait_port(18081)
        print(f"{'server':<8}{'conns':>6}{'req/s':>10}{'p50':>10}{'p99':>10}")
        for conns in (int(c) for c in args.connections.split(",")):
            for name, port in (("floor", 18081), ("agent", 18080)):
                wrk(port, conns, 2, script)  # warm-up (and the agent's lookup cache)
                rps, p50, p99 = wrk(port, conns, args.seconds, script)
                print(f"{name:<8}{conns:>6}{rps:>10.0f}{p50:>10}{p99:>10}", flush=True)
    finally:
        for proc in (agent, floor):
            proc.terminate()
            proc.wait(timeout=30)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


if __name__ == "__main__":
    main()
