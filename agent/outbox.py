"""The durable delivery loop (§9): accepted events are stored, then applied exactly once.

Accepting a call (from AMI or `POST /events/call`) is one store transaction: the `calls`
row is inserted or merged with what was known (late events), and a *finished* call (one
with `ended_at`) gets the outbox row `call:<call_id>`. The same call accepted again finds
that row and enqueues nothing; an update arriving before delivery is still taken into
account, because the journal reads the call's latest row, not the snapshot in the outbox.
An update after delivery only updates the `calls` row (the CRM records stay as journaled).

`OutboxWorker` claims due rows (a lease: a claimer that died loses them when it expires;
PostgreSQL claims with `FOR UPDATE SKIP LOCKED`) and runs each row's handler inside ONE
store transaction together with `mark_applied(key)` and `complete(row)`. Either all of it
commits or nothing does, so a crash or `kill -9` at any point leaves the row to be claimed
again and applied from scratch; the `applied` key makes a second claimer that raced past
an expired lease roll back instead of applying twice. Failures are retried with capped
exponential backoff and jitter; after `max_attempts` the row is `dead` (logged, counted
in `/readyz` and the metrics) until an operator requeues it.

A remote CRM cannot join a store transaction. Its handler will persist the plan on the
first attempt (`mark_applied("plan:<key>", ...)`), then apply operation *i* only when
`applied("<key>#i")` is unset and record `mark_applied("<key>#i", created_id)` right after,
resolving `"new"` references from those results, so a retry resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from agent import phones
from agent.association import associate
from agent.journal import (
    CreateContact,
    CreateLead,
    CreateOrganization,
    CreateTask,
    JournalSettings,
    LogCall,
    Operation,
    Ref,
    UpdateLead,
    plan,
)
from agent.model import CallRecord, Contact, Employee, Lead, Organization, Task

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.records import Records
    from agent.store import OutboxItem, Store

log = logging.getLogger("agent.outbox")
JOURNAL_KIND = "journal"


class Handler(Protocol):
    """Applies one outbox row inside the store transaction `tx`; returns a short result."""

    async def __call__(self, tx: Store, item: OutboxItem) -> str: ...


class AlreadyApplied(Exception):
    """Another claimer committed this row first (its lease had expired)."""


# -- accepting calls ------------------------------------------------------------------------

class Acceptance(StrEnum):
    QUEUED = "queued"  # first time this finished call is seen: it will be journaled
    DUPLICATE = "duplicate"  # already queued or journaled: only the calls row was updated
    WAITING = "waiting"  # not finished yet (no ended_at): stored, journaled once it ends


def journal_key(call_id: str) -> str:
    return f"call:{call_id}"


def merge_calls(old: CallRecord, new: CallRecord) -> CallRecord:
    """What is known about a call after a later (maybe partial) event about it.

    Values the new event does not carry (None, empty) never erase known ones; a call
    answered once stays answered; times widen to the earliest start and the latest end.
    """
    data = old.model_dump()
    for name in new.model_fields_set:
        value = getattr(new, name)
        if value is None or value == [] or value == {}:
            continue
        data[name] = value
    data["answered"] = old.answered or new.answered
    data["rang"] = list(dict.fromkeys([*old.rang, *new.rang]))
    data["transfers"] = [*old.transfers, *(t for t in new.transfers if t not in old.transfers)]
    data["utm"] = {**old.utm, **new.utm}
    data["started_at"] = _pick(min, old.started_at, new.started_at)
    data["answered_at"] = _pick(min, old.answered_at, new.answered_at)
    data["ended_at"] = _pick(max, old.ended_at, new.ended_at)
    if old.answered:  # the first employee who answered stays the one who answered
        data["answered_by"] = old.answered_by or new.answered_by
        data["answered_at"] = old.answered_at or new.answered_at
    if data["answered"]:
        data["outcome"] = "answered"
    return CallRecord.model_validate(data)


def _pick(choose: Callable[..., Any], *values: Any) -> Any:
    present = [v for v in values if v is not None]
    return choose(present) if present else None


async def accept_call(store: Store, call: CallRecord) -> Acceptance:
    """Store the call (merged with what is known) and queue it for the journal once ended."""
    async with store.transaction() as tx:
        await tx.lock_call(call.call_id)
        old = await tx.get_call(call.call_id)
        merged = merge_calls(old, call) if old is not None else call
        await tx.save_call(merged)
        if merged.ended_at is None:
            return Acceptance.WAITING
        queued = await tx.enqueue(journal_key(call.call_id), JOURNAL_KIND, {
            "call_id": call.call_id, "call": merged.model_dump(mode="json")})
    return Acceptance.QUEUED if queued else Acceptance.DUPLICATE


# -- applying a plan to the embedded store --------------------------------------------------

@dataclass
class Applied:
    """What a plan did: the call's links and the ids of the records it created."""

    contact_id: int | None = None
    lead_id: int | None = None
    created: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, record_id: int | None) -> None:
        if record_id is not None:
            self.created.setdefault(kind, []).append(record_id)

    def dump(self) -> str:
        return json.dumps({"contact_id": self.contact_id, "lead_id": self.lead_id,
                           "created": self.created}, sort_keys=True)


