"""What one FastAGI call costs in process, without sockets: the CPU the agent adds per call,
measured apart from the kernel's share (accept, read, write, close), which dominates under
load and varies with the machine.

    python bench/session_bench.py [--callers 2000] [--rounds 7]

Each session is driven through a fake transport exactly as the event loop would drive it:
accept -> env block (the real Asterisk 22 capture, callers in mixed formats) -> MSet written
-> `200 result=0` -> close. Every caller is in the lookup cache (a warm agent), so the `route`
script answers at once; the 18 sample rules decide (none matches these callers: every rule is
tried and the default answers). Rows, in µs per call (min of the rounds, GC enabled):

- `floor`: the bench's floor session (finds the blank line, writes a pre-encoded MSet);
- `AgiServer, trivial script`: the agent's FastAGI session (parse, MSet encoding, deadlines)
  with a script returning constant variables;
- `agent route`: the agent's own `route` script on a real agent (SQLite store in a temporary
  directory, 2,000 contacts);
- `Router.route, cached` and `RuleSet.decide`: the routing part alone, and the rules alone;
- `decision log, persisted`: `Store.log_decisions` of 1,000 decisions, per decision.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agi_bench import REPLY, ROUTE, FloorSession, make_callers, make_envs

from agent.app import Agent
from agent.config import load
from agent.core.model import Contact
from agent.pbx.agi import AgiRequest, AgiServer, encode_mset
from agent.pbx.agi.session import AgiSession
from agent.routing.service import RouteResult

ROOT = Path(__file__).resolve().parents[1]


class FakeTransport:
    """What a session needs of a transport; `close` ends the connection at once."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def close(self) -> None:
        self.protocol.connection_lost(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def per_call(run: Callable[[], int], rounds: int) -> float:
    """Min over `rounds` of the µs per call of `run` (which returns how many calls it made)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        calls = run()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def sessions(make: Callable[[], Any], envs: Sequence[bytes]) -> Callable[[], int]:
    transport = FakeTransport()

    def run() -> int:
        for env in envs:
            session = make()
            transport.protocol = session
            session.connection_made(transport)
            session.data_received(env)
            session.data_received(REPLY)
        return len(envs)

    return run


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    callers = make_callers(args.callers)
    envs = make_envs(callers)
    results: dict[str, float] = {}
    command = encode_mset(ROUTE)
    results["floor"] = per_call(sessions(lambda: FloorSession(command), envs), args.rounds)

    def trivial(request: AgiRequest) -> dict[str, str]:
        return ROUTE

    builtin = AgiServer({"route": trivial}, port=0)
    await builtin.start()
    results["AgiServer, trivial script"] = per_call(
        sessions(lambda: AgiSession(builtin, loop), envs), args.rounds)
    await builtin.stop()

    with tempfile.TemporaryDirectory() as tmp:
        config = load(None, environ={
            "CRM_AGENT_STORE_URL": f"sqlite:///{tmp}/store.db", "CRM_AGENT_TOKEN": "bench",
            "CRM_AGENT_HTTP__PORT": "0", "CRM_AGENT_AGI__PORT": "0",
            "CRM_AGENT_RULES__DIR": str(ROOT / "rules"), "CRM_AGENT_LOG_LEVEL": "WARNING",
            "CRM_AGENT_RULES__WATCH": "false", "CRM_AGENT_HTTP__TOKEN_FILE": "/dev/null",
            "CRM_AGENT_ROUTING__CACHE_TTL_S": "3600",
            "CRM_AGENT_ROUTING__NEGATIVE_TTL_S": "3600"})  # unknown callers stay cached too
        agent = Agent(config)
        await agent.start()
        try:
            assert agent.store is not None and agent.crm is not None and agent.agi is not None
            for index, caller in enumerate(callers):
                await agent.crm.create(Contact(first_name=f"Caller {index}", phones=[caller]))
            router, server = agent.router, agent.agi
            assert router is not None
            requests = [router.request(caller, via="agi") for caller in callers]
            for request in requests:  # a warm agent: every caller in the lookup cache
                await router.dry_run(request)
            assert all(isinstance(router.route(r), RouteResult) for r in requests)
            results["agent route"] = per_call(
                sessions(lambda: AgiSession(server, loop), envs), args.rounds)

            def route_cached() -> int:
                for request in requests:
                    router.route(request)
                return len(requests)

            results["Router.route, cached"] = per_call(route_cached, args.rounds)
            rules, now = router.rules(), datetime.now(UTC)
            contexts = [r.ctx for r in map(router.route, requests) if isinstance(r, RouteResult)]

            def decide() -> int:
                for ctx in contexts:
                    rules.evaluate(ctx, now=now, trace=False)
                return len(contexts)

            results["RuleSet.decide"] = per_call(decide, args.rounds)
            batch = router.decisions.take()[0]
            store = agent.store
            best = float("inf")
            for _ in range(args.rounds):
                start = time.perf_counter()
                await store.log_decisions(batch.rows, batch.rulesets, keep=10_000)
                best = min(best, (time.perf_counter() - start) / len(batch.rows) * 1e6)
            results["decision log, persisted"] = best
        finally:
            await agent.stop()
    gc.collect()
    width = max(map(len, results))
    print(f"{'µs per call':<{width}}  (min of {args.rounds} rounds, {args.callers} callers)")
    for name, value in results.items():
        print(f"{name:<{width}}  {value:6.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
