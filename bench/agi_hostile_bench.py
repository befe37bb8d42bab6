#!/usr/bin/env python3
"""FastAGI under hostile peers: normal calls while N peers answer the MSet with an endless
`520-...` usage reply (never the closing `520 ` line), as fast as the server reads it.

    python bench/agi_hostile_bench.py [--target builtin|agent] --hostile 0,1,10 --inflight 10 \
        --seconds 10 [--cpu 0] [--loop asyncio|uvloop]

Each `--hostile` count gets a fresh server: `builtin` (`agent.pbx.agi.AgiServer` with a trivial
async script, from `agi_bench.py --serve builtin`) or `agent` (`bench/agent_server.py` on an
empty SQLite store in a temporary directory: every caller is unknown, so lookups hit the
store and the circuit breaker is in play; its deadline is the default 300 ms), pinned to the
core that is not `--cpu`. The normal callers are `agi_bench.py`'s load generator
(`--inflight` calls back to back); the hostile peers run in the same process: each one
connects, sends an env block, waits for the first command, then writes 64 KiB blocks of
`520-` lines whenever its transport accepts more, until the server closes the connection,
and then connects again. At the end of the round the bench closes whatever is still open, so
it always stops by itself.

Printed per round: the normal calls' p50/p99/max latency (connect -> MSet reply -> close), the
calls that took longer than the deadline, errors (connection errors, or not exactly one MSet),
the hostile sessions and the longest one, what the hostile peers wrote into their sockets
(mostly never read: the kernel takes megabytes before the server closes), the server's RSS
before and after the round and its peak (VmHWM), both processes' CPU and the machine's idle
share (near 0 while both are under 100 %: something else competes). The server's log goes
to a file in the temporary directory; its line count is printed with its counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agi_bench import (  # the generator, reused as is
    LOOPS,
    Tally,
    Target,
    _default_gen_loop,
    _ms,
    machine_ticks,
    make_callers,
    make_envs,
    open_target,
    pin,
    run,
    worker,
)

ROOT = Path(__file__).resolve().parents[1]
LINE = b"520-Usage: EXEC <application> <options>  Executes application with given options.\n"
BLOCK = LINE * (65536 // len(LINE))


# ----------------------------------------------------------------------------- hostile peers


class Hostile(asyncio.Protocol):
    """One hostile session: env block, then `520-` lines for as long as the server reads."""

    def __init__(self, env: bytes, done: asyncio.Future[None], stats: HostileStats) -> None:
        self._env, self._done, self._stats = env, done, stats
        self._transport: asyncio.Transport | None = None
        self._streaming = self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._transport.write(self._env)

    def data_received(self, data: bytes) -> None:
        if not self._streaming and b"\n" in data:  # the MSet: answer it, forever
            self._streaming = True
            self._pump()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        """One block per turn of the loop, so the normal callers are served in between."""
        transport = self._transport
        if self._paused or transport is None or transport.is_closing():
            return
        transport.write(BLOCK)
        self._stats.sent += len(BLOCK)
        asyncio.get_running_loop().call_soon(self._pump)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


@dataclass
class HostileStats:
    sessions: int = 0
    sent: int = 0
    held: list[float] = field(default_factory=list)


async def hostile(host: str, port: int, envs: Iterator[bytes], stop_at: float,
                  stats: HostileStats) -> None:
    """Hostile sessions back to back until `stop_at`; the last one is cut off then."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        done: asyncio.Future[None] = loop.create_future()
        start = loop.time()
        try:
            _, peer = await loop.create_connection(
                functools.partial(Hostile, next(envs), done, stats), host, port)
        except OSError:
            continue
        await asyncio.wait([done], timeout=max(stop_at - loop.time(), 0.0))
        if not done.done():
            cast(Hostile, peer).abort()
            await done
        stats.sessions += 1
        stats.held.append(loop.time() - start)


# ----------------------------------------------------------------------------- a round


@dataclass
class Round:
    hostile: int
    inflight: int
    seconds: float
    tally: Tally
    stats: HostileStats
    gen_cpu: float
    srv_cpu: float | None
    rss: tuple[int, int, int]  # kB: before, after, peak
    idle: float  # the whole machine's, over the window

    def row(self, deadline_s: float) -> list[str]:
        ordered = sorted(self.tally.latencies) or [0.0]
        late = sum(latency > deadline_s for latency in ordered)
        held = max(self.stats.held, default=0.0) * 1000
        return [str(self.hostile), str(self.inflight), str(len(self.tally.latencies)),
                f"{_ms(ordered, 0.5):.2f}", f"{_ms(ordered, 0.99):.2f}",
                f"{ordered[-1] * 1000:.1f}", str(late),
                str(self.tally.errors + self.tally.bad), str(self.stats.sessions),
                f"{held:.0f}", f"{self.stats.sent / 1e6:,.0f}",
                *(f"{kb / 1024:.0f}" for kb in self.rss), f"{self.gen_cpu:.0%}",
                "n/a" if self.srv_cpu is None else f"{self.srv_cpu:.0%}", f"{self.idle:.0%}"]


HEADER = ["hostile", "inflight", "calls", "p50 ms", "p99 ms", "max ms", ">deadline", "errors",
          "hostile sessions", "longest ms", "hostile MB written", "RSS before MB", "RSS after MB",
          "peak RSS MB", "gen CPU", "srv CPU", "idle"]