class EmbeddedApply:
    """Applies operations through `Records` (hooks, cache invalidation) in transaction `tx`.

    The embedded CRM keeps call activities in its `calls` table, which links a call to a
    contact and a lead; a call logged on a deal (`on_converted: log_on_deal`) is kept as a
    completed task on the deal so it shows in the deal's history.
    """

    def __init__(self, tx: Store, records: Records, call: CallRecord) -> None:
        self.tx, self.records, self.call = tx, records, call
        self.new: dict[str, int] = {}
        self.result = Applied()

    def ref(self, kind: str, ref: Ref | None) -> int | None:
        if ref == "new":
            if kind not in self.new:
                raise ValueError(f"plan refers to a new {kind} it did not create")
            return self.new[kind]
        return ref

    async def run(self, ops: Sequence[Operation]) -> Applied:
        for op in ops:
            await self.apply(op)
        return self.result

    async def apply(self, op: Operation) -> None:
        match op:
            case CreateOrganization():
                await self._created("organization", Organization(name=op.name, owner=op.owner))
            case CreateContact():
                await self._created("contact", Contact(
                    phones=list(op.phones), owner=op.owner, fields=dict(op.fields),
                    organization_id=self.ref("organization", op.organization_ref)))
            case CreateLead():
                await self._created("lead", Lead(
                    title=op.title, contact_id=self.ref("contact", op.contact_ref),
                    organization_id=self.ref("organization", op.organization_ref),
                    owner=op.owner, utm_source=op.utm_source, utm_medium=op.utm_medium,
                    utm_campaign=op.utm_campaign, fields=dict(op.fields)))
            case UpdateLead():
                await self.records.update(Lead, op.lead_id, {"owner": op.owner}, tx=self.tx)
            case LogCall():
                await self._log(op)
            case CreateTask():
                await self._task(op)

    async def _created(self, kind: str, record: Organization | Contact | Lead | Task) -> None:
        saved = await self.records.create(record, tx=self.tx)
        if kind != "task" and saved.id is not None:
            self.new[kind] = saved.id
        self.result.add(kind, saved.id)

    async def _log(self, op: LogCall) -> None:
        self.result.contact_id = self.ref("contact", op.contact_ref)
        self.result.lead_id = self.ref("lead", op.lead_ref)
        assignee = op.owner or self.call.answered_by or self.call.placed_by
        if op.deal_id is not None and assignee:
            await self._created("task", Task(
                assignee=assignee, title=f"Call logged: {op.summary}", status="done",
                due_at=self.call.ended_at, deal_id=op.deal_id, call_id=op.call_id,
                contact_id=self.result.contact_id, recording_url=op.recording_url))

    async def _task(self, op: CreateTask) -> None:
        await self._created("task", Task(
            assignee=op.assignee, title=op.title, description=op.description,
            status=op.status, due_at=op.due_at, call_id=op.call_id,
            recording_url=op.recording_url, lead_id=self.ref("lead", op.lead_ref),
            contact_id=self.ref("contact", op.contact_ref),
            organization_id=self.ref("organization", op.organization_ref),
            deal_id=op.deal_id))


# -- the journal handler --------------------------------------------------------------------

