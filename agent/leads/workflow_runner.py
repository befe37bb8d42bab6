"""The `Records` hook that runs workflow rules (`agent.leads.workflows`) on contact / lead writes.

Its own writes go through `Records` again, so workflow B can react to what workflow A set.
Loops are cut two ways: a workflow never re-runs inside the cascade it started, and a
cascade stops at `max_depth`; both are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError

from agent.core.model import Contact, Lead, Organization
from agent.core.rules.conditions import Context
from agent.core.rules.records import holds, record_context
from agent.crm.port import NotFound
from agent.leads.scoring import newest_open
from agent.leads.workflows import Module, Workflow, WorkflowRules, changes_for, task_for

if TYPE_CHECKING:
    from agent.crm.port import Crm
    from agent.crm.records import Event, Records

R = TypeVar("R", bound=BaseModel)
log = logging.getLogger("agent.workflows")


def module_of(record: BaseModel) -> Module | None:
    return "contact" if isinstance(record, Contact) else "lead" if isinstance(
        record, Lead) else None


def utc_now() -> datetime:
    return datetime.now(UTC)


class WorkflowRunner:
    """The `Records` hook: runs the workflows triggered by each contact / lead write."""

    def __init__(self, records: Records, rules: Callable[[], WorkflowRules | None],
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.records = records
        self.rules = rules
        self.clock = clock
        self._chain: ContextVar[tuple[str, ...]] = ContextVar(f"workflows-{id(self)}",
                                                              default=())

    async def __call__(self, crm: Crm, event: Event, record: BaseModel,
                       changed: frozenset[str]) -> None:
        rules = self.rules()
        module = module_of(record)
        record_id = getattr(record, "id", None)
        if rules is None or module is None or record_id is None:
            return
        for workflow in rules.triggered(module, event, changed):
            current, ctx = await load(crm, workflow.module, record_id)
            if holds(workflow.condition, ctx) and not self._guarded(workflow, rules,
                                                                    record_id):
                token = self._chain.set((*self._chain.get(), workflow.name))
                try:
                    await self._apply(crm, workflow, current, ctx)
                finally:
                    self._chain.reset(token)

    def _guarded(self, workflow: Workflow, rules: WorkflowRules, record_id: int) -> bool:
        """True (and logged) when running `workflow` now would loop."""
        chain = self._chain.get()
        if workflow.name in chain:
            log.warning("workflow loop guard: %r is not re-run by its own cascade (%s) "
                        "for %s %s", workflow.name, " -> ".join(chain), workflow.module,
                        record_id)
            return True
        if len(chain) >= rules.max_depth:
            log.warning("workflow loop guard: cascade %s reached max_depth %d; %r not run "
                        "for %s %s", " -> ".join(chain), rules.max_depth, workflow.name,
                        workflow.module, record_id)
            return True
        return False

    async def _apply(self, crm: Crm, workflow: Workflow, record: Contact | Lead,
                     ctx: Context) -> None:
        changes = changes_for(workflow, record, ctx)
        if changes:
            try:
                await self.records.update(type(record), record.id or 0, changes, crm=crm)
            except ValidationError as exc:
                log.error("workflow %r: cannot set %s on %s %s: %s", workflow.name,
                          ", ".join(changes), workflow.module, record.id, exc)
                return
            log.info("workflow %r set %s on %s %s", workflow.name, ", ".join(changes),
                     workflow.module, record.id)
            record, ctx = await load(crm, workflow.module, record.id or 0)
        task = task_for(workflow, record, ctx, self.clock())
        if task is not None:
            await self.records.create(task, crm=crm)


async def load(crm: Crm, module: Module, record_id: int) -> tuple[Contact | Lead, Context]:
    """A record as stored now, with the context its conditions read."""
    if module == "contact":
        contact = await crm.get(Contact, record_id)
        leads = await crm.select(Lead, {"contact_id": record_id}, limit=1000)
        account = await related(crm, Organization, contact.organization_id)
        return contact, record_context(contact, newest_open(leads), account)
    lead = await crm.get(Lead, record_id)
    owner = await related(crm, Contact, lead.contact_id)
    account = await related(crm, Organization, lead.organization_id or (
        owner.organization_id if owner else None))
    return lead, record_context(owner, lead, account)


async def related(crm: Crm, model: type[R], record_id: int | None) -> R | None:
    """A linked record, or None when there is no link or it points at nothing."""
    if record_id is None:
        return None
    try:
        return await crm.get(model, record_id)
    except NotFound:
        return None

