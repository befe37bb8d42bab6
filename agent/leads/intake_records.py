"""Web-form leads (§8.1), second half: the records a mapped form becomes — new contact,
organization and lead, or the changes to known ones — and the project id. Pure."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agent.core.model import Contact, Lead, Organization
from agent.leads.intake import (
    ACQUISITION_DATE,
    PROJECT_ID,
    IntakeRules,
    Mapped,
    Patch,
    blank,
)

log = logging.getLogger("agent.intake")
_PROJECT = re.compile(r"P(\d{1,18})-[A-Z0-9]{4,16}")


def new_project_id(contact_id: int) -> str:
    """Unique and resolvable: the contact's id plus a random tag (`P000042-K7F3QZ`)."""
    tag = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))
    return f"P{contact_id:06d}-{tag}"


def project_contact(project_id: str) -> int | None:
    """The contact id inside a project id, or None when it is not one of ours."""
    match = _PROJECT.fullmatch(project_id.strip().upper())
    return int(match[1]) if match else None


def display_name(mapped: Mapped) -> str:
    attrs = mapped.contact.attrs
    name = " ".join(p for p in (attrs.get("first_name"), attrs.get("last_name")) if p)
    return name or next(iter(mapped.emails), "") or next(iter(mapped.phones), "") or "web lead"


def new_contact(mapped: Mapped, organization_id: int | None) -> Contact:
    return Contact(organization_id=organization_id, **mapped.contact.attrs,
                   phones=list(dict.fromkeys(mapped.phones)),
                   emails=list(dict.fromkeys(mapped.emails)), fields=_list_kinds(mapped.contact))


def new_organization(mapped: Mapped) -> Organization:
    name = mapped.organization.attrs.get("name") or display_name(mapped)
    return Organization(name=name, fields=dict(mapped.organization.fields))


def contact_changes(contact: Contact, mapped: Mapped, *, overwrite: bool = False
                    ) -> dict[str, Any]:
    """New phones and e-mails are appended. A web form only fills what the contact lacks
    (the call center may have corrected it); the call center's own values overwrite."""
    def wanted(current: Any) -> bool:
        return overwrite or blank(current)

    changes: dict[str, Any] = {k: v for k, v in mapped.contact.attrs.items()
                               if wanted(getattr(contact, k)) and getattr(contact, k) != v}
    custom = {**mapped.contact.fields, **_list_kinds(mapped.contact)}
    fields = {k: v for k, v in custom.items()
              if wanted(contact.fields.get(k)) and contact.fields.get(k) != v}
    if fields:
        changes["fields"] = fields
    phones = _merged(contact.phones, mapped.phones, str, first=overwrite)
    emails = _merged(contact.emails, mapped.emails, str.casefold, first=overwrite)
    if phones != contact.phones:
        changes["phones"] = phones
    if emails != contact.emails:
        changes["emails"] = emails
    return changes


def _merged(current: Sequence[str], new: Sequence[str], key: Callable[[str], str], *,
            first: bool) -> list[str]:
    """`current` plus the new items (de-duplicated by `key`), the new ones first or last."""
    seen: set[str] = set()
    out: list[str] = []
    for item in [*new, *current] if first else [*current, *new]:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


def _list_kinds(patch: Patch) -> dict[str, Any]:
    kinds = {f"{kind}_phone": number for number, kind in patch.phones if kind}
    kinds.update({f"{kind}_email": email for email, kind in patch.emails if kind})
    return {**patch.fields, **kinds}


def new_lead(mapped: Mapped, rules: IntakeRules, contact: Contact, project_id: str,
             now: datetime) -> Lead:
    fields = {**mapped.lead.fields, PROJECT_ID: project_id,
              ACQUISITION_DATE: now.isoformat(timespec="seconds"),
              "consent": bool(mapped.consent), "status_reason": "EN COURS",
              "project_status": "ACTIF", "submissions": 1, **_leftovers(mapped)}
    attrs = {"title": contact.name or display_name(mapped), **mapped.lead.attrs}
    return Lead(contact_id=contact.id, organization_id=contact.organization_id,
                team=rules.team, fields=fields, **attrs)


def lead_changes(lead: Lead, mapped: Mapped, rules: IntakeRules, contact: Contact,
                 now: datetime) -> dict[str, Any]:
    """The newest form wins on lead data; agent-set ids and dates are set only once."""
    fields: dict[str, Any] = {**mapped.lead.fields,
                              "submissions": int(lead.fields.get("submissions") or 1) + 1,
                              "last_submission_at": now.isoformat(timespec="seconds")}
    if mapped.consent is not None:
        fields["consent"] = mapped.consent
    if blank(lead.fields.get(PROJECT_ID)) and contact.id is not None:
        fields[PROJECT_ID] = new_project_id(contact.id)
    if blank(lead.fields.get(ACQUISITION_DATE)):
        fields[ACQUISITION_DATE] = now.isoformat(timespec="seconds")
    for key in ("extra", "rejected"):
        merged = {**(lead.fields.get(key) or {}), **_leftovers(mapped).get(key, {})}
        if merged:
            fields[key] = merged
    changes: dict[str, Any] = {**mapped.lead.attrs, "fields": fields}
    if lead.team is None and lead.owner is None:
        changes["team"] = rules.team
    return changes


def _leftovers(mapped: Mapped) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if mapped.extra:
        out["extra"] = dict(mapped.extra)
    if mapped.rejected:
        out["rejected"] = dict(mapped.rejected)
    return out
