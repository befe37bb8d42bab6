"""Journal benchmark: calls/s from acceptance to applied CRM operations (embedded SQLite).

    python bench/journal_bench.py [--calls 5000] [--known 1000] [--batch 20]
                                  [--url sqlite:///var/bench/journal.db]

`--known` callers are seeded first (contact, organization, open lead owned by 201). The
calls then mix new callers (answered or missed), known callers (answered by the responsible
manager, by another one, or missed), repeated callers, outbound calls and withheld numbers,
with the sample `rules/journal.yaml`. Every call is accepted (`calls` row + outbox row, one
transaction each, as `POST /events/call` or the AMI listener does), then the real
`OutboxWorker` drains the outbox: association, plan, apply through `Records`, one
transaction per call. Reports accept and delivery throughput, operations applied per second
and the resulting records.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.core.model import CallRecord, Contact, Lead, Organization, Task
from agent.crm.embedded import EmbeddedCrm
from agent.crm.port import Crm
from agent.crm.records import Records
from agent.journal import JournalSettings, Operation, load_settings
from agent.journal.outbox import OutboxWorker
from agent.journal.recordings import RecordingLinks
from agent.journal.service import JOURNAL_KIND, CallJournal
from agent.store import Store, open_store

RULES = Path(__file__).resolve().parents[1] / "rules" / "journal.yaml"
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def known_number(i: int) -> str:
    return f"+3361{i:07d}"


def new_number(i: int) -> str:
    return f"+3362{i:07d}"


def make_call(i: int, rng: random.Random, known: int) -> CallRecord:
    kind = rng.random()
    started = START + timedelta(seconds=i * 7)
    answered_by: str | None = rng.choice(["201", "202", "204"])
    data: dict[str, Any] = {"call_id": f"b{i}", "did": "+33140000000", "started_at": started,
                            "ended_at": started + timedelta(seconds=95)}
    if kind < 0.35:  # known caller
        data["caller"] = known_number(rng.randrange(known)) if known else new_number(i)
    elif kind < 0.45:  # a new caller calling again
        data["caller"] = new_number(rng.randrange(max(1, i)))
    elif kind < 0.55:  # outbound click-to-call
        data.update(caller=known_number(rng.randrange(known)) if known else new_number(i),
                    direction="outbound", did=None, placed_by=answered_by)
    elif kind < 0.58:  # withheld number
        data.update(caller=None, anonymous=True)
    else:  # new caller
        data["caller"] = new_number(i)
    if rng.random() < 0.3:
        answered_by = None
    if answered_by is not None:
        data.update(answered=True, answered_by=answered_by, outcome="answered",
                    answered_at=started + timedelta(seconds=6),
                    recording=f"/var/spool/asterisk/monitor/in-{i}.wav")
    else:
        data["outcome"] = "no_answer"
    return CallRecord.model_validate(data)


class CountingJournal(CallJournal):
    """Counts the operations of every plan it applies."""

    ops = 0

    async def plan(self, crm: Crm, call: CallRecord, settings: JournalSettings
                   ) -> list[Operation]:
        ops = await super().plan(crm, call, settings)
        self.ops += len(ops)
        return ops


async def seed(records: Records, known: int) -> None:
    for i in range(known):
        org = await records.create(Organization(name=f"Customer {i}", owner="201"))
        contact = await records.create(Contact(first_name="C", last_name=str(i),
                                               phones=[known_number(i)],
                                               organization_id=org.id, owner="201"))
        await records.create(Lead(title="Open", contact_id=contact.id,
                                  organization_id=org.id, owner="201"))


async def count(crm: Crm, model: type[Any]) -> int:
    total, offset = 0, 0
    while True:
        page = await crm.select(model, limit=1000, offset=offset)
        total += len(page)
        offset += 1000
        if len(page) < 1000:
            return total


async def run(args: argparse.Namespace) -> None:
    store = await open_store(args.url)
    try:
        records = Records(EmbeddedCrm(store.db))
        settings = load_settings(RULES)
        for employee in settings.employees:
            await store.upsert_employee(employee)
        await seed(records, args.known)
        links = RecordingLinks(Path("var/recordings"), b"bench", "http://127.0.0.1:8080",
                               7 * 86400)
        journal = CountingJournal(store, records, lambda: settings, links=links.url)
        worker = OutboxWorker(store, {JOURNAL_KIND: journal}, batch=args.batch)
        rng = random.Random(args.seed)
        calls = [make_call(i, rng, args.known) for i in range(args.calls)]
        started = time.perf_counter()
        for call in calls:
            await journal.accept(call)
        accepted = time.perf_counter()
        delivered = await worker.drain()
        done = time.perf_counter()
        await report(store, records.crm, args, calls, delivered, journal.ops,
                     (started, accepted, done))
    finally:
        await store.close()


async def report(store: Store, crm: Crm, args: argparse.Namespace, calls: list[CallRecord],
                 delivered: int, ops: int, times: tuple[float, float, float]) -> None:
    started, accepted, done = times
    deliver_s, total_s = done - accepted, done - started
    print(f"calls: {len(calls)} ({args.known} known callers seeded), delivered {delivered}, "
          f"outbox {await store.outbox_stats()}")
    print(f"accept:  {len(calls) / (accepted - started):8.0f} calls/s "
          f"({accepted - started:.2f} s)")
    print(f"deliver: {delivered / deliver_s:8.0f} calls/s, {ops / deliver_s:8.0f} ops/s "
          f"({ops} operations, {deliver_s:.2f} s)")
    print(f"end to end (accept + deliver): {len(calls) / total_s:8.0f} calls/s")
    totals = [f"{m.__name__.lower()}s {await count(crm, m)}"
              for m in (Contact, Organization, Lead, Task)]
    print("records: " + ", ".join(totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--known", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default="sqlite:///var/bench/journal.db")
    args = parser.parse_args()
    if args.url.startswith("sqlite:///"):  # start from an empty store
        path = Path(args.url[len("sqlite:///"):])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