def memory_kb(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: int(rest.split()[0]) for key, _, rest in (line.partition(":") for line in lines)
            if key in ("VmRSS", "VmHWM")}


async def run_round(target: Target, hostiles: int, inflight: int, seconds: float,
                    warmup: float, envs: Iterator[bytes]) -> Round:
    loop = asyncio.get_running_loop()
    assert target.process is not None
    pid = target.process.pid
    before = memory_kb(pid)["VmRSS"]
    tally, stats = Tally(), HostileStats()
    stop_at = loop.time() + warmup + seconds
    tasks = [asyncio.create_task(worker(target.host, target.port, envs, stop_at, tally))
             for _ in range(inflight)]
    await asyncio.sleep(warmup)  # timing the window, not synchronising
    tasks += [asyncio.create_task(hostile(target.host, target.port, envs, stop_at, stats))
              for _ in range(hostiles)]
    tally.measuring = True
    cpu, srv, wall = time.process_time(), target.cpu_time(), time.perf_counter()
    machine = machine_ticks()
    await asyncio.sleep(seconds)
    total, idle, _ = (end - start for end, start in zip(machine_ticks(), machine, strict=True))
    tally.measuring = False
    wall = time.perf_counter() - wall
    gen_cpu = (time.process_time() - cpu) / wall
    srv_cpu = None if srv is None else ((target.cpu_time() or 0.0) - srv) / wall
    await asyncio.gather(*tasks)
    after = memory_kb(pid)
    return Round(hostiles, inflight, wall, tally, stats, gen_cpu, srv_cpu,
                 (before, after["VmRSS"], after["VmHWM"]), idle / total)


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AgentTarget(Target):
    http_port: int = 0


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Children started meanwhile inherit `path` as their stderr (their log)."""
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_agent(cpu: int, loop_name: str, store: Path) -> AgentTarget:
    """`bench/agent_server.py` on a fresh SQLite store, stopped by SIGTERM (`close_agent`)."""
    http, agi = free_port(), free_port()
    command = [sys.executable, str(ROOT / "bench" / "agent_server.py"), "--store",
               f"sqlite:///{store}", "--http", str(http), "--agi", str(agi), "--cpu", str(cpu),
               *(["--uvloop"] if loop_name == "uvloop" else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "READY":
        process.kill()
        raise SystemExit("the agent did not start")
    return AgentTarget("agent", "127.0.0.1", agi, process, http_port=http)


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return cast(bytes, response.read())
    except urllib.error.HTTPError as error:  # /readyz answers 503 when not ready
        return cast(bytes, error.read())


def close_agent(target: AgentTarget) -> str:
    """The agent's FastAGI and CRM counters and its breaker, then SIGTERM."""
    base = f"http://127.0.0.1:{target.http_port}"
    metrics = fetch(f"{base}/metrics").decode()
    ready = json.loads(fetch(f"{base}/readyz") or b"{}")
    assert target.process is not None
    target.process.send_signal(signal.SIGTERM)
    target.process.wait(timeout=30)
    counters = [line.replace("crm_agent_", "").replace(".0", "") for line in metrics.splitlines()
                if line.startswith(("crm_agent_agi_sessions", "crm_agent_crm_errors_total"))]
    breaker = ready.get("rules", {}).get("breaker")
    return f"{' '.join(counters)}; breaker {breaker}"


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("builtin", "agent"), default="builtin")
    parser.add_argument("--hostile", default="0,1,10", help="hostile peers per round, e.g. 0,10")
    parser.add_argument("--inflight", type=int, default=10, help="normal calls in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a round")
    parser.add_argument("--warmup", type=float, default=1.0, help="normal calls only, first")
    parser.add_argument("--cpu", type=int, default=0, help="core of the load generator")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="server's event loop")
    parser.add_argument("--gen-loop", choices=LOOPS, default=_default_gen_loop())
    parser.add_argument("--deadline-ms", type=int, default=300,
                        help="builtin AgiServer deadline (the agent's is 300)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    server_cpu = pin(args.cpu)
    deadline_s = (args.deadline_ms if args.target == "builtin" else 300) / 1000
    envs = itertools.cycle(make_envs(make_callers()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="agi-hostile-") as tmp:
        for hostiles in (int(n) for n in args.hostile.split(",")):
            log = Path(tmp) / f"server-{hostiles}.log"
            with stderr_to(log):
                target = (open_agent(server_cpu, args.loop, Path(tmp) / f"store-{hostiles}.db")
                          if args.target == "agent" else
                          open_target("builtin", server_cpu, args.loop, args.deadline_ms))
            try:
                result = run(run_round(target, hostiles, args.inflight, args.seconds,
                                       args.warmup, envs), args.gen_loop)
            finally:
                stats = (close_agent(target) if isinstance(target, AgentTarget) else
                         target.close())
            rows.append(result.row(deadline_s))
            lines = log.read_bytes().count(b"\n")
            print(f"# {args.target}, {hostiles} hostile: {stats}; server log: {lines:,} lines",
                  file=sys.stderr)
    import agent  # where the server's code came from (PYTHONPATH can point at another copy)

    print(f"# {args.target} on {args.loop}, cpu {server_cpu}, deadline {deadline_s * 1000:.0f} "
          f"ms, agent package {Path(agent.__file__).parent}; generator {args.gen_loop} on cpu "
          f"{args.cpu}; {os.cpu_count()} cores")
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
