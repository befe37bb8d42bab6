"""The CRM operations a journal plan is made of: small frozen models told apart by `op`.

A plan refers to records it creates earlier in the same plan as `"new"` (it creates at most
one contact, one organization and one lead), to existing records by id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Ref = int | Literal["new"]
"""An existing record id, or the record created earlier in the same plan."""
TaskState = Literal["open", "done"]


class CreateOrganization(_Strict):
    op: Literal["create_organization"] = "create_organization"
    name: str
    owner: str | None = None


class CreateContact(_Strict):
    op: Literal["create_contact"] = "create_contact"
    phones: tuple[str, ...]
    owner: str | None = None
    organization_ref: Ref | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class CreateLead(_Strict):
    op: Literal["create_lead"] = "create_lead"
    title: str
    contact_ref: Ref | None = None
    organization_ref: Ref | None = None
    owner: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class UpdateLead(_Strict):
    op: Literal["update_lead"] = "update_lead"
    lead_id: int
    owner: str


class LogCall(_Strict):
    """Log the call as an activity on the lead (or deal, or contact) it belongs to."""

    op: Literal["log_call"] = "log_call"
    call_id: str
    summary: str
    contact_ref: Ref | None = None
    organization_ref: Ref | None = None
    lead_ref: Ref | None = None
    deal_id: int | None = None
    owner: str | None = None
    recording_url: str | None = None


class CreateTask(_Strict):
    op: Literal["create_task"] = "create_task"
    assignee: str
    title: str
    description: str = ""
    status: TaskState = "open"
    due_at: datetime | None = None
    call_id: str | None = None
    recording_url: str | None = None
    contact_ref: Ref | None = None
    organization_ref: Ref | None = None
    lead_ref: Ref | None = None
    deal_id: int | None = None


Operation = Annotated[CreateOrganization | CreateContact | CreateLead | UpdateLead | LogCall
                      | CreateTask, Field(discriminator="op")]
OPERATIONS: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])
