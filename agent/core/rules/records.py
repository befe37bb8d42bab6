"""Conditions over CRM records (scoring, workflows): the fields they may name, the context
they read, and their verdict, in which the time of day plays no part (no schedules)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from agent.core.model import Contact, Lead, Organization, flatten
from agent.core.rules.conditions import BareField, Condition, Context, Field

RECORD_MODULES: Final = ("contact", "lead", "account")
"""What scoring and workflows read of a record: itself, its contact or lead, its account."""
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


def record_field(name: str, modules: Sequence[str] = RECORD_MODULES) -> Field:
    """A field of a CRM record: `contact.city`, or a bare `city` (the first of `modules`
    that has it); ValueError for another module."""
    prefix, dot, _rest = name.partition(".")
    if not dot:
        return BareField(name, modules)
    if prefix not in modules:
        raise ValueError(f"unknown field {name!r} (expected FIELD or MODULE.FIELD with "
                         f"MODULE one of {', '.join(modules)})")
    return Field(name)


def record_context(contact: Contact | None, lead: Lead | None,
                   account: Organization | None) -> dict[str, Any]:
    """What a condition over a record reads: `contact.job_title`, `lead.source`, ..."""
    ctx = {**flatten("contact", contact), **flatten("lead", lead),
           **flatten("account", account)}
    if contact is not None:
        ctx["contact.name"] = contact.name
    return ctx


def holds(condition: Condition, ctx: Context) -> bool:
    return condition.test(ctx, _EPOCH)[0]
