"""The routing use case with a CRM that answers, fails or hangs (no sockets needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.decisions import DecisionLog
from agent.model import CallerRecords, Contact, Lead
from agent.routing import UNKNOWN, Breaker, LookupCache, Router, RouteRequest
from agent.rules import parse_rules
from agent.store import Store, open_store
from agent.wiring.routing import flush_decisions

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
        result = await router.route(RouteRequest(caller=form, at=AT))
        assert str(result.decision.destination) == "queue:vip"
        assert result.view.contact_name == "Jean Dupont" and result.view.score == 30
    assert directory.calls == 1  # cached per E.164
    owner = await router.route(RouteRequest(caller="0611111111", at=AT))
    assert str(owner.decision.destination) == "extension:202"
    assert owner.view.owner == "202"


async def test_anonymous_and_blocked_callers_are_routed_without_lookup(
        directory: Directory) -> None:
    router = make_router(directory)
    anonymous = await router.route(RouteRequest(caller="anonymous", at=AT))
    assert anonymous.anonymous and str(anonymous.decision.destination) == "ivr:anon"
    blocked = await router.route(RouteRequest(caller="06 99 99 99 99", at=AT))
    assert blocked.decision.rule == "spam"
    assert directory.calls == 1


async def test_hanging_crm_gives_default_within_budget(directory: Directory) -> None:
    directory.hang = asyncio.Event()
    router = make_router(directory, budget_s=0.05)
    started = time.monotonic()
    result = await router.route(RouteRequest(caller="0612345678", at=AT))
    assert time.monotonic() - started < 0.2
    assert result.error == "crm-timeout" and result.decision.rule == "default"
    # a second call for the same number shares the pending lookup instead of piling up
    await router.route(RouteRequest(caller="0612345678", at=AT))
    assert directory.calls == 1
    # timeouts count as failures: after 3 the breaker stops waiting for the CRM at all
    await router.route(RouteRequest(caller="0611111111", at=AT))
    assert router.breaker.state == "open"
    started = time.monotonic()
    fast = await router.route(RouteRequest(caller="0622222222", at=AT))
    assert fast.error == "crm-unavailable" and time.monotonic() - started < 0.02
    directory.hang.set()
    await asyncio.sleep(0)
    await router.close()


async def test_failing_crm_serves_stale_then_opens_breaker(directory: Directory) -> None:
    router = make_router(directory, ttl=0.001, failures=2)
    first = await router.route(RouteRequest(caller="0612345678", at=AT))
    assert first.error is None
    await asyncio.sleep(0.01)  # let the 1 ms TTL expire: the next call must ask the CRM
    directory.fail = True
    stale = await router.route(RouteRequest(caller="0612345678", at=AT))
    assert stale.error == "crm-error (stale)" and stale.decision.rule == "gold"
    unknown = await router.route(RouteRequest(caller="0611111111", at=AT))
    assert unknown.error == "crm-error" and unknown.decision.rule == "default"
    calls = directory.calls
    assert router.breaker.state == "open"
    fast = await router.route(RouteRequest(caller="0622222222", at=AT))
    assert fast.error == "crm-unavailable" and directory.calls == calls


async def test_invalidation_forgets_a_caller(directory: Directory) -> None:
    router = make_router(directory)
    await router.route(RouteRequest(caller="0612345678", at=AT))
    directory.records["+33612345678"].contacts[0].fields["status"] = "SILVER"
    router.invalidate("+33612345678")
    result = await router.route(RouteRequest(caller="0612345678", at=AT))
    assert result.decision.rule == "default"


async def test_decision_log_is_bounded_and_masked(directory: Directory) -> None:
    router = make_router(directory)
    for _ in range(15):
        await router.route(RouteRequest(caller="0612345678", at=AT))
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
                await self.router.route(RouteRequest(caller="0612345678", at=AT))
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
            await router.route(RouteRequest(caller="0612345678", at=AT))
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
            await router.route(RouteRequest(caller="0612345678", at=AT))
        stop.set()
        await flush
        assert router.decisions.take() == []  # what was left is written at stop
        stored = await store.recent_decisions(limit=100)
        assert len(stored) == sum(slow.writes) == 10
    finally:
        await store.close()


async def test_the_caller_is_read_without_deciding(directory: Directory) -> None:
    router = make_router(directory)
    assert router.caller_cached("+33 6 12 34 56 78") is None  # not cached: ask the CRM
    caller, view = await router.caller("+33 6 12 34 56 78")
    assert (caller, view.ctx["contact.status"]) == ("+33612345678", "OR")
    assert router.caller_cached("06 12 34 56 78") == (caller, view) and directory.calls == 1
    ctx = router.context(RouteRequest(caller="0612345678", dtmf="3"), caller, view)
    assert (ctx["contact.status"], ctx["caller.number"], ctx["call.dtmf"]) == (
        "OR", "+33612345678", "3")
    assert router.caller_cached("anonymous") == (None, UNKNOWN)  # nothing to look up
    assert router.decisions.latest(10) == []


async def test_route_cached_answers_without_awaiting_only_when_no_lookup_is_needed(
        directory: Directory) -> None:
    router = make_router(directory)
    assert router.route_cached(RouteRequest(caller="0612345678", at=AT)) is None
    await router.route(RouteRequest(caller="0612345678", at=AT))
    cached = router.route_cached(RouteRequest(caller="+33 6 12 34 56 78", at=AT))
    assert cached is not None and cached.decision.rule == "gold"
    anonymous = router.route_cached(RouteRequest(caller="anonymous", at=AT))
    assert anonymous is not None and anonymous.decision.rule == "anonymous"
    assert directory.calls == 1
    assert [d["rule"] for d in router.decisions.latest(10)] == ["anonymous", "gold", "gold"]
