"""Wiring of the leads feature (§8) into the running agent (see `agent.app.FEATURES`).

Reads `intake.yaml`, `scoring.yaml`, `workflows.yaml` (and the `blocklist:` of the
journal's `journal.yaml`) from the rules directory. At start a broken file stops the agent
with its file, line and key; a missing one turns its feature off (intake: built-in default
mapping; scoring and workflows: nothing runs). The files reload with the rest of the rules
directory (`agent.rules.reload`): a broken save is logged and the last good version stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.config import ConfigError
from agent.http import add_routes
from agent.http.leads import LEAD_DESK, LeadDesk, routes
from agent.http.ops import READY_CHECKS, ReadyCheck
from agent.intake import IntakeRules
from agent.model import Contact, Lead, Organization
from agent.records import Event
from agent.rules import RulesError, parse_file
from agent.rules.reload import Reloadable
from agent.scoring import ScoringRules, parse_scoring, scores
from agent.services import Services
from agent.store import Store
from agent.workflow_runner import WorkflowRunner, related
from agent.workflows import parse_workflows

log = logging.getLogger("agent.leads")
T = TypeVar("T")


def rules_file(path: Path, parse: Callable[[str, str], T]) -> Reloadable[T | None]:
    """An optional rules file (missing: None, the feature is off)."""

    def read(file: Path) -> T:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(str(file), None, None, f"cannot read: {exc}") from exc
        return parse(text, str(file))

    return Reloadable(path, read, missing=lambda: None)


class ScoreKeeper:
    """The `Records` hook recomputing scores; it writes `score` with the store directly,
    so its own write triggers no hook (and no loop)."""

    def __init__(self, rules: Callable[[], ScoringRules | None]) -> None:
        self.rules = rules

    async def __call__(self, store: Store, event: Event, record: BaseModel,
                       changed: frozenset[str]) -> None:
        rules = self.rules()
        if rules is None:
            return
        if isinstance(record, Contact) and record.id is not None:
            await rescore(store, rules, record.id)
        elif isinstance(record, Lead) and record.contact_id is not None:
            await rescore(store, rules, record.contact_id)
        elif isinstance(record, Lead) and record.id is not None:
            await _rescore_lone_lead(store, rules, record)
        elif isinstance(record, Organization) and record.id is not None and event == "update":
            for contact in await store.select(Contact, {"organization_id": record.id},
                                            limit=1000):
                await rescore(store, rules, contact.id or 0)


async def rescore(store: Store, rules: ScoringRules, contact_id: int) -> None:
    contact = await related(store, Contact, contact_id)
    if contact is None:  # a lead pointing at no contact: scored on its own
        for lead in await store.select(Lead, {"contact_id": contact_id}, limit=1000):
            await _rescore_lone_lead(store, rules, lead)
        return
    leads = await store.select(Lead, {"contact_id": contact_id}, limit=1000)
    account = await related(store, Organization, contact.organization_id)
    contact_score, lead_scores = scores(rules, contact, leads, account)
    for lead in leads:
        if lead.id is not None and lead.score != lead_scores[lead.id]:
            await store.update(Lead, lead.id, {"score": lead_scores[lead.id]})
    if contact.score != contact_score:
        await store.update(Contact, contact_id, {"score": contact_score})


async def _rescore_lone_lead(store: Store, rules: ScoringRules, lead: Lead) -> None:
    account = await related(store, Organization, lead.organization_id)
    score = rules.lead_score(lead, None, account)
    if score != lead.score and lead.id is not None:
        await store.update(Lead, lead.id, {"score": score})


def _intake(text: str, source: str) -> IntakeRules:
    return parse_file(text, source, IntakeRules)[0]


def _loaded(services: Services, holder: Reloadable[T]) -> Reloadable[T]:
    try:
        holder.load_now()
    except RulesError as exc:
        raise ConfigError(str(exc)) from None
    return services.rules_files.add(holder)


async def wire(services: Services) -> LeadDesk:
    """Load the rules files, register the record hooks, add the routes; returns the desk."""
    records, directory = services.records, services.rules_files.directory
    intake = _loaded(services, rules_file(directory / "intake.yaml", _intake))
    scoring = _loaded(services, rules_file(directory / "scoring.yaml", parse_scoring))
    workflows = _loaded(services, rules_file(directory / "workflows.yaml", parse_workflows))
    default_rules = IntakeRules.model_validate({})
    records.hooks += [ScoreKeeper(scoring.current), WorkflowRunner(records, workflows.current)]
    desk = LeadDesk(records, services.config.region, lambda: intake.current() or default_rules,
                    services.is_blocked)
    services.app[LEAD_DESK] = desk
    add_routes(services.app, routes())
    services.app[READY_CHECKS]["leads"] = _ready((intake, scoring, workflows))
    return desk


def _ready(holders: Sequence[Reloadable[Any]]) -> ReadyCheck:
    """Ready with the last good rules; a broken save is shown until it is fixed."""
    async def check() -> tuple[bool, object]:
        errors = {holder.path.name: holder.error for holder in holders if holder.error}
        return True, errors or "ok"

    return check
