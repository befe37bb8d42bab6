"""The web-form and call-center use cases (§8.1, §8.2): `POST /leads` intake (map, dedupe,
write the contact, organization and lead in one transaction), `POST /dispositions` (the
call center's outcome applied to its project, once) and the call-center export.

Every write goes through `Records`, so scoring and workflows apply to these leads as to any
other. Errors are the feature's own (`EmptyLead`, `DispositionError`, `NotFound`); the HTTP
adapter (`agent.leads.http`) turns them into answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.core.model import Contact, Lead
from agent.core.phones import mask
from agent.crm.port import Crm, NotFound
from agent.crm.records import Records
from agent.leads import dispositions as outcomes
from agent.leads.intake import (
    PROJECT_ID,
    Candidate,
    IntakeRules,
    Mapped,
    Match,
    blank,
    decide,
    map_form,
)
from agent.leads.intake_records import (
    contact_changes,
    lead_changes,
    new_contact,
    new_lead,
    new_organization,
    new_project_id,
    project_contact,
)
from agent.store import Store


class EmptyLead(ValueError):
    """A web form with no field filled in: nothing to create."""


Body = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LeadDesk:
    """Web-form intake, call-center outcomes and export, through the CRM port; the records
    of one form or outcome are written in one agent transaction (`unit`)."""

    store: Store
    records: Records
    region: str
    rules: Callable[[], IntakeRules]
    is_blocked: Callable[[str], bool]
    clock: Callable[[], datetime] = utc_now

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Crm]:
        """The CRM joined to one agent transaction: the embedded store commits it all."""
        async with self.store.transaction() as tx:
            yield self.records.crm.joined(tx)

    # -- POST /leads ------------------------------------------------------------------------

    async def submit(self, form: Mapping[str, Any]) -> tuple[int, Body]:
        if all(blank(value) for value in form.values()):
            raise EmptyLead("the body has no field with a value")
        rules = self.rules()
        mapped = map_form(form, rules, self.region)
        blocked = [number for number in mapped.phones if self.is_blocked(number)]
        if blocked:
            return 202, {"result": "ignored", "reason": "blocklisted",
                         "detail": f"{mask(blocked[0])} is on the blocklist: nothing was "
                                   "created or updated"}
        async with self.unit() as crm:
            match = decide(await self._candidates(crm, mapped))
            contact, lead, organization_id = await self._write(crm, match, mapped, rules)
        return (200 if match.path == "open-lead" else 201), _intake_body(
            match, mapped, contact, lead, organization_id)

    async def _candidates(self, crm: Crm, mapped: Mapped) -> list[Candidate]:
        found: dict[int, tuple[Contact, set[str]]] = {}
        for how, phone, email in ([("phone", p, None) for p in mapped.phones]
                                  + [("email", None, e) for e in mapped.emails]):
            for contact in await crm.find_contacts(phone=phone, email=email):
                found.setdefault(contact.id or 0, (contact, set()))[1].add(how)
        return [Candidate(contact, await crm.select(Lead, {"contact_id": contact_id},
                                                    limit=1000), frozenset(how))
                for contact_id, (contact, how) in found.items()]

    async def _write(self, crm: Crm, match: Match, mapped: Mapped,
                     rules: IntakeRules) -> tuple[Contact, Lead, int | None]:
        now = self.clock()
        if match.contact is None:
            organization = await self.records.create(new_organization(mapped), crm=crm)
            contact = await self.records.create(new_contact(mapped, organization.id), crm=crm)
        else:
            contact = await self._refresh(crm, match.contact, contact_changes(
                match.contact, mapped))
        if match.lead is not None and match.lead.id is not None:
            lead = await self.records.update(
                Lead, match.lead.id, lead_changes(match.lead, mapped, rules, contact, now),
                crm=crm)
        else:
            project = new_project_id(contact.id or 0)
            lead = await self.records.create(new_lead(mapped, rules, contact, project, now),
                                             crm=crm)
        return contact, lead, lead.organization_id or contact.organization_id

    async def _refresh(self, crm: Crm, contact: Contact, changes: dict[str, Any]) -> Contact:
        if not changes or contact.id is None:
            return contact
        return await self.records.update(Contact, contact.id, changes, crm=crm)

    # -- POST /dispositions -----------------------------------------------------------------

    async def dispose(self, body: Mapping[str, Any]) -> Body:
        disposition = outcomes.parse(body)
        mapped = outcomes.map_callcenter(disposition.values, self.rules(), self.region)
        warnings = [*mapped.warnings, *await self._advisor_warnings(disposition)]
        async with self.unit() as crm:
            lead = await find_project(crm, disposition.project_id)
            if outcomes.already_applied(lead.fields.get("dispositions"), disposition):
                return _disposition_body(lead, disposition, repeat=True, warnings=[])
            lead = await self._apply(crm, lead, disposition, mapped)
        return _disposition_body(lead, disposition, repeat=False, warnings=warnings)

    async def _apply(self, crm: Crm, lead: Lead, disposition: outcomes.Disposition,
                     mapped: Mapped) -> Lead:
        if lead.contact_id is not None and mapped.contact:
            contact = await crm.get(Contact, lead.contact_id)
            await self._refresh(crm, contact, contact_changes(contact, mapped, overwrite=True))
        changes = outcomes.effects(disposition, self.clock())
        history = lead.fields.get("dispositions")
        changes["fields"].update(
            {**mapped.lead.fields, "dispositions": [
                *(history if isinstance(history, list) else []), disposition.key]})
        for key, values in (("callcenter_extra", mapped.extra), ("rejected", mapped.rejected)):
            if values:
                changes["fields"][key] = {**(lead.fields.get(key) or {}), **values}
        return await self.records.update(Lead, lead.id or 0, changes, crm=crm)

    async def _advisor_warnings(self, disposition: outcomes.Disposition) -> list[str]:
        advisor = disposition.followed_by
        if advisor is None:
            return []
        if disposition.outcome == "INEXPLOITABLE":
            return [f"followed_by {advisor!r} ignored: an INEXPLOITABLE lead stays with the "
                    "call-center team"]
        employees = {e.extension for e in await self.store.list_employees()}
        if employees and advisor not in employees:
            return [f"followed_by {advisor!r} is not a known employee extension"]
        return []

    # -- GET /api/leads/{id}/callcenter -----------------------------------------------------

    async def export(self, lead_id: int) -> Body:
        crm = self.records.crm
        lead = await crm.get(Lead, lead_id)
        contact = None if lead.contact_id is None else await crm.get(Contact, lead.contact_id)
        return outcomes.export(lead, contact, self.rules())


async def find_project(crm: Crm, project_id: str) -> Lead:
    """The lead with that project id (the id embeds its contact's id: one indexed read)."""
    contact_id = project_contact(project_id)
    leads = [] if contact_id is None else await crm.select(Lead, {"contact_id": contact_id},
                                                           limit=1000)
    wanted = project_id.strip().upper()
    for lead in leads:
        if str(lead.fields.get(PROJECT_ID, "")).upper() == wanted:
            return lead
    raise NotFound(f"no lead with project id {project_id!r}")


def _intake_body(match: Match, mapped: Mapped, contact: Contact, lead: Lead,
                 organization_id: int | None) -> Body:
    warnings = list(mapped.warnings)
    if not mapped.phones and not mapped.emails:
        warnings.append("no valid phone or e-mail: the lead could not be matched to a known "
                        "contact")
    if match.lead is None and not mapped.consent:  # no RGPD key, RGPD=0 or not a yes/no
        warnings.append("no consent (RGPD) given: the lead is stored with consent false")
    return {"result": "updated" if match.path == "open-lead" else "created",
            "match": match.path, "matched_by": sorted(match.matched_by),
            "lead_id": lead.id, "project_id": lead.fields.get(PROJECT_ID),
            "contact_id": contact.id, "organization_id": organization_id,
            "consent": bool(lead.fields.get("consent", False)),
            "unknown_fields": sorted(mapped.extra), "warnings": warnings}


def _disposition_body(lead: Lead, disposition: outcomes.Disposition, *, repeat: bool,
                      warnings: list[str]) -> Body:
    return {"result": "applied", "repeat": repeat, "lead_id": lead.id,
            "project_id": lead.fields.get(PROJECT_ID), "outcome": disposition.outcome,
            "reason": disposition.reason, "status": lead.status,
            "status_reason": lead.fields.get("status_reason"),
            "project_status": lead.fields.get("project_status"),
            "owner": lead.owner, "team": lead.team,
            "conclusion_code": lead.fields.get("conclusion_code"), "warnings": warnings}
