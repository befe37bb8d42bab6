"""The scenario matrix (§7.3): a finished call -> the CRM operations to apply.

Pure: `plan()` reads a `CallRecord`, its `Association` and the `JournalSettings` and returns
operations; the outbox applies them. Records created by a plan are referred to as `"new"`
by the later operations of the same plan (a plan creates at most one of each kind).

Decisions where the matrix is silent (documented in `rules/journal.yaml` too):

* The matrix rows combine: a missed call from a caller with an open lead is logged on the
  lead *and* gives the senior manager a task.
* A known caller without an open lead (converted, lost, or never had one) is the
  "converted" row: a new lead for the existing contact and account (`on_converted:
  log_on_deal` logs on the open deal instead, when there is one). Its responsible manager
  is the caller's (open deal's, else contact's), else whoever answered, else the senior
  manager (missed) or the top manager (unknown extension).
* A new caller's records belong to whoever answered; to the senior manager when the call
  was missed (the one who must call back), to the top manager when an unknown extension
  answered (the one who must reassign them).
* The answered-by rows apply to known callers; a new caller's answering employee just
  becomes responsible. A lead nobody is responsible for goes to the employee who answers.
* Outbound calls: logged on the open lead (else on the contact); tasks only when answered
  and an open lead exists; a number the CRM does not know creates nothing.
* Anonymous (withheld) callers: no lookup, no contact. Missed: a task for the senior
  manager (switch `anonymous_missed`); answered by an unknown extension: the top manager's
  task; answered by an employee: nothing. A number presented but not valid (`caller` null,
  `caller_raw` kept) is handled the same way (nothing to look it up by), but the tasks name
  it as presented: "Missed call from an invalid number (12345)", not "a withheld number".
* Blocklist: the caller (or the DID) on the blocklist: no operation at all.
* "The senior manager" is the first employee with role `senior` in the file (store-only
  employees come after), else the first `top`; "the top manager" is the first `top`, else
  the first `senior`. With neither, those tasks are not created.
* Due times: call end + `missed_task_due` for open tasks; completed tasks are due at the
  call end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from agent.core.model import CallRecord, Employee
from agent.core.phones import is_withheld
from agent.journal.association import Association
from agent.journal.operations import (
    CreateContact,
    CreateLead,
    CreateOrganization,
    CreateTask,
    LogCall,
    Operation,
    Ref,
    UpdateLead,
)
from agent.journal.settings import UTM_KEYS, JournalSettings, Scenarios


@dataclass(frozen=True)
class Target:
    """The records a call is filed under, and who is responsible for them."""

    contact: Ref | None = None
    organization: Ref | None = None
    lead: Ref | None = None
    deal: int | None = None
    owner: str | None = None

    def links(self) -> dict[str, Any]:
        return {"contact_ref": self.contact, "organization_ref": self.organization,
                "lead_ref": self.lead, "deal_id": self.deal}


@dataclass(frozen=True)
class _Ctx:
    call: CallRecord
    assoc: Association | None
    settings: JournalSettings
    recording_url: str | None

    @property
    def on(self) -> Scenarios:
        return self.settings.scenarios

    @property
    def number(self) -> str:
        """The caller as tasks name it; a number that is not valid is shown as presented."""
        call = self.call
        if call.caller:
            return call.caller
        if is_withheld(call.caller_raw):
            return "a withheld number"
        return f"an invalid number ({call.caller_raw})"

    @property
    def end(self) -> datetime | None:
        return self.call.ended_at or self.call.answered_at or self.call.started_at

    @property
    def follow_up_due(self) -> datetime | None:
        return self.end + self.settings.missed_task_due if self.end else None

    @property
    def answerer(self) -> Employee | None:
        return self.settings.employee(self.call.answered_by) if self.call.answered else None

    @property
    def unknown_answer(self) -> bool:
        """Answered, but not by an employee the journal knows (integration settings)."""
        return self.call.answered and self.answerer is None

    def who(self, extension: str | None) -> str:
        employee = self.settings.employee(extension)
        if employee is not None:
            return f"{employee.name} ({employee.extension})"
        return f"extension {extension}" if extension else "an unknown extension"


def plan(call: CallRecord, assoc: Association | None, settings: JournalSettings, *,
         recording_url: str | None = None) -> list[Operation]:
    """The operations the §7.3 matrix asks for this finished call (see the module doc)."""
    if settings.blocked(call.caller) or settings.blocked(call.did):
        return []
    ctx = _Ctx(call, assoc if assoc is not None and assoc.known else None, settings,
               recording_url)
    if call.direction == "outbound":
        return _outbound(ctx)
    if call.anonymous or call.caller is None:
        return _anonymous(ctx)
    return _inbound_new(ctx) if ctx.assoc is None else _inbound_known(ctx)


def _anonymous(ctx: _Ctx) -> list[Operation]:
    if not ctx.call.answered:
        return _some(_missed_task(ctx, Target())) if ctx.on.anonymous_missed else []
    if ctx.unknown_answer and ctx.on.unknown_extension:
        return _some(_integration_task(ctx, Target()))
    return []


def _inbound_new(ctx: _Ctx) -> list[Operation]:
    """Rows "new caller, answered" / "new caller, missed" (+ "unknown extension")."""
    call, on = ctx.call, ctx.on
    answerer = ctx.answerer
    if not call.answered:
        create, owner = on.new_caller_missed, ctx.settings.senior()
    elif answerer is not None:
        create, owner = on.new_caller_answered, answerer.extension
    else:
        create, owner = on.new_caller_answered, ctx.settings.top()
    ops: list[Operation] = []
    target = _create_records(ctx, owner, ops) if create else Target()
    if not call.answered and create:
        ops += _some(_missed_task(ctx, target))
    elif ctx.unknown_answer and on.unknown_extension:
        ops += _some(_integration_task(ctx, target))
    return ops


def _create_records(ctx: _Ctx, owner: str | None, ops: list[Operation]) -> Target:
    """Organization + contact + lead (UTM tags from the DID), the call logged on the lead."""
    ops.append(CreateOrganization(name=f"New caller {ctx.number}", owner=owner))
    ops.append(CreateContact(phones=(ctx.number,), owner=owner, organization_ref="new",
                             fields={"source": "phone", "first_call_id": ctx.call.call_id}))
    ops.append(_new_lead(ctx, "new", "new", owner))
    target = Target(contact="new", organization="new", lead="new", owner=owner)
    ops.append(_log(ctx, target))
    return target


def _new_lead(ctx: _Ctx, contact: Ref, organization: Ref | None,
              owner: str | None) -> CreateLead:
    fields: dict[str, Any] = {"source": "phone", "call_id": ctx.call.call_id}
    if ctx.call.did or ctx.call.did_raw:
        fields["did"] = ctx.call.did or ctx.call.did_raw
    utm = ctx.settings.utm_for(ctx.call)
    fields.update({k: v for k, v in utm.items() if k not in UTM_KEYS})  # utm_term, gclid...
    return CreateLead(title=f"Call from {ctx.number}", contact_ref=contact,
                      organization_ref=organization, owner=owner, fields=fields,
                      utm_source=utm.get("utm_source"), utm_medium=utm.get("utm_medium"),
                      utm_campaign=utm.get("utm_campaign"))


def _inbound_known(ctx: _Ctx) -> list[Operation]:
    ops: list[Operation] = []
    target = _known_target(ctx, ops)
    if not ctx.call.answered:
        if ctx.on.known_caller_missed:
            ops += _some(_missed_task(ctx, target))
    elif ctx.unknown_answer:
        if ctx.on.unknown_extension:
            ops += _some(_integration_task(ctx, target))
    else:
        ops += _answered(ctx, target)
    return ops


def _known_target(ctx: _Ctx, ops: list[Operation]) -> Target:
    """Rows "caller has an open lead" and "lead converted to a deal (no open lead)"."""
    assoc = ctx.assoc
    assert assoc is not None
    base = _base(assoc)
    if assoc.lead is not None:
        target = replace(base, lead=assoc.lead.id)
        if ctx.on.known_caller_open_lead:
            ops.append(_log(ctx, target))
        return target
    if not ctx.on.converted_lead:
        return base
    deal = assoc.deal if assoc.deal is not None and assoc.deal.is_open else None
    if ctx.settings.on_converted == "log_on_deal" and deal is not None:
        target = replace(base, deal=deal.id, owner=deal.owner or base.owner)
        ops.append(_log(ctx, target))
        return target
    owner = base.owner or _fallback_owner(ctx)
    ops.append(_new_lead(ctx, base.contact or "new", base.organization, owner))
    target = replace(base, lead="new", owner=owner)
    ops.append(_log(ctx, target))
    return target


def _base(assoc: Association) -> Target:
    contact = assoc.contact
    assert contact is not None
    account = assoc.account.id if assoc.account else contact.organization_id
    return Target(contact=contact.id, organization=account, owner=assoc.owner)


def _fallback_owner(ctx: _Ctx) -> str | None:
    if not ctx.call.answered:
        return ctx.settings.senior()
    answerer = ctx.answerer
    return answerer.extension if answerer else ctx.settings.top()


def _answered(ctx: _Ctx, target: Target) -> list[Operation]:
    """Rows "answered by the responsible manager" / "answered by another manager"."""
    answerer = ctx.answerer
    assert answerer is not None
    me, responsible = answerer.extension, target.owner
    if responsible is None or responsible == me:
        if not ctx.on.answered_by_responsible:
            return []
        ops: list[Operation] = []
        if responsible is None and isinstance(target.lead, int):
            ops.append(UpdateLead(lead_id=target.lead, owner=me))
        title = f"Call with {ctx.number}"
        return [*ops, _done_task(ctx, me, title, target)]
    if not ctx.on.answered_by_other:
        return []
    review = CreateTask(
        assignee=responsible, title=f"Review the call of {ctx.number} answered by "
        f"{ctx.who(me)}", description=_summary(ctx), status="open", due_at=ctx.follow_up_due,
        call_id=ctx.call.call_id, recording_url=ctx.recording_url, **target.links())
    return [_done_task(ctx, me, f"Call with {ctx.number}", target), review]


def _outbound(ctx: _Ctx) -> list[Operation]:
    """Rows "outbound answered, open lead, by the responsible / another manager"."""
    assoc, call = ctx.assoc, ctx.call
    if assoc is None or assoc.contact is None or call.caller is None:
        return []
    base = _base(assoc)
    if assoc.lead is None:
        return [_log(ctx, base)]
    target = replace(base, lead=assoc.lead.id)
    ops: list[Operation] = [_log(ctx, target)] if ctx.on.known_caller_open_lead else []
    caller_ext = call.placed_by or call.answered_by
    if not call.answered or caller_ext is None:
        return ops
    responsible = target.owner or caller_ext
    if responsible == caller_ext:
        if ctx.on.outbound_by_responsible:
            ops.append(_done_task(ctx, caller_ext, f"Call to {ctx.number}", target))
    elif ctx.on.outbound_by_other:
        ops.append(_done_task(ctx, responsible, f"Review the call of {ctx.who(caller_ext)} "
                                                f"to {ctx.number}", target))
    return ops


# -- operation builders ---------------------------------------------------------------------

def _some(op: Operation | None) -> list[Operation]:
    return [op] if op is not None else []


def _summary(ctx: _Ctx) -> str:
    call = ctx.call
    parts = [f"{call.direction.capitalize()} call",
             f"{'from' if call.direction == 'inbound' else 'to'} {ctx.number}"]
    if call.did or call.did_raw:
        parts.append(f"on {call.did or call.did_raw}")
    if call.started_at:
        parts.append(f"at {call.started_at.isoformat(timespec='seconds')}")
    if call.answered:
        duration = call.duration_s
        parts.append(f"answered by {ctx.who(call.answered_by)}"
                     + (f", {round(duration)} s" if duration is not None else ""))
    else:
        parts.append(f"not answered ({(call.outcome or 'missed').replace('_', ' ')})")
    if call.queue:
        parts.append(f"queue {call.queue}")
    return " ".join(parts[:2]) + (", " + ", ".join(parts[2:]) if parts[2:] else "") + "."


def _log(ctx: _Ctx, target: Target) -> LogCall:
    return LogCall(call_id=ctx.call.call_id, summary=_summary(ctx), owner=target.owner,
                   recording_url=ctx.recording_url, **target.links())


def _done_task(ctx: _Ctx, assignee: str, title: str, target: Target) -> CreateTask:
    return CreateTask(assignee=assignee, title=title, description=_summary(ctx), status="done",
                      due_at=ctx.end, call_id=ctx.call.call_id,
                      recording_url=ctx.recording_url, **target.links())


def _missed_task(ctx: _Ctx, target: Target) -> CreateTask | None:
    senior = ctx.settings.senior()
    if senior is None:
        return None
    return CreateTask(assignee=senior, title=f"Missed call from {ctx.number}: call back",
                      description=_summary(ctx), due_at=ctx.follow_up_due,
                      call_id=ctx.call.call_id, recording_url=ctx.recording_url,
                      **target.links())


def _integration_task(ctx: _Ctx, target: Target) -> CreateTask | None:
    top = ctx.settings.top()
    if top is None:
        return None
    extension = ctx.call.answered_by
    return CreateTask(
        assignee=top, title=f"Check the integration settings: {ctx.who(extension)} is no "
        "employee", description=f"{_summary(ctx)} Add the extension to the employees in "
        "journal.yaml, then reassign the lead and the call to a manager.",
        due_at=ctx.follow_up_due, call_id=ctx.call.call_id,
        recording_url=ctx.recording_url, **target.links())
