"""Record writes with their side effects: every create/update of a CRM record goes here.

Writes go to the CRM port; hooks run after each write, on the same CRM handle (inside the
agent's transaction when the caller passes a joined one): scoring and workflows (§8.3)
register here, and the routing cache is told which callers changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from agent.core.model import Contact, Lead
from agent.crm.port import Crm, NotFound

R = TypeVar("R", bound=BaseModel)
Event = Literal["create", "update"]
Hook = Callable[[Crm, Event, BaseModel, frozenset[str]], Awaitable[None]]
"""(the CRM handle written to, event, record after the write, changed field names; a change
of custom fields names `fields` and each `fields.NAME`)."""


def changed_names(changes: Mapping[str, Any]) -> frozenset[str]:
    """Top-level names, plus `fields.NAME` for each custom field in a `fields` change."""
    custom = changes.get("fields")
    names = [f"fields.{key}" for key in custom] if isinstance(custom, Mapping) else []
    return frozenset((*changes, *names))


class Records:
    """The one way to write CRM records; keeps hooks and cache invalidation in one place."""

    def __init__(self, crm: Crm) -> None:
        self.crm = crm
        self.hooks: list[Hook] = []
        self.caller_changed: list[Callable[[str], None]] = []

    async def create(self, record: R, *, crm: Crm | None = None) -> R:
        """Create through `crm` (default: the CRM itself, outside any transaction)."""
        crm = crm or self.crm
        saved = await crm.create(record)
        return await self._after(crm, "create", saved, frozenset(type(record).model_fields))

    async def update(self, model: type[R], record_id: int, changes: Mapping[str, Any], *,
                     crm: Crm | None = None) -> R:
        crm = crm or self.crm
        saved = await crm.update(model, record_id, changes)
        return await self._after(crm, "update", saved, changed_names(changes))

    async def _after(self, crm: Crm, event: Event, record: R, changed: frozenset[str]) -> R:
        """Run the hooks; the record is read back when they may have changed it (a score)."""
        for hook in self.hooks:
            await hook(crm, event, record, changed)
        await self._invalidate(crm, record)
        record_id = getattr(record, "id", None)
        if not self.hooks or record_id is None:
            return record
        return await crm.get(type(record), record_id)

    async def _invalidate(self, crm: Crm, record: BaseModel) -> None:
        if not self.caller_changed:
            return
        numbers: list[str] = []
        if isinstance(record, Contact):
            numbers = list(record.phones)
        elif isinstance(record, Lead) and record.contact_id is not None:
            try:
                numbers = list((await crm.get(Contact, record.contact_id)).phones)
            except NotFound:  # a lead linked to no contact: no caller to invalidate
                return
        for number in numbers:
            self.changed(number)

    def changed(self, e164: str) -> None:
        for notify in self.caller_changed:
            notify(e164)

