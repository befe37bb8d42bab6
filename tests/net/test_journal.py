"""The call journal end to end on a real store: accept -> outbox -> worker -> CRM records.

Every row of the §7.3 matrix and each of its switches, duplicates and late updates,
retries, dead rows, racing claimers (SQLite and PostgreSQL), and the recorded Asterisk
calls of tests/fixtures/ami.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.core.model import CallRecord, Contact, Deal, Lead, Organization, Task
from agent.core.rules import load_rules
from agent.crm.embedded import EmbeddedCrm
from agent.crm.records import Records
from agent.journal import JournalSettings, load_settings, settings_file
from agent.journal.calltrack import CallTracker, event_time
from agent.journal.outbox import OutboxWorker, backoff_s
from agent.journal.recordings import RecordingLinks, recording_id
from agent.journal.service import JOURNAL_KIND, Acceptance, CallJournal, merge_calls
from agent.ops.metrics import Metrics
from agent.store import Store, open_store
from tests.amitrace import parse
from tests.conftest import FIXTURES

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"
ROUTING_LISTS = load_rules(REPO_RULES).lists  # `spam` (spam.txt) and `vip`
CALLER = "+33612345678"
BLOCKED = "+33699887766"  # on the sample blocklist
SPAM = "+33899123456"  # on the sample routing list `spam` (+33899*), hung up by rule "spam"
START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=2)
BASE_URL = "https://agent.test"
SECRET = b"k" * 32


@dataclass
class Harness:
    store: Store
    crm: EmbeddedCrm
    records: Records
    links: RecordingLinks
    journal: CallJournal
    worker: OutboxWorker
    settings: JournalSettings
    metrics: Metrics

    async def run(self, *calls: CallRecord) -> list[Acceptance]:
        results = [await self.journal.accept(call) for call in calls]
        await self.worker.drain()
        return results

    async def all(self, model: type[Any]) -> list[Any]:
        return list(await self.crm.select(model, limit=10_000))


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    stores: list[Store] = []

    async def factory(url: str | None = None, **worker: Any) -> Harness:
        store = await open_store(url or f"sqlite:///{tmp_path / 'journal.db'}")
        stores.append(store)
        crm = EmbeddedCrm(store.db)
        records = Records(crm)
        links = RecordingLinks(tmp_path / "recordings", SECRET, BASE_URL, 7 * 86400)
        metrics = Metrics()
        settings = load_settings(REPO_RULES / "journal.yaml")
        for employee in settings.employees:
            await store.upsert_employee(employee)
        harness: Harness
        journal = CallJournal(store, records, lambda: harness.settings, links=links.url,
                              lists=lambda: ROUTING_LISTS, metrics=metrics)
        options = {"backoff_base_s": 1e-6, "backoff_max_s": 1e-6, **worker}
        outbox = OutboxWorker(store, {JOURNAL_KIND: journal}, metrics=metrics,
                              rng=random.Random(7), **options)
        journal.on_queued = outbox.wake
        harness = Harness(store, crm, records, links, journal, outbox, settings, metrics)
        return harness

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


@pytest.fixture
async def any_harness(make_harness: HarnessFactory, store_url: str) -> Harness:
    """The same harness on SQLite and on PostgreSQL (skipped without CRM_AGENT_TEST_PG)."""
    return await make_harness(store_url)


def call(answered_by: str | None = "201", *, call_id: str = "c1", caller: str | None = CALLER,
         direction: str = "inbound", **extra: Any) -> CallRecord:
    answered = answered_by is not None
    data: dict[str, Any] = {
        "call_id": call_id, "direction": direction, "caller": caller, "did": "+33140000000",
        "did_raw": "0140000000", "anonymous": caller is None, "answered": answered,
        "answered_by": answered_by, "started_at": START, "ended_at": END,
        "answered_at": START + timedelta(seconds=8) if answered else None,
        "outcome": "answered" if answered else "no_answer",
        "recording": f"/var/spool/asterisk/monitor/in-{call_id}.wav" if answered else None}
    if direction == "outbound":
        data.update(did=None, did_raw=None, placed_by=extra.pop("placed_by", answered_by or "201"))
    return CallRecord.model_validate({**data, **extra})


# -- seeds: what the CRM knows before the call ----------------------------------------------

@dataclass
class Seed:
    ids: dict[str, set[int]] = field(default_factory=lambda: {
        "contact": set(), "lead": set(), "organization": set(), "deal": set()})

    async def add(self, h: Harness, kind: str, record: Organization | Contact | Lead | Deal
                  ) -> Any:
        saved = await h.records.create(record)
        assert saved.id is not None
        self.ids[kind].add(saved.id)
        return saved

    def ref(self, kind: str, record_id: int | None) -> str | None:
        if record_id is None:
            return None
        return "seed" if record_id in self.ids[kind] else "new"


async def seed_customer(h: Harness, lead_status: str | None) -> Seed:
    """Jean Dupont (owner 204) at Dupont SA; optionally a lead of 201; an open deal of 202."""
    seed = Seed()
    org = await seed.add(h, "organization", Organization(name="Dupont SA", owner="204"))
    contact = await seed.add(h, "contact", Contact(
        first_name="Jean", last_name="Dupont", phones=[CALLER], organization_id=org.id,
        owner="204"))
    if lead_status is not None:
        lead = await seed.add(h, "lead", Lead(title="Old", contact_id=contact.id,
                                              organization_id=org.id, owner="201",
                                              status=lead_status))  # type: ignore[arg-type]
    if lead_status == "converted":
        await seed.add(h, "deal", Deal(title="Deal", organization_id=org.id,
                                       contact_id=contact.id, lead_id=lead.id, owner="202",
                                       created_at=START - timedelta(days=10)))
    return seed


SEEDS: dict[str, Callable[[Harness], Awaitable[Seed]]] = {
    "nothing": lambda h: asyncio.sleep(0, Seed()),
    "open lead": lambda h: seed_customer(h, "open"),
    "converted": lambda h: seed_customer(h, "converted"),
}


async def outcome(h: Harness, seed: Seed, record: CallRecord) -> dict[str, Any]:
    """What a manager sees in the CRM after the call, with seeded records marked `seed`."""
    leads = await h.all(Lead)
    tasks = await h.all(Task)
    saved = await h.store.list_calls(limit=1000)
    row = next(c for c in saved if c["call_id"] == record.call_id)
    return {
        "contacts": len(await h.all(Contact)),
        "organizations": len(await h.all(Organization)),
        "leads": [(lead.owner, lead.status, seed.ref("lead", lead.id)) for lead in leads],
        "tasks": [(t.assignee, t.status, seed.ref("lead", t.lead_id),
                   "deal" if t.deal_id else "") for t in tasks],
        "call": (seed.ref("contact", row["contact_id"]), seed.ref("lead", row["lead_id"])),
    }


@dataclass(frozen=True)
class Row:
    name: str
    seed: str
    call: CallRecord
    expect: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)


Links = tuple[str | None, str | None]


def expect(contacts: int = 0, organizations: int = 0, leads: Sequence[tuple[Any, ...]] = (),
           tasks: Sequence[tuple[Any, ...]] = (), call_links: Links = (None, None)
           ) -> dict[str, Any]:
    return {"contacts": contacts, "organizations": organizations, "leads": list(leads),
            "tasks": list(tasks), "call": call_links}


def customer(leads: Sequence[tuple[Any, ...]], tasks: Sequence[tuple[Any, ...]] = (),
             call_links: Links = (None, None)) -> dict[str, Any]:
    """Outcome when the seeded customer (one contact, one organization) is all there is."""
    return expect(1, 1, leads, tasks, call_links)


OPEN_LEAD = (("201", "open", "seed"),)
CONVERTED = (("201", "converted", "seed"),)
ON_SEED = ("seed", "seed")
MATRIX = [
    Row("inbound, new caller, answered by employee E", "nothing", call("201"),
        expect(1, 1, [("201", "open", "new")], [], ("new", "new"))),
    Row("inbound, new caller, missed", "nothing", call(None),
        expect(1, 1, [("203", "open", "new")], [("203", "open", "new", "")], ("new", "new"))),
    Row("inbound, new caller, answered by an extension that is no employee", "nothing",
        call("299"),
        expect(1, 1, [("205", "open", "new")], [("205", "open", "new", "")], ("new", "new"))),
    Row("inbound, caller has an open lead (answered by the responsible manager)", "open lead",
        call("201"), customer(leads=OPEN_LEAD, tasks=[("201", "done", "seed", "")],
                              call_links=ON_SEED)),
    Row("inbound, open lead, answered by another manager", "open lead", call("202"),
        customer(leads=OPEN_LEAD, call_links=ON_SEED,
                 tasks=[("202", "done", "seed", ""), ("201", "open", "seed", "")])),
    Row("inbound, known caller, missed", "open lead", call(None),
        customer(leads=OPEN_LEAD, tasks=[("203", "open", "seed", "")],
                 call_links=ON_SEED)),
    Row("inbound, known caller, answered by an extension that is no employee", "open lead",
        call("299"), customer(leads=OPEN_LEAD, tasks=[("205", "open", "seed", "")],
                              call_links=ON_SEED)),
    Row("inbound, lead converted to a deal: a new lead, nothing on the deal", "converted",
        call("201"),
        customer(leads=[*CONVERTED, ("202", "open", "new")], call_links=("seed", "new"),
                 tasks=[("201", "done", "new", ""), ("202", "open", "new", "")])),
    Row("inbound, lead converted, on_converted: log_on_deal", "converted", call("202"),
        customer(leads=CONVERTED, call_links=("seed", None),
                 tasks=[("202", "done", None, "deal"), ("202", "done", None, "deal")]),
        {"on_converted": "log_on_deal"}),
    Row("inbound, lead converted, missed", "converted", call(None),
        customer(leads=[*CONVERTED, ("202", "open", "new")], call_links=("seed", "new"),
                 tasks=[("203", "open", "new", "")])),
    Row("outbound answered, open lead, by the responsible manager", "open lead",
        call("201", direction="outbound"),
        customer(leads=OPEN_LEAD, tasks=[("201", "done", "seed", "")],
                 call_links=ON_SEED)),
    Row("outbound answered, open lead, by another manager", "open lead",
        call("202", direction="outbound"),
        customer(leads=OPEN_LEAD, tasks=[("201", "done", "seed", "")],
                 call_links=ON_SEED)),
    Row("outbound, not answered: logged only", "open lead",
        call(None, direction="outbound", placed_by="201"),
        customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    Row("caller on the blocklist", "nothing", call("201", caller=BLOCKED), expect()),
    Row("known caller on the blocklist, missed", "open lead",
        call(None, caller=BLOCKED, call_id="c2"), customer(leads=OPEN_LEAD)),
    Row("caller on the routing spam list, missed", "nothing", call(None, caller=SPAM),
        expect()),
    Row("anonymous caller, missed", "nothing", call(None, caller=None),
        expect(tasks=[("203", "open", None, "")])),
    Row("anonymous caller, answered", "nothing", call("201", caller=None), expect()),
]


def check_tasks(h: Harness, tasks: list[Task], record: CallRecord) -> None:
    """Due times, the call, and a recording link that really opens the recording."""
    for task in tasks:
        assert task.call_id == record.call_id
        if task.status == "open":
            assert task.due_at == END + timedelta(hours=4), task
        else:
            assert task.due_at == END, task
        if record.recording and task.recording_url is not None:
            rid = recording_id(record.recording)
            assert rid is not None and task.recording_url.startswith(
                f"{BASE_URL}/recordings/{rid}?exp=")
            query = dict(p.split("=", 1) for p in task.recording_url.split("?", 1)[1].split("&"))
            assert h.links.verify(rid, query["exp"], query["sig"])
    if record.answered and tasks:
        assert all(t.recording_url for t in tasks)


@pytest.mark.parametrize("row", MATRIX, ids=[r.name for r in MATRIX])
async def test_matrix_row(harness: Harness, row: Row) -> None:
    harness.settings = harness.settings.model_copy(update=row.settings)
    seed = await SEEDS[row.seed](harness)
    assert await harness.run(row.call) == [Acceptance.QUEUED]
    assert await outcome(harness, seed, row.call) == row.expect
    check_tasks(harness, await harness.all(Task), row.call)
    assert await harness.store.outbox_stats() == {"done": 1}


def test_every_row_of_the_spec_matrix_is_covered() -> None:
    spec_rows = ["new caller, answered by employee E", "new caller, missed",
                 "extension that is no employee", "caller has an open lead",
                 "converted to a deal", "known caller, missed",
                 "answered by the responsible manager", "answered by another manager",
                 "outbound answered, open lead, by the responsible manager",
                 "outbound answered, open lead, by another manager", "blocklist"]
    for spec_row in spec_rows:
        assert any(spec_row in row.name for row in MATRIX), spec_row


async def test_new_caller_records_carry_utm_tags_and_are_linked(harness: Harness) -> None:
    await harness.run(call("201"))
    (lead,), (contact,), (org,) = [await harness.all(m) for m in (Lead, Contact, Organization)]
    assert (lead.utm_source, lead.utm_medium, lead.utm_campaign) == (
        "website", "organic", "main-number")
    assert (lead.contact_id, lead.organization_id) == (contact.id, org.id)
    assert contact.phones == [CALLER] and contact.organization_id == org.id
    assert contact.owner == org.owner == lead.owner == "201"
    found = await harness.crm.find_caller(CALLER)
    assert [c.id for c in found.contacts] == [contact.id]


SWITCHES = [
    ("new_caller_answered", 0, expect()),
    ("new_caller_missed", 1, expect()),
    ("unknown_extension", 6, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("known_caller_open_lead", 3, customer(leads=OPEN_LEAD,
                                           tasks=[("201", "done", "seed", "")])),
    ("converted_lead", 9, customer(leads=CONVERTED,
                                   tasks=[("203", "open", None, "")])),
    ("known_caller_missed", 5, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("answered_by_responsible", 3, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("answered_by_other", 4, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("outbound_by_responsible", 10, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("outbound_by_other", 11, customer(leads=OPEN_LEAD, call_links=ON_SEED)),
    ("anonymous_missed", 16, expect()),
]


@pytest.mark.parametrize(("switch", "index", "expected"), SWITCHES,
                         ids=[s[0] for s in SWITCHES])
async def test_switch_off(harness: Harness, switch: str, index: int,
                          expected: dict[str, Any]) -> None:
    row = MATRIX[index]
    scenarios = harness.settings.scenarios.model_copy(update={switch: False})
    harness.settings = harness.settings.model_copy(update={**row.settings,
                                                           "scenarios": scenarios})
    seed = await SEEDS[row.seed](harness)
    await harness.run(row.call)
    assert await outcome(harness, seed, row.call) == expected
    assert expected != row.expect, "the switch must change what the row does"


# -- duplicates, late events ----------------------------------------------------------------

async def counts(h: Harness) -> tuple[int, ...]:
    return tuple([len(await h.all(m)) for m in (Contact, Organization, Lead, Task)])


async def test_the_same_call_twice_changes_nothing(any_harness: Harness) -> None:
    h = any_harness
    webhook = call("202", call_id="dup")
    ami = webhook.model_copy(update={"rang": ["201", "202"], "queue": "support"})
    assert await h.run(webhook, ami) == [Acceptance.QUEUED, Acceptance.DUPLICATE]
    first = await counts(h)
    assert first == (1, 1, 1, 0)
    assert await h.run(webhook) == [Acceptance.DUPLICATE]  # replayed after delivery
    assert await counts(h) == first
    assert await h.store.outbox_stats() == {"done": 1}
    stored = await h.store.get_call("dup")
    assert stored is not None and stored.rang == ["201", "202"] and stored.queue == "support"
    (row,) = await h.store.list_calls()
    assert row["lead_id"] == (await h.all(Lead))[0].id


async def test_the_webhook_and_ami_at_once_merge_into_one_call(any_harness: Harness) -> None:
    """Both sources deliver the same calls at the same moment (several agents on one
    PostgreSQL store): each call is queued once and keeps what each source knew."""
    h = any_harness
    pairs = [(call(None, call_id=f"both{i}", utm={"utm_source": "site"}),
              CallRecord(call_id=f"both{i}", rang=["201", "202"], queue="support"))
             for i in range(40)]
    results = await asyncio.gather(*(h.journal.accept(c) for pair in pairs for c in pair))
    for i in range(len(pairs)):
        # the ended call is queued once, whichever came first (a partial first only waits)
        assert results[2 * i: 2 * i + 2].count(Acceptance.QUEUED) == 1
        stored = await h.store.get_call(f"both{i}")
        assert stored is not None
        assert (stored.utm, stored.rang, stored.queue) == (
            {"utm_source": "site", "utm_medium": "organic", "utm_campaign": "main-number"},
            ["201", "202"], "support")  # the call's own utm_source over the DID's tags


async def test_answer_arriving_after_a_partial_event_is_journaled_as_answered(
        harness: Harness) -> None:
    partial = CallRecord(call_id="late", caller=CALLER, did="+33140000000", started_at=START,
                         ended_at=END)
    answered = CallRecord(call_id="late", answered=True, answered_by="201",
                          answered_at=START + timedelta(seconds=5), outcome="answered")
    assert await harness.journal.accept(partial) == Acceptance.QUEUED
    assert await harness.run(answered) == [Acceptance.DUPLICATE]
    (lead,) = await harness.all(Lead)
    assert lead.owner == "201" and await harness.all(Task) == []  # no "missed call" task
    stored = await harness.store.get_call("late")
    assert stored is not None and stored.caller == CALLER and stored.answered_by == "201"


async def test_an_unfinished_call_waits_for_its_end(harness: Harness) -> None:
    ringing = CallRecord(call_id="open", caller=CALLER, started_at=START)
    assert await harness.run(ringing) == [Acceptance.WAITING]
    assert await harness.store.outbox_stats() == {} and await counts(harness) == (0, 0, 0, 0)
    ended = CallRecord(call_id="open", ended_at=END)
    assert await harness.run(ended) == [Acceptance.QUEUED]
    assert await counts(harness) == (1, 1, 1, 1)  # missed: records + senior task


async def test_an_update_after_delivery_only_updates_the_calls_row(harness: Harness) -> None:
    await harness.run(call(None, call_id="after"))
    before = await counts(harness)
    late = CallRecord(call_id="after", answered=True, answered_by="201")
    assert await harness.run(late) == [Acceptance.DUPLICATE]
    assert await counts(harness) == before
    stored = await harness.store.get_call("after")
    assert stored is not None and stored.answered and stored.answered_by == "201"


def test_merge_keeps_what_is_known() -> None:
    first = call("201", call_id="m", rang=["201"], utm={"utm_source": "a"})
    later = CallRecord(call_id="m", answered_by="204", rang=["204"],
                       ended_at=END + timedelta(seconds=30), utm={"utm_medium": "b"})
    merged = merge_calls(first, later)
    assert merged.answered_by == "201" and merged.answered  # the first who answered
    assert merged.rang == ["201", "204"] and merged.caller == CALLER
    assert merged.ended_at == END + timedelta(seconds=30) and merged.started_at == START
    assert merged.utm == {"utm_source": "a", "utm_medium": "b"}
    missed_then_answered = merge_calls(call(None, call_id="m"), later)
    assert missed_then_answered.outcome == "no_answer" and not missed_then_answered.answered


# -- exactly once: racing claimers, crashes inside the transaction, retries -----------------

async def test_a_claimer_whose_lease_expired_does_not_apply_twice(
        any_harness: Harness, make_harness: HarnessFactory, store_url: str) -> None:
    h = any_harness
    await h.journal.accept(call("201", call_id="race"))
    (stale,) = await h.store.claim(1, lease_s=0.0)  # worker A claims, then stalls
    other = await make_harness(store_url)  # worker B: another agent on the same store
    assert await other.worker.drain() == 1
    await h.worker.handle(stale)  # A wakes up and tries anyway
    assert await counts(h) == (1, 1, 1, 0)
    assert await h.store.outbox_stats() == {"done": 1}


async def test_two_workers_share_the_outbox_without_duplicates(
        any_harness: Harness, make_harness: HarnessFactory, store_url: str) -> None:
    h = any_harness
    other = await make_harness(store_url, batch=3)
    h.worker.batch = 3
    for i in range(30):
        await h.journal.accept(call(None, call_id=f"n{i}", caller=f"+336123456{i:02d}"))
    handled = await asyncio.gather(h.worker.drain(), other.worker.drain())
    assert sum(handled) == 30
    assert await counts(h) == (30, 30, 30, 30)
    tasks = await h.all(Task)
    assert sorted(t.call_id or "" for t in tasks) == sorted(f"n{i}" for i in range(30))


async def test_a_failure_applies_nothing_and_the_row_is_retried(harness: Harness) -> None:
    failures = 2

    async def flaky(_tx: Store, _event: str, record: BaseModel, _changed: frozenset[str]
                    ) -> None:
        nonlocal failures
        if isinstance(record, Task) and failures:
            failures -= 1
            raise RuntimeError("CRM hook failed")

    harness.records.hooks.append(flaky)
    await harness.journal.accept(call(None, call_id="flaky"))
    assert await harness.worker.run_once() == 1
    assert await counts(harness) == (0, 0, 0, 0)  # contact, org, lead rolled back too
    assert await harness.store.outbox_stats() == {"pending": 1}
    assert "RuntimeError: CRM hook failed" in (harness.worker.last_error or "")
    await harness.worker.drain()
    await harness.worker.drain()
    assert await counts(harness) == (1, 1, 1, 1)
    assert await harness.store.outbox_stats() == {"done": 1}
    assert harness.metrics.registry.get_sample_value("crm_agent_outbox_failures_total") == 2


async def test_dead_after_max_attempts_and_reported(make_harness: HarnessFactory,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    h = await make_harness(max_attempts=3)

    async def broken(*_args: Any) -> None:
        raise RuntimeError("always")

    h.records.hooks.append(broken)
    await h.journal.accept(call("201", call_id="doomed"))
    for _ in range(5):
        await h.worker.drain()
    assert await h.store.outbox_stats() == {"dead": 1}
    ok, detail = await h.worker.check()
    assert ok and isinstance(detail, dict)
    assert detail["dead"] == 1 and detail["failures"] == 3 and detail["pending"] == 0
    assert "outbox call:doomed is dead after 3 attempts" in caplog.text
    assert await counts(h) == (0, 0, 0, 0)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_s(n, 1.0, 60.0, rng) for n in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        step = min(60.0, 2.0 ** (attempt - 1))
        assert step / 2 <= delay <= step
    assert max(delays) <= 60.0 and len({round(d, 6) for d in delays}) == len(delays)


async def test_the_worker_wakes_on_accept_and_drains_on_stop(make_harness: HarnessFactory
                                                              ) -> None:
    h = await make_harness(poll_s=3600.0)
    await h.worker.start()
    try:
        await h.journal.accept(call("201", call_id="w"))
        for _ in range(500):  # woken at once: long before the one-hour poll
            if await h.store.outbox_stats() == {"done": 1}:
                break
            await asyncio.sleep(0.01)
        assert await h.store.outbox_stats() == {"done": 1}
    finally:
        await h.worker.stop()
    assert not h.worker.running and h.worker.delivered == 1


# -- recorded Asterisk calls ----------------------------------------------------------------

def fixture_calls() -> list[CallRecord]:
    calls = []
    for path in sorted((FIXTURES / "ami").glob("*.expected.json")):
        if int(path.name[:2]) > 12:  # one recording session; 13 on come from tests/pbx
            continue
        for raw in json.loads(path.read_text())["calls"]:
            raw.pop("recording_file_in_trace", None)
            calls.append(CallRecord.model_validate(raw))
    return sorted(calls, key=lambda c: c.started_at or START)


async def test_recorded_asterisk_calls_journal_as_a_manager_expects(harness: Harness) -> None:
    """The twelve traces in the order they happened: two customers come back several
    times, a third leaves a voicemail, a withheld number gets through."""
    calls = fixture_calls()
    assert await harness.run(*calls) == [Acceptance.QUEUED] * len(calls)
    leads = {lead.fields["call_id"]: lead for lead in await harness.all(Lead)}
    assert {k: (v.owner, v.utm_campaign) for k, v in leads.items()} == {
        "1796088499.2": ("201", None),  # 01: new caller, Alice's direct line
        "1796088554.22": ("203", None),  # 05: new caller, missed: the senior manager's
        "1796088963.166": ("203", None),  # 12: missed, went to voicemail
    }
    tasks = [(t.call_id, t.assignee, t.status) for t in await harness.all(Task)]
    assert tasks == [
        ("1796088524.12", "203", "open"),  # 03: Jean again, queue timeout
        ("1796088554.22", "203", "open"),  # 05: call back the new caller
        ("1796088563.26", "203", "open"),  # 06: same caller, busy
        ("1796088566.30", "201", "done"),  # 07: Alice calls Jean back (her lead)
        ("1796088604.38", "201", "done"),  # 09: answered by Alice, then transferred
        ("1796088768.116", "201", "done"),  # 02: queue support, Alice answers
        ("1796088791.128", "203", "open"),  # 04: abandoned in the queue
        ("1796088842.154", "201", "done"),  # 10 A: Alice
        ("1796088844.158", "204", "done"),  # 10 B: Dave answers Alice's customer...
        ("1796088844.158", "201", "open"),  # ... and Alice reviews the call
        ("1796088963.166", "203", "open"),  # 12: voicemail
    ]
    linked = {c["call_id"]: c["lead_id"] for c in await harness.store.list_calls(limit=100)}
    assert linked["1796088852.162"] is None  # 11: anonymous, answered: nothing to link
    assert linked["1796088574.34"] == leads["1796088554.22"].id  # 08: outbound, no answer
    recordings = {t.call_id: t.recording_url or "" for t in await harness.all(Task)}
    assert recordings["1796088566.30"].startswith(
        f"{BASE_URL}/recordings/out-0612345678-1796088566.30.wav?exp=")
    assert recordings["1796088524.12"] == ""  # missed: nothing was recorded


# -- wiring helpers -------------------------------------------------------------------------

async def test_an_ami_call_whose_hangup_was_lost_is_journaled_at_its_last_event(
        harness: Harness) -> None:
    events = parse(FIXTURES.joinpath("ami", "01_inbound_direct_answered.ami.txt").read_bytes())
    talking = events[: next(i for i, e in enumerate(events) if e.get("Event") == "Hangup")]
    tracker = CallTracker(max_idle_s=600.0)
    for event in talking:
        tracker.feed(event, 0.0)
    [lost] = tracker.due(600.0)

    assert await harness.run(lost) == [Acceptance.QUEUED]
    (lead,) = await harness.all(Lead)
    assert lead.owner == "201"
    stored = await harness.store.get_call(lost.call_id)
    assert stored is not None and stored.answered_at is not None
    assert stored.ended_at == event_time(talking[-1], 0.0) > stored.answered_at


async def test_spam_callers_are_journaled_when_blocklist_lists_is_empty(
        harness: Harness) -> None:
    harness.settings = harness.settings.model_copy(update={"blocklist_lists": ()})
    await harness.run(call(None, caller=SPAM))
    assert await counts(harness) == (1, 1, 1, 1)


async def test_a_spam_caller_leaves_a_call_row_and_a_log_line(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.journal")
    await harness.run(call(None, caller=SPAM, call_id="robot"))
    (row,) = await harness.store.list_calls()
    assert row["call_id"] == "robot" and row["lead_id"] is None
    assert "call robot: the caller is on the routing list 'spam'" in caplog.text


@pytest.mark.parametrize(("raw", "named"), [
    ("12345", "an invalid number (12345)"), ("anonymous", "a withheld number")])
async def test_a_number_that_is_not_valid_is_named_not_withheld(
        harness: Harness, raw: str, named: str) -> None:
    presented = call(None, caller=None, caller_raw=raw, anonymous=raw == "anonymous")
    await harness.run(presented)
    (task,) = await harness.all(Task)
    assert task.title == f"Missed call from {named}: call back"
    assert task.description.startswith(f"Inbound call from {named}, on +33140000000")
    stored = await harness.store.get_call("c1")
    assert stored is not None and stored.caller_raw == raw and stored.caller is None


async def test_the_call_row_keeps_the_utm_tags_of_its_did(harness: Harness) -> None:
    """The DID's call-tracking tags (utm_by_did) under the tags the call carries itself."""
    own = call("201", call_id="tagged", utm={"utm_campaign": "spring", "utm_term": "loft"})
    await harness.run(own, call("201", call_id="plain", did="+33140000010"),
                      call("201", call_id="untracked", did="+33140000099"))
    stored = {c: await harness.store.get_call(c) for c in ("tagged", "plain", "untracked")}
    assert {c: r.utm for c, r in stored.items() if r is not None} == {
        "tagged": {"utm_source": "website", "utm_medium": "organic", "utm_campaign": "spring",
                   "utm_term": "loft"},
        "plain": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "sales-search"},
        "untracked": {}}


async def test_journal_yaml_is_reloaded_and_a_bad_save_keeps_the_last_good(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.yaml"
    path.write_text("missed_task_due: 4h\n")
    source = settings_file(path, "FR")
    source.load_now()
    path.write_text("missed_task_due: 30m\nemployees: [{extension: 203, name: C, "
                    "role: senior}]\n")
    assert source.value.missed_task_due == timedelta(hours=4)  # read only when reloaded
    assert await source.reload() and source.value.missed_task_due == timedelta(minutes=30)
    path.write_text("missed_task_due: whenever\n")
    assert not await source.reload()
    assert source.value.missed_task_due == timedelta(minutes=30)
    assert source.error is not None and "journal.yaml:1: missed_task_due" in source.error
    assert source.value.senior() == "203"
    path.unlink()  # removed: back to the defaults
    assert await source.reload() and source.value.senior() is None
    assert source.value.missed_task_due == JournalSettings().missed_task_due
    assert source.error is None
