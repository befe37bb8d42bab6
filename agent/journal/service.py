"""The call journal's use case (§7, §9): accept a call event, and apply its plan to the CRM.

Accepting a call (from AMI or `POST /events/call`) is one store transaction: the `calls`
row is inserted or merged with what was known (late events), and a *finished* call (one
with `ended_at`) gets the outbox row `call:<call_id>`. The same call accepted again finds
that row and enqueues nothing; an update arriving before delivery is still taken into
account, because the journal reads the call's latest row, not the snapshot in the outbox.
An update after delivery only updates the `calls` row (the CRM records stay as journaled).
Writers of one call are serialised by `Store.lock_call`, so events arriving at once merge.

`CallJournal` is the outbox handler of `journal` rows: it plans the call's operations
(`agent.journal`) and applies them through the CRM port (`PlanApply`), joined to the
outbox's transaction: the embedded CRM commits the records with the outbox row.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent.core import phones
from agent.core.model import CallRecord, Contact, Employee, Lead, Organization, Task
from agent.crm.port import CallActivity
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
from agent.journal.association import associate

if TYPE_CHECKING:
    from agent.core.rules.lists import NumberList
    from agent.crm.port import Crm
    from agent.crm.records import Records
    from agent.ops.metrics import Metrics
    from agent.store import OutboxItem, Store

log = logging.getLogger("agent.journal")
JOURNAL_KIND = "journal"


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


# -- applying a plan through the CRM port ------------------------------------------------------

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


class PlanApply:
    """Applies a plan's operations through `Records` (hooks, cache invalidation) on `crm`,
    the CRM joined to the outbox transaction; `"new"` refers to what the plan created."""

    def __init__(self, crm: Crm, records: Records, call: CallRecord) -> None:
        self.crm, self.records, self.call = crm, records, call
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
                await self.records.update(Lead, op.lead_id, {"owner": op.owner}, crm=self.crm)
            case LogCall():
                await self._log(op)
            case CreateTask():
                await self._task(op)

    async def _created(self, kind: str, record: Organization | Contact | Lead | Task) -> None:
        saved = await self.records.create(record, crm=self.crm)
        if kind != "task" and saved.id is not None:
            self.new[kind] = saved.id
        self.result.add(kind, saved.id)

    async def _log(self, op: LogCall) -> None:
        self.result.contact_id = self.ref("contact", op.contact_ref)
        self.result.lead_id = self.ref("lead", op.lead_ref)
        logged = await self.crm.log_call(self.call, CallActivity(
            summary=op.summary, contact_id=self.result.contact_id,
            organization_id=self.ref("organization", op.organization_ref),
            lead_id=self.result.lead_id, deal_id=op.deal_id, owner=op.owner,
            recording_url=op.recording_url))
        self.result.add("call", logged)

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
                 lists: Callable[[], Mapping[str, NumberList]] = dict,
                 metrics: Metrics | None = None, employees_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`lists`: the routing rules' number lists in force (`blocklist_lists`)."""
        self.store, self.records, self.settings, self.links = store, records, settings, links
        self.lists, self.metrics, self.clock = lists, metrics, clock
        self.on_queued: Callable[[], None] = lambda: None
        self._employees: tuple[float, list[Employee]] | None = None
        self._employees_ttl_s = employees_ttl_s

    async def accept(self, call: CallRecord) -> Acceptance:
        """Durably accept a call (AMI or webhook); wakes the worker when there is work.

        The call keeps the call-tracking tags of its DID (`utm_by_did`) under the tags it
        carries itself, so its record shows the campaign of that day."""
        if call.did or call.did_raw:
            call = call.model_copy(update={"utm": self.settings().utm_for(call)})
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
        crm = self.records.crm.joined(tx)
        settings = self.settings().with_employees(await self._store_employees(tx))
        ops = await self.plan(crm, call, settings)
        applied = await PlanApply(crm, self.records, call).run(ops)
        await tx.save_call(call, contact_id=applied.contact_id, lead_id=applied.lead_id)
        if self.metrics is not None:  # (an attempt rolled back at commit counts too: rare)
            outcome = call.outcome or ("answered" if call.answered else "missed")
            self.metrics.calls_journaled.labels(outcome).inc()
        return applied.dump()

    async def plan(self, crm: Crm, call: CallRecord,
                   settings: JournalSettings) -> list[Operation]:
        """The operations for `call` (no lookup for blocked or anonymous callers)."""
        if settings.blocked(call.caller) or settings.blocked(call.did):
            return []
        if (listed := settings.listed(call.caller, self.lists())) is not None:
            log.info("call %s: the caller is on the routing list %r (blocklist_lists): "
                     "nothing is written to the CRM", call.call_id, listed)
            return []
        assoc = None
        if call.caller is not None and not call.anonymous:
            records = await crm.find_caller(call.caller)
            assoc = associate(records, call.started_at or call.ended_at or datetime.now(UTC))
        return plan(call, assoc, settings, recording_url=self.links(call))

    async def _store_employees(self, tx: Store) -> list[Employee]:
        """Employees added through the API or CSV import, re-read every few seconds."""
        now = self.clock()
        if self._employees is None or now - self._employees[0] > self._employees_ttl_s:
            self._employees = (now, await tx.list_employees())
        return self._employees[1]
