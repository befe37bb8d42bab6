"""Scores kept up to date (§8.3): the `Records` hook that recomputes a contact's and its
leads' scores after any write that can change them (contact, lead, or an organization's
update for its contacts)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from agent.core.model import Contact, Lead, Organization
from agent.crm.port import Crm
from agent.crm.records import Event
from agent.leads.scoring import ScoringRules, scores
from agent.leads.workflow_runner import related


class ScoreKeeper:
    """The `Records` hook recomputing scores; it writes `score` through the CRM port directly,
    so its own write triggers no hook (and no loop)."""

    def __init__(self, rules: Callable[[], ScoringRules | None]) -> None:
        self.rules = rules

    async def __call__(self, crm: Crm, event: Event, record: BaseModel,
                       changed: frozenset[str]) -> None:
        rules = self.rules()
        if rules is None:
            return
        if isinstance(record, Contact) and record.id is not None:
            await rescore(crm, rules, record.id)
        elif isinstance(record, Lead) and record.contact_id is not None:
            await rescore(crm, rules, record.contact_id)
        elif isinstance(record, Lead) and record.id is not None:
            await _rescore_lone_lead(crm, rules, record)
        elif isinstance(record, Organization) and record.id is not None and event == "update":
            for contact in await crm.select(Contact, {"organization_id": record.id},
                                            limit=1000):
                await rescore(crm, rules, contact.id or 0)


async def rescore(crm: Crm, rules: ScoringRules, contact_id: int) -> None:
    contact = await related(crm, Contact, contact_id)
    if contact is None:  # a lead pointing at no contact: scored on its own
        for lead in await crm.select(Lead, {"contact_id": contact_id}, limit=1000):
            await _rescore_lone_lead(crm, rules, lead)
        return
    leads = await crm.select(Lead, {"contact_id": contact_id}, limit=1000)
    account = await related(crm, Organization, contact.organization_id)
    contact_score, lead_scores = scores(rules, contact, leads, account)
    for lead in leads:
        if lead.id is not None and lead.score != lead_scores[lead.id]:
            await crm.update(Lead, lead.id, {"score": lead_scores[lead.id]})
    if contact.score != contact_score:
        await crm.update(Contact, contact_id, {"score": contact_score})


async def _rescore_lone_lead(crm: Crm, rules: ScoringRules, lead: Lead) -> None:
    account = await related(crm, Organization, lead.organization_id)
    score = rules.lead_score(lead, None, account)
    if score != lead.score and lead.id is not None:
        await crm.update(Lead, lead.id, {"score": score})
