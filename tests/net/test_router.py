"""The routing use case with a CRM that answers, fails or hangs (no sockets needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.core.model import CallerRecords, Contact, Lead
from agent.core.rules import parse_rules
from agent.routing.decisions import DecisionLog
from agent.routing.service import UNKNOWN, Breaker, LookupCache, Router, RouteResult
from agent.routing.wire import flush_decisions
from agent.store import Store, open_store

RULES = parse_rules("""
default: {destination: "queue:general"}
rules:
  - {name: gold, field: contact.status, op: eq, value: OR, destination: "queue:vip"}
  - name: own manager
    when: {field: owner.extension, op: exists}
    destination: "extension:{owner.extension}"
  - {name: spam, field: caller.blocked, op: eq, value: true, destination: hangup}
  - {name: anonymous, field: caller.anonymous, op: eq, value: true, destination: "ivr:anon"}
""")
AT = datetime(2026, 12, 1, 10, tzinfo=UTC)


class Directory:
    def __init__(self) -> None:
        self.records: dict[str, CallerRecords] = {}
        self.calls = 0
        self.fail = False
        self.hang: asyncio.Event | None = None

    async def find_caller(self, e164: str) -> CallerRecords:
        self.calls += 1
        if self.hang is not None:
            await self.hang.wait()
        if self.fail:
            raise ConnectionError("CRM down")
        return self.records.get(e164, CallerRecords())

    async def last_agent(self, e164: str) -> str | None:
        return None


async def routed(router: Router, caller: str) -> RouteResult:
    """What `caller` is routed to, awaited when the router has to ask the CRM."""
    result = router.route(router.request(caller, at=AT))
    return result if isinstance(result, RouteResult) else await result


def make_router(directory: Directory, *, budget_s: float = 0.05, ttl: float = 60,
                failures: int = 3) -> Router:
    return Router(directory, lambda: RULES, region="FR", budget_s=budget_s,
                  cache=LookupCache(100, ttl, 10, 3600),
                  breaker=Breaker(failures, 30, time.monotonic), decisions=DecisionLog(10),
                  is_blocked=lambda n: n == "+33699999999")


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.records["+33612345678"] = CallerRecords(
        contacts=[Contact(id=7, first_name="Jean", last_name="Dupont",
                          phones=["+33612345678"], fields={"status": "OR"}, score=30)])
    d.records["+33611111111"] = CallerRecords(
        contacts=[Contact(id=8, first_name="Marie", phones=["+33611111111"])],
        leads=[Lead(id=3, contact_id=8, owner="202")])
    return d


async def test_known_caller_in_any_format_matches_rules(directory: Directory) -> None:
    router = make_router(directory)
    for form in ("0612345678", "+33 6 12 34 56 78", "0033612345678"):
        result = await routed(router, form)
        assert str(result.decision.destination) == "queue:vip"
        assert result.view.contact_name == "Jean Dupont" and result.view.score == 30
    assert directory.calls == 1  # cached per E.164
    owner = await routed(router, "0611111111")
    assert str(owner.decision.destination) == "extension:202"
    assert owner.view.owner == "202"


async def test_anonymous_and_blocked_callers_are_routed_without_lookup(
        directory: Directory) -> None:
    router = make_router(directory)
    anonymous = await routed(router, "anonymous")
    assert anonymous.anonymous and str(anonymous.decision.destination) == "ivr:anon"
    blocked = await routed(router, "06 99 99 99 99")
    assert blocked.decision.rule == "spam"
    assert directory.calls == 1


async def test_hanging_crm_gives_default_within_budget(directory: Directory) -> None:
    directory.hang = asyncio.Event()
    router = make_router(directory, budget_s=0.05)
    started = time.monotonic()
    result = await routed(router, "0612345678")
    assert time.monotonic() - started < 0.2
    assert result.error == "crm-timeout" and result.decision.rule == "default"
    # a second call for the same number shares the pending lookup instead of piling up
    await routed(router, "0612345678")
    assert directory.calls == 1
    # timeouts count as failures: after 3 the breaker stops waiting for the CRM at all
    await routed(router, "0611111111")
    assert router.breaker.state == "open"
    started = time.monotonic()
    fast = await routed(router, "0622222222")
    assert fast.error == "crm-unavailable" and time.monotonic() - started < 0.02
    directory.hang.set()
    await asyncio.sleep(0)
    await router.close()


async def test_failing_crm_serves_stale_then_opens_breaker(directory: Directory) -> None:
    router = make_router(directory, ttl=0.001, failures=2)
    first = await routed(router, "0612345678")
    assert first.error is None
    await asyncio.sleep(0.01)  # let the 1 ms TTL expire: the next call must ask the CRM
    directory.fail = True
    stale = await routed(router, "0612345678")
    assert stale.error == "crm-error (stale)" and stale.decision.rule == "gold"
    unknown = await routed(router, "0611111111")
    assert unknown.error == "crm-error" and unknown.decision.rule == "default"
    calls = directory.calls
    assert router.breaker.state == "open"
    fast = await routed(router, "0622222222")
    assert fast.error == "crm-unavailable" and directory.calls == calls


async def test_invalidation_forgets_a_caller(directory: Directory) -> None:
    router = make_router(directory)
    await routed(router, "0612345678")
    directory.records["+33612345678"].contacts[0].fields["status"] = "SILVER"
    router.invalidate("+33612345678")
    result = await routed(router, "0612345678")
    assert result.decision.rule == "default"


async def test_decision_log_is_bounded_and_masked(directory: Directory) -> None:
    router = make_router(directory)
    for _ in range(15):
        await routed(router, "0612345678")
    assert len(router.decisions.latest(100)) == 10
    entry = router.decisions.latest(1)[0]
    assert entry["rule"] == "gold" and "12345" not in entry["caller"]
    assert entry["trace"][0] == ("gold", True, entry["trace"][0][2])


class SlowStore:
    """A real SQLite store whose decision-log writes take a while, during which calls keep
    being routed; records the size of each write."""

    def __init__(self, store: Store, router: Router) -> None:
        self.store, self.router, self.writes = store, router, list[int]()
        self.written = asyncio.Event()

    async def log_decisions(self, rows: Sequence[Sequence[Any]],
                            rulesets: Mapping[str, Sequence[str]], *, keep: int) -> None:
        self.writes.append(len(rows))
        if len(self.writes) == 1:
            for _ in range(3):  # decided while the first tick is written
                await routed(self.router, "0612345678")
        await self.store.log_decisions(rows, rulesets, keep=keep)
        self.written.set()


async def test_decision_log_is_written_once_a_tick_and_drained_at_stop(
        directory: Directory, tmp_path: Path) -> None:
    router = make_router(directory)
    router.decisions = DecisionLog(100)
    store = await open_store(f"sqlite:///{tmp_path / 'store.db'}")
    slow, stop = SlowStore(store, router), asyncio.Event()
    try:
        for _ in range(5):
            await routed(router, "0612345678")
        flush = asyncio.create_task(flush_decisions(
            slow, router.decisions, keep=100, stop=stop, interval_s=0.5))  # type: ignore[arg-type]
        await slow.written.wait()
        await asyncio.sleep(0.1)
        # what was decided during a write waits for the next tick, not written right after
        assert slow.writes == [5]
        slow.written.clear()
        await slow.written.wait()
        assert slow.writes == [5, 3]
        for _ in range(2):
            await routed(router, "0612345678")
        stop.set()
        await flush
        assert router.decisions.take() == []  # what was left is written at stop
        stored = await store.recent_decisions(limit=100)
        assert len(stored) == sum(slow.writes) == 10
    finally:
        await store.close()


async def test_the_caller_is_read_without_deciding(directory: Directory) -> None:
    router = make_router(directory)
    caller = router.request("+33 6 12 34 56 78").caller
    assert caller == "+33612345678"
    pending = router.look_up(caller)
    assert not isinstance(pending, tuple)  # not cached: the CRM is asked
    view, error = await pending
    assert (view.ctx["contact.status"], error) == ("OR", None)
    assert router.look_up(router.request("06 12 34 56 78").caller) == (view, None)
    assert directory.calls == 1
    ctx = router.context(router.request("0612345678", dtmf="3"), view)
    assert (ctx["contact.status"], ctx["caller.number"], ctx["call.dtmf"]) == (
        "OR", "+33612345678", "3")
    assert router.look_up(router.request("anonymous").caller) == (UNKNOWN, None)
    assert router.decisions.latest(10) == []


async def test_a_cached_or_anonymous_caller_is_routed_without_awaiting(
        directory: Directory) -> None:
    router = make_router(directory)
    first = router.route(router.request("0612345678", at=AT))
    assert not isinstance(first, RouteResult)  # the CRM must be asked
    await first
    cached = router.route(router.request("+33 6 12 34 56 78", at=AT))
    assert isinstance(cached, RouteResult) and cached.decision.rule == "gold"
    anonymous = router.route(router.request("anonymous", at=AT))
    assert isinstance(anonymous, RouteResult) and anonymous.decision.rule == "anonymous"
    assert directory.calls == 1
    assert [d["rule"] for d in router.decisions.latest(10)] == ["anonymous", "gold", "gold"]


async def test_a_dry_run_is_traced_and_not_logged(directory: Directory) -> None:
    router = make_router(directory)
    result = await router.dry_run(router.request("0612345678", at=AT))
    assert [step.rule for step in result.trace] == ["gold"]
    assert result.decision.trace == result.trace  # built during the run, not replayed
    assert router.decisions.latest(10) == []
