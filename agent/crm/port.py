"""The CRM as every use case sees it: routing's caller lookup, the journal's plans, web-form
intake, dispositions, workflows, the records API. The embedded store (`crm.embedded`) is one
backend; a remote CRM is another implementation of the same protocol.

Records are the models of `agent.core.model`; a backend maps them to its own objects.
Writes with side effects (scoring, workflows, the routing cache) go through `crm.records`,
which calls the port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from agent.core.model import CallerRecords, CallRecord, Contact

if TYPE_CHECKING:
    from agent.store import Store

R = TypeVar("R", bound=BaseModel)


class NotFound(LookupError):
    """No record with that id."""


class Crm(Protocol):
    """Find callers, read and write records, log calls."""

    async def find_caller(self, e164: str) -> CallerRecords:
        """Everything filed under a number: contacts, their organizations, leads, deals."""
        ...

    async def find_contacts(self, *, phone: str | None = None,
                            email: str | None = None) -> list[Contact]: ...

    async def get(self, model: type[R], record_id: int) -> R:
        """The record, or `NotFound`."""
        ...

    async def select(self, model: type[R], filters: Mapping[str, Any] | None = None, *,
                     limit: int = 100, offset: int = 0) -> list[R]:
        """Records by equality on their indexed fields (`ValueError` for another field)."""
        ...

    async def create(self, record: R) -> R:
        """The record as written, with its id and times."""
        ...

    async def update(self, model: type[R], record_id: int, changes: Mapping[str, Any]) -> R:
        """Merge `changes` (custom `fields` key by key) into the record; `NotFound`."""
        ...

    async def log_call(self, call: CallRecord, activity: CallActivity) -> int | None:
        """File the call as an activity on the records `activity` names; the id of what
        was written, when the CRM keeps a record of its own for it."""
        ...

    def joined(self, tx: Store) -> Crm:
        """This CRM seen from inside the agent's transaction `tx`: the embedded store joins
        it (its records commit with the outbox row); a remote CRM cannot, and returns
        itself (its writes are made idempotent instead)."""
        ...


@dataclass(frozen=True)
class CallActivity:
    """A call to log, with the records it belongs to resolved to ids."""

    summary: str
    contact_id: int | None = None
    organization_id: int | None = None
    lead_id: int | None = None
    deal_id: int | None = None
    owner: str | None = None
    recording_url: str | None = None
