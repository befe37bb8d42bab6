"""Shared domain types: CRM records, call records, routing decisions.

Pure pydantic models; no I/O. Records read from a store or a remote CRM are converted
into these, so the rules, the journal and the association logic never see a backend.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def flatten(prefix: str, record: BaseModel | None,
            exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A record as rule fields: `contact.first_name`, ... and its custom `fields` under the
    same prefix (`contact.status`); a built-in field wins over a custom one of that name."""
    if record is None:
        return {}
    values = {k: v for k, v in record.model_dump().items() if k != "fields" and k not in exclude}
    custom = {k: v for k, v in getattr(record, "fields", {}).items() if k not in values}
    return {f"{prefix}.{k}": v for k, v in {**custom, **values}.items() if v is not None}


class Record(BaseModel):
    """Base of every CRM record: unknown keys are refused, custom data goes in `fields`."""

    model_config = ConfigDict(extra="forbid")


class Role(StrEnum):
    MANAGER = "manager"
    SENIOR = "senior"
    TOP = "top"


class Employee(Record):
    extension: str
    name: str
    role: Role = Role.MANAGER
    email: str | None = None


class Organization(Record):
    id: int | None = None
    name: str
    owner: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class Contact(Record):
    id: int | None = None
    first_name: str = ""
    last_name: str = ""
    job_title: str = ""
    organization_id: int | None = None
    owner: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    score: int = 0
    fields: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


LeadStatus = Literal["open", "converted", "lost"]


class Lead(Record):
    id: int | None = None
    title: str = ""
    contact_id: int | None = None
    organization_id: int | None = None
    status: LeadStatus = "open"
    owner: str | None = None
    team: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    score: int = 0
    fields: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Deal(Record):
    id: int | None = None
    title: str = ""
    organization_id: int | None = None
    contact_id: int | None = None
    lead_id: int | None = None
    stage: str = "new"
    is_open: bool = True
    owner: str | None = None
    amount: float | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None


TaskStatus = Literal["open", "done"]


class Task(Record):
    id: int | None = None
    assignee: str
    title: str
    description: str = ""
    due_at: datetime | None = None
    status: TaskStatus = "open"
    lead_id: int | None = None
    contact_id: int | None = None
    organization_id: int | None = None
    deal_id: int | None = None
    call_id: str | None = None
    recording_url: str | None = None
    created_at: datetime | None = None


Direction = Literal["inbound", "outbound"]
Outcome = Literal["answered", "queue_timeout", "abandoned", "no_answer", "busy", "voicemail",
                  "failed"]


class Transfer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["blind", "attended"] = "blind"
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    context: str | None = None
    at: datetime | None = None


class CallRecord(BaseModel):
    """One call, as the journal sees it (§7.1). `call_id` is the PBX's linked id."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=128)
    direction: Direction = "inbound"
    caller: str | None = None
    caller_raw: str | None = None
    anonymous: bool = False
    did: str | None = None
    did_raw: str | None = None
    answered: bool = False
    answered_by: str | None = None
    placed_by: str | None = None
    queue: str | None = None
    outcome: Outcome | None = None
    recording: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    rang: list[str] = Field(default_factory=list)
    transfers: list[Transfer] = Field(default_factory=list)
    utm: dict[str, str] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.answered_at and self.ended_at:
            return max(0.0, (self.ended_at - self.answered_at).total_seconds())
        return None


DestinationType = Literal["queue", "ivr", "extension", "voicemail", "number", "hangup"]


class Destination(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: DestinationType
    target: str = ""

    def __str__(self) -> str:
        return f"{self.type}:{self.target}" if self.target else self.type


class CallerRecords(BaseModel):
    """What the CRM knows about one phone number: the input of association and routing."""

    contacts: list[Contact] = Field(default_factory=list)
    organizations: dict[int, Organization] = Field(default_factory=dict)
    leads: list[Lead] = Field(default_factory=list)
    deals: list[Deal] = Field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.contacts)
