"""The call-center side (§8.2): outcomes and their lead changes, the values the call center
sends back, and the export it gets (`locked` / `editable` fields by web-service key).

Pure. Reasons are matched ignoring case, accents, repeated spaces and the abbreviations
in parentheses (`ne parle pas francais` is `NE PARLE PAS FRANÇAIS`; `TRA` is `TRANSFERT
ABOUTI`), and stored in their canonical spelling. A reason from another outcome's list is
refused, naming the reasons the outcome allows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel

from agent.core.model import Contact, Lead
from agent.leads.intake import (
    AGENT_FIELDS,
    PROJECT_ID,
    IntakeRules,
    Mapped,
    Target,
    blank,
    map_values,
    parse_target,
)

Outcome = Literal["ACCORD", "REFUS", "INEXPLOITABLE"]
REASONS: Final[dict[str, tuple[str, ...]]] = {
    "ACCORD": ("RDV PHYSIQUE", "TRANSFERT ABOUTI", "RDV TELEPHONIQUE",
               "TRANSFERT NON ABOUTI", "ENVOI DE DOCUMENT"),
    "REFUS": ("SURFACE TROP PETITE", "PROGRAMME CLOTURE", "PLUS DE DISPO DE LOT",
              "PAS INTERESSE", "NOUVEAUX PROGRAMMES", "NOUS RECONTACTE", "LIVRAISON TARDIVE",
              "HORS BUDGET"),
    "INEXPLOITABLE": ("FAUX NUMERO", "INJOIGNABLES PERMANENTS", "HORS CIBLE", "APPELS ADMIN",
                      "NE PARLE PAS FRANÇAIS", "DOUBLONS", "WRONG NUMBER SYSTEM",
                      "UNREACHABLE LIMIT"),
}
ABBREVIATIONS: Final = {"TRA": "TRANSFERT ABOUTI", "TRNA": "TRANSFERT NON ABOUTI"}
STATUS: Final[dict[str, tuple[str, str, str]]] = {
    # outcome: (status reason, project status, lead status)
    "ACCORD": ("EN COURS", "ACTIF", "open"),
    "REFUS": ("PERDU", "INACTIF", "lost"),
    "INEXPLOITABLE": ("ANNULE", "INACTIF", "lost"),
}
ALIASES: Final = {"factoryprojectid": "project_id", "cloture": "outcome", "motif": "reason",
                  "suivi_par": "followed_by", "commercial": "followed_by"}
_PAREN = re.compile(r"\([^)]*\)")
_SPACES = re.compile(r"[\s_-]+")


class DispositionError(ValueError):
    """A disposition that cannot be applied; `code` is a short machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def fold(text: str) -> str:
    """Upper case, no accents, no parenthesised abbreviation, single spaces."""
    decomposed = unicodedata.normalize("NFKD", _PAREN.sub(" ", text))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", bare).strip().upper()


_CANONICAL: Final = {outcome: {fold(reason): reason for reason in reasons}
                     for outcome, reasons in REASONS.items()}


def parse_outcome(raw: Any) -> Outcome:
    text = fold(str(raw or ""))
    if text not in REASONS:
        raise DispositionError("invalid-outcome", f"outcome {raw!r} is not one of "
                                                  f"{', '.join(REASONS)}")
    return text  # type: ignore[return-value]


def parse_reason(outcome: Outcome, raw: Any) -> str:
    text = fold(str(raw or ""))
    text = ABBREVIATIONS.get(text, text)
    canonical = _CANONICAL[outcome].get(text)
    if canonical is None:
        raise DispositionError(
            "invalid-reason", f"reason {raw!r} is not allowed for {outcome} (allowed: "
                              f"{', '.join(REASONS[outcome])})")
    return canonical


@dataclass(frozen=True)
class Disposition:
    project_id: str
    outcome: Outcome
    reason: str
    followed_by: str | None
    values: Mapping[str, Any]

    @property
    def key(self) -> str:
        """What makes a repeat a repeat (§8.2 idempotence)."""
        return f"{self.outcome}/{self.reason}"