class CallJournal:
    """Outbox handler of kind `journal`: association -> plan -> apply, and call intake."""

    def __init__(self, store: Store, records: Records,
                 settings: Callable[[], JournalSettings], *,
                 links: Callable[[CallRecord], str | None] = lambda _call: None,
                 metrics: Metrics | None = None, employees_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.records, self.settings, self.links = store, records, settings, links
        self.metrics, self.clock = metrics, clock
        self.on_queued: Callable[[], None] = lambda: None
        self._employees: tuple[float, list[Employee]] | None = None
        self._employees_ttl_s = employees_ttl_s

    async def accept(self, call: CallRecord) -> Acceptance:
        """Durably accept a call (AMI or webhook); wakes the worker when there is work."""
        result = await accept_call(self.store, call)
        log.info("call %s from %s: %s", call.call_id, phones.mask(call.caller), result.value)
        if result is Acceptance.QUEUED:
            self.on_queued()
        return result

    async def __call__(self, tx: Store, item: OutboxItem) -> str:
        call_id = str(item.payload.get("call_id", ""))
        await tx.lock_call(call_id)  # a late event for this call waits, then merges
        call = await tx.get_call(call_id)
        if call is None:  # the calls row is written with the outbox row; be lenient anyway
            call = CallRecord.model_validate(item.payload["call"])
        settings = self.settings().with_employees(await self._store_employees(tx))
        ops = await self.plan(tx, call, settings)
        applied = await EmbeddedApply(tx, self.records, call).run(ops)
        await tx.save_call(call, contact_id=applied.contact_id, lead_id=applied.lead_id)
        if self.metrics is not None:  # (an attempt rolled back at commit counts too: rare)
            outcome = call.outcome or ("answered" if call.answered else "missed")
            self.metrics.calls_journaled.labels(outcome).inc()
        return applied.dump()

    async def plan(self, tx: Store, call: CallRecord,
                   settings: JournalSettings) -> list[Operation]:
        """The operations for `call` (no lookup for blocked or anonymous callers)."""
        if settings.blocked(call.caller) or settings.blocked(call.did):
            return []
        assoc = None
        if call.caller is not None and not call.anonymous:
            records = await tx.find_caller(call.caller)
            assoc = associate(records, call.started_at or call.ended_at or datetime.now(UTC))
        return plan(call, assoc, settings, recording_url=self.links(call))

    async def _store_employees(self, tx: Store) -> list[Employee]:
        """Employees added through the API or CSV import, re-read every few seconds."""
        now = self.clock()
        if self._employees is None or now - self._employees[0] > self._employees_ttl_s:
            self._employees = (now, await tx.list_employees())
        return self._employees[1]


# -- the worker -----------------------------------------------------------------------------

def backoff_s(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": between half and all of the step."""
    step = min(max_s, base_s * 2 ** min(max(attempts - 1, 0), 32))
    return step / 2 + rng.random() * step / 2


class OutboxWorker:
    """Claims outbox rows and applies each with its kind's handler, exactly once in effect."""

    def __init__(self, store: Store, handlers: Mapping[str, Handler] | None = None, *,
                 batch: int = 20, lease_s: float = 60.0, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 300.0, max_attempts: int = 20, poll_s: float = 1.0,
                 before_batch: Callable[[], Awaitable[None]] | None = None,
                 metrics: Metrics | None = None, rng: random.Random | None = None) -> None:
        self.store = store
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.batch, self.lease_s, self.poll_s = batch, lease_s, poll_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.max_attempts = max_attempts
        self.before_batch, self.metrics = before_batch, metrics
        self.rng = rng or random.Random()
        self.delivered = self.failures = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """New work was queued: skip the rest of the poll wait."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in flight (drain), then stop; cancel it after `timeout_s`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:  # its transaction rolls back; the rows are claimed again after the lease
            log.warning("outbox worker still busy after %.1f s: cancelling", timeout_s)
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        while not self._stopping:
            try:
                handled = await self.run_once()
            except Exception as exc:  # the store is down: keep trying, never die
                self.last_error = f"outbox: {exc}"
                log.warning("%s; retrying in %.1f s", self.last_error, self.poll_s)
                handled = 0
            if handled < self.batch:
                await self._idle(self.poll_s)

    async def _idle(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch and handle every row of it; returns how many rows were claimed."""
        if self.before_batch is not None:
            await self.before_batch()
        items = await self.store.claim(self.batch, lease_s=self.lease_s)
        for item in items:
            await self.handle(item)
        return len(items)

    async def drain(self, max_batches: int = 10_000) -> int:
        """Handle due rows until none are left (tests, benchmarks, the CLI)."""
        total = 0
        for _ in range(max_batches):
            handled = await self.run_once()
            total += handled
            if handled == 0:
                break
        return total

    async def handle(self, item: OutboxItem) -> None:
        """Apply one claimed row; a failure schedules a retry (or buries it), never raises."""
        try:
            await self._deliver(item)
        except AlreadyApplied:
            await self.store.complete(item.id)
        except Exception as exc:
            await self._failed(item, exc)
        else:
            self.delivered += 1

    async def _deliver(self, item: OutboxItem) -> None:
        handler = self.handlers.get(item.kind)
        if handler is None:
            raise LookupError(f"no handler for outbox rows of kind {item.kind!r}")
        async with self.store.transaction() as tx:
            result = await handler(tx, item)
            if await tx.mark_applied(f"outbox:{item.key}", result) is False:
                raise AlreadyApplied(item.key)
            await tx.complete(item.id)

    async def _failed(self, item: OutboxItem, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{item.key}: {type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.outbox_failures.inc()
        dead = item.attempts >= self.max_attempts
        delay = backoff_s(item.attempts, self.backoff_base_s, self.backoff_max_s, self.rng)
        if dead:
            log.error("outbox %s is dead after %d attempts: %s", item.key, item.attempts,
                      self.last_error, exc_info=exc)
        else:
            log.warning("outbox %s attempt %d failed (%s); retry in %.1f s", item.key,
                        item.attempts, self.last_error, delay)
        try:
            await self.store.retry(item.id, delay_s=delay, error=self.last_error, dead=dead)
        except Exception as store_exc:  # the lease expires and the row comes back anyway
            log.warning("outbox %s: cannot record the failure: %s", item.key, store_exc)

    async def check(self) -> tuple[bool, object]:
        """`/readyz` detail: depth, dead rows, failures; not ready when the loop died."""
        try:
            stats = await self.store.outbox_stats()
        except Exception as exc:
            return False, {"error": f"outbox unreadable: {exc}"}
        crashed = self._task is not None and self._task.done() and not self._stopping
        return not crashed, {
            "running": self.running, "pending": stats.get("pending", 0),
            "in_flight": stats.get("claimed", 0), "dead": stats.get("dead", 0),
            "delivered": self.delivered, "failures": self.failures,
            "last_error": self.last_error}
