#!/usr/bin/env python3
"""Two copies of the agent side by side, each against the floors in the same run: FastAGI
`route` (`agi_bench.py`: the agent, then `floor`) and `GET /crm` (`http_bench.py`: the
aiohttp floor, then the agent), on uvloop and asyncio, runs alternating between the copies.

    python bench/versus.py --trees /tmp/before,. --runs 3 [--loops uvloop,asyncio]
                           [--store sqlite:///var/bench/store.db] [--seconds 8]

A tree is a directory holding an `agent/` package (e.g. `git archive REV agent | tar -x -C
/tmp/before`): the agent runs with `PYTHONPATH` pointing at it, the load generators, the
floors and the sample rules are this checkout's. The agent is pinned to core 0, the load
generators to core 1.
Prints one line per (run, tree, loop): FastAGI calls/s and p99 at 10 in flight against the
floor's, and `/crm` requests/s and p99 at 10 connections against the floor's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def callers_file(contacts: int, count: int) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    from http_bench import callers  # the numbers store_bench.py generated

    path = Path(tempfile.mkdtemp()) / "callers.txt"
    path.write_text("\n".join(callers(count, contacts)) + "\n")
    return path


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def fastagi(tree: Path, loop: str, store: str, callers: Path, seconds: float) -> dict[str, float]:
    agent = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/agent_server.py"), "--store", store, "--agi", "14573",
         "--http", "18090", "--cpu", "0", *(["--uvloop"] if loop == "uvloop" else [])],
        stdout=subprocess.PIPE, text=True, env=env_for(tree))
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "READY"
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench/agi_bench.py"), "--target",
             f"127.0.0.1:14573/{agent.pid},floor", "--inflight", "10", "--cpu", "1",
             "--callers", str(callers), "--seconds", str(seconds), "--warmup", "3"],
            capture_output=True, text=True, env=env_for(tree), check=True).stdout
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*(127\.|floor)", line)]
    (agent_row,) = [r for r in rows if r[0].startswith("127.")]
    (floor_row,) = [r for r in rows if r[0] == "floor"]
    return {"agi": float(agent_row[3].replace(",", "")), "agi_p99": float(agent_row[5]),
            "agi_floor": float(floor_row[3].replace(",", "")), "agi_floor_p99": float(floor_row[5])}


def ms(text: str) -> float:
    number = float(re.sub(r"[a-z]+$", "", text))
    return number / 1000 if text.endswith("us") else number * 1000 if text.endswith("s") \
        and not text.endswith("ms") else number


def crm(tree: Path, loop: str, store: str, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/http_bench.py"), "--store", store, "--connections",
         "10", "--seconds", str(int(seconds)), *(["--uvloop"] if loop == "uvloop" else [])],
        capture_output=True, text=True, env=env_for(tree), check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("floor", "agent"))}
    return {"crm": float(rows["agent"][2]), "crm_p99": ms(rows["agent"][4]),
            "crm_floor": float(rows["floor"][2]), "crm_floor_p99": ms(rows["floor"][4])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default=".", help="comma-separated tree directories")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'var/bench/store.db'}")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    callers = callers_file(args.contacts, 2000)
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    print("run  tree                 loop     agi/s  ×floor  p99 ms  ×floor   crm/s  ×floor  "
          "p99 ms  ×floor", flush=True)
    for run in range(1, args.runs + 1):
        for tree in trees if run % 2 else trees[::-1]:  # alternate which copy goes first
            for loop in args.loops.split(","):
                r = {**fastagi(tree, loop, args.store, callers, args.seconds),
                     **crm(tree, loop, args.store, args.seconds)}
                print(f"{run:<4} {str(tree)[-20:]:<20} {loop:<8}"
                      f"{r['agi']:>6.0f} {r['agi'] / r['agi_floor']:>6.2f}  "
                      f"{r['agi_p99']:>6.2f} {r['agi_p99'] / r['agi_floor_p99']:>6.2f}  "
                      f"{r['crm']:>6.0f} {r['crm'] / r['crm_floor']:>6.2f}  "
                      f"{r['crm_p99']:>6.2f} {r['crm_p99'] / r['crm_floor_p99']:>6.2f}",
                      flush=True)
                time.sleep(1)


if __name__ == "__main__":
    main()