def parse(body: Mapping[str, Any]) -> Disposition:
    """Read a disposition (JSON or form keys; `fields: {...}` or flat free fields)."""
    data = canonical_keys(body)
    project = str(data.pop("project_id", "") or "").strip()
    if not project:
        raise DispositionError("invalid", "project_id: required (the project id the lead "
                                          "was exported with)")
    outcome = parse_outcome(data.pop("outcome", None))
    reason = parse_reason(outcome, data.pop("reason", None))
    followed_by = str(data.pop("followed_by", "") or "").strip() or None
    if followed_by is None and outcome != "INEXPLOITABLE":
        raise DispositionError("invalid", f"followed_by: required for {outcome} (the advisor "
                                          "who takes the lead over)")
    nested = data.pop("fields", None) or {}
    if not isinstance(nested, Mapping):
        raise DispositionError("invalid", "fields: must be an object of free fields")
    return Disposition(project, outcome, reason, followed_by, {**data, **nested})


def canonical_keys(body: Mapping[str, Any]) -> dict[str, Any]:
    """Seed-document names (`factoryprojectid`, `suivi_par`, ...) as ours; ours win."""
    data: dict[str, Any] = {}
    for key, value in body.items():
        name = ALIASES.get(str(key).casefold(), str(key))
        if name == str(key) or name not in data:
            data[name] = value
    return data


def effects(disposition: Disposition, now: datetime) -> dict[str, Any]:
    """Lead changes of an outcome: who follows it, its status reason and project status.

    ACCORD and REFUS leave the call-center team for the advisor; INEXPLOITABLE stays with
    the team and the reason becomes the project's conclusion code.
    """
    status_reason, project_status, status = STATUS[disposition.outcome]
    fields: dict[str, Any] = {
        "outcome": disposition.outcome, "closing_reason": disposition.reason,
        "status_reason": status_reason, "project_status": project_status,
        "disposed_at": now.isoformat(timespec="seconds"),
    }
    changes: dict[str, Any] = {"status": status, "fields": fields}
    if disposition.outcome == "INEXPLOITABLE":
        fields["conclusion_code"] = disposition.reason
    else:
        fields["followed_by"] = disposition.followed_by
        changes.update(owner=disposition.followed_by, team=None)
    return changes


def already_applied(history: Any, disposition: Disposition) -> bool:
    return isinstance(history, list) and disposition.key in history


# -- what the call center sends back ------------------------------------------------------

def map_callcenter(values: Mapping[str, Any], rules: IntakeRules, region: str) -> Mapped:
    """Map what the call center sends back: editable and free fields; locked ones are
    refused with a warning (they belong to marketing), unknown ones kept in `extra`."""
    editable = {k: t for k, t in rules.mapping.items() if not t.locked}
    locked = [k for k, t in rules.mapping.items() if t.locked] + list(AGENT_FIELDS)
    return map_values(values, {**rules.free_fields, **editable}, region, locked)


# -- the export to the call-center tool ---------------------------------------------------

def read_target(target: Target, contact: Contact | None, lead: Lead) -> Any:
    """The current value at a target; blank values read as None (an empty field)."""
    value = _read(target, contact, lead)
    return None if blank(value) else value


def _read(target: Target, contact: Contact | None, lead: Lead) -> Any:
    record: BaseModel | None = lead if target.module == "lead" else contact
    if target.module == "organization" or record is None:
        return None
    if target.kind == "attr":
        return getattr(record, target.name)
    custom: Mapping[str, Any] = getattr(record, "fields", {})
    if target.kind == "field":
        return custom.get(target.name)
    listed = contact.phones if target.kind == "phone" else contact.emails  # type: ignore[union-attr]
    if target.name:
        return custom.get(f"{target.name}_{target.kind}")
    return listed[0] if listed else None


def export(lead: Lead, contact: Contact | None, rules: IntakeRules) -> dict[str, Any]:
    """The lead as the call-center tool gets it: locked and editable fields, by form key."""
    locked = {key: read_target(parse_target(text), contact, lead)
              for key, text in AGENT_FIELDS.items()}
    editable: dict[str, Any] = {}
    for key, target in rules.mapping.items():
        if target.module != "organization":
            group = locked if target.locked else editable
            group[key] = read_target(target, contact, lead)
    for key, target in rules.free_fields.items():
        editable.setdefault(key, read_target(target, contact, lead))
    return {"lead_id": lead.id, "contact_id": lead.contact_id,
            "project_id": lead.fields.get(PROJECT_ID),
            "consent": bool(lead.fields.get("consent", False)),
            "team": lead.team, "owner": lead.owner,
            "status_reason": lead.fields.get("status_reason"),
            "project_status": lead.fields.get("project_status"),
            "locked": locked, "editable": editable}
