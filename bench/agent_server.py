"""The real agent for benchmarks: `crm-agent serve` on a given store, optionally with a CRM
that never answers (`--hang`), pinned to one core.

    python bench/agent_server.py --store sqlite:///var/bench/store.db --http 18080 --agi 14573 \
        [--cpu 0] [--hang [--no-breaker]] [--uvloop] [--gc-stats]

Prints `READY` on stdout once both listeners are up; stops on SIGTERM. `--gc-stats` prints,
at stop, the garbage collector's pauses per generation (count, total ms, longest ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from agent.app import Agent
from agent.config import Config, load
from agent.core.model import CallerRecords

ROOT = Path(__file__).resolve().parents[1]


class HangingCrm:
    """A CRM that accepts every request and never answers."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def find_caller(self, e164: str) -> CallerRecords:
        await self.never.wait()
        return CallerRecords()

    async def last_agent(self, e164: str) -> str | None:
        await self.never.wait()
        return None


class GcPauses:
    """Collections and pause times of the garbage collector, per generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self.observe)

    def observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def report(self) -> str:
        return "gc " + "  ".join(
            f"gen{gen}: {len(p)} x, {sum(p) * 1000:.1f} ms, max {max(p, default=0) * 1000:.2f} ms"
            for gen, p in self.pauses.items())


async def main(args: argparse.Namespace) -> None:
    # the agent may be an older copy (bench/versus.py): rules.* was routing.* before #13
    rules_dir, watch = (("CRM_AGENT_RULES__DIR", "CRM_AGENT_RULES__WATCH")
                        if "rules" in Config.model_fields
                        else ("CRM_AGENT_ROUTING__RULES_DIR", "CRM_AGENT_ROUTING__WATCH"))
    config = load(None, environ={
        "CRM_AGENT_STORE_URL": args.store, "CRM_AGENT_TOKEN": "bench",
        "CRM_AGENT_HTTP__PORT": str(args.http), "CRM_AGENT_AGI__PORT": str(args.agi),
        rules_dir: str(ROOT / "rules"), watch: "false", "CRM_AGENT_LOG_LEVEL": "WARNING",
        "CRM_AGENT_HTTP__TOKEN_FILE": "/dev/null",
        # --hang --no-breaker: every call waits for the hanging CRM until its budget
        "CRM_AGENT_ROUTING__BREAKER_FAILURES": "1000000000" if args.no_breaker else "5",
        **dict(setting.split("=", 1) for setting in args.set),
    })
    agent = Agent(config)
    await agent.start()
    if args.hang:
        assert agent.router is not None
        agent.router.directory = HangingCrm()
    pauses = GcPauses() if args.gc_stats else None
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    if pauses:
        print(pauses.report(), file=sys.stderr, flush=True)
    await agent.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--http", type=int, default=18080)
    parser.add_argument("--agi", type=int, default=14573)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--gc-stats", action="store_true", help="report GC pauses at stop")
    parser.add_argument("--set", action="append", default=[], metavar="CRM_AGENT_X=VALUE",
                        help="one more setting, e.g. CRM_AGENT_ROUTING__NEGATIVE_TTL_S=3600")
    parser.add_argument("--no-breaker", action="store_true",
                        help="never open the circuit breaker (with --hang: worst case)")
    options = parser.parse_args()
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    if options.uvloop:
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
    sys.exit(0)
