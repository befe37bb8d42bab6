"""Wiring of the leads feature (§8) into the running agent.

Reads `intake.yaml`, `scoring.yaml`, `workflows.yaml` (and the `blocklist:` of the
journal's `journal.yaml`) from the rules directory. At start a broken file stops the agent
with its file, line and key; a missing one turns its feature off (intake: built-in default
mapping; scoring and workflows: nothing runs). The files reload with the rest of the rules
directory (`agent.core.rules.reload`): a broken save is logged and the last good version stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.config import ConfigError
from agent.core.rules import RulesError, parse_file
from agent.core.rules.reload import Reloadable
from agent.http import add_routes
from agent.leads.http import LEAD_DESK, routes
from agent.leads.intake import IntakeRules
from agent.leads.score_keeper import ScoreKeeper
from agent.leads.scoring import parse_scoring
from agent.leads.service import LeadDesk
from agent.leads.workflow_runner import WorkflowRunner
from agent.leads.workflows import parse_workflows
from agent.ops.http import READY_CHECKS, ReadyCheck
from agent.services import Services

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
    desk = LeadDesk(services.store, records, services.config.region,
                    lambda: intake.current() or default_rules, services.is_blocked)
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
