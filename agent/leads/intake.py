"""Web-form leads (§8.1): field mapping and dedupe decision.

Pure: the HTTP layer reads the body and the store; this module turns a form into record
patches and picks which contact / lead a submission belongs to. The mapping targets are
shared with the call-center side (`agent.leads.dispositions`): lead targets are its `locked`
fields, contact targets its `editable` ones.

A mapping target names where a form value goes:
`contact.first_name|last_name|job_title`, `contact.fields.NAME`, `contact.phones[.KIND]`,
`contact.emails[.KIND]` (appended to the list; with a KIND also kept as `fields.KIND_phone`
/ `fields.KIND_email` so the export can give it back under its own key),
`lead.title|owner|utm_source|utm_medium|utm_campaign`, `lead.fields.NAME`,
`organization.name`, `organization.fields.NAME`. `lead.fields.consent` is read as yes/no.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agent.core.model import Contact, Lead
from agent.core.phones import normalize
from agent.core.text import fold
from agent.journal.association import primary_order

log = logging.getLogger("agent.intake")
Module = Literal["contact", "lead", "organization"]
Kind = Literal["attr", "field", "phone", "email"]
ATTRIBUTES: dict[str, frozenset[str]] = {
    "contact": frozenset({"first_name", "last_name", "job_title"}),
    "lead": frozenset({"title", "owner", "utm_source", "utm_medium", "utm_campaign"}),
    "organization": frozenset({"name"}),
}
_NAME = re.compile(r"[A-Za-z_][\w-]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CONSENT = "lead.fields.consent"
PROJECT_ID = "project_id"
ACQUISITION_DATE = "acquisition_date"
YES = frozenset({"1", "true", "yes", "y", "oui", "o", "on", "ok", "accepte", "accepté"})
NO = frozenset({"0", "false", "no", "n", "non", "off", "refuse", "refusé"})

DEFAULT_MAPPING: dict[str, str] = {
    "code_postal": "contact.fields.postal_code",
    "adresse": "contact.fields.street1",
    "adresse2": "contact.fields.street2",
    "ville": "contact.fields.city",
    "email": "contact.emails",
    "prenom": "contact.first_name",
    "nom": "contact.last_name",
    "tel_mobile": "contact.phones.mobile",
    "tel_fixe": "contact.phones.personal",
    "salutation": "contact.fields.salutation",
    "code_programme": "lead.fields.main_programme",
    "projet_immo": "lead.fields.customer_project",
    "commentaire": "lead.fields.requirement_description",
    "utm_campaign": "lead.utm_campaign",
    "utm_canal": "lead.fields.channel",
    "utm_source": "lead.utm_source",
    "utm_medium": "lead.utm_medium",
    "RGPD": CONSENT,
}
AGENT_FIELDS: dict[str, str] = {
    "date_acquisition": f"lead.fields.{ACQUISITION_DATE}",
    "factoryprojectid": f"lead.fields.{PROJECT_ID}",
}
DEFAULT_FREE_FIELDS: dict[str, str] = {
    "action": "lead.fields.action",
    "commercial": "lead.owner",
    "conclusioncode": "lead.fields.conclusion_code",
    "callcenterprojectid": "lead.fields.callcenter_id",
    "situation_logement": "lead.fields.housing_situation",
    "objectif_achat": "lead.fields.purchase_goal",
    "budget_max": "lead.fields.max_budget",
    "horaire_rappel": "lead.fields.preferred_appointment",
    "profession": "contact.job_title",
    "type_bien": "lead.fields.asset_type",
    "nature_bien": "lead.fields.operation_nature",
    "email2": "contact.emails.secondary",
    "tel_professionnel": "contact.phones.professional",
    "dept_rech": "lead.fields.searched_department",
    "ville_rech": "lead.fields.searched_cities",
    "primo_accédant": "lead.fields.first_time_buyer",
    "projet_détail": "lead.fields.detailed_project",
    "horizon_invest": "lead.fields.investment_horizon",
}


@dataclass(frozen=True)
class Target:
    module: Module
    kind: Kind
    name: str

    @property
    def locked(self) -> bool:
        """Lead data is the marketing side's (locked); contact data is the call center's."""
        return self.module == "lead"

    def __str__(self) -> str:
        if self.kind in ("phone", "email"):
            return f"{self.module}.{self.kind}s" + (f".{self.name}" if self.name else "")
        prefix = "fields." if self.kind == "field" else ""
        return f"{self.module}.{prefix}{self.name}"


def parse_target(text: str) -> Target:
    """`contact.fields.city` -> Target; ValueError naming the accepted forms."""
    module, _, rest = text.strip().partition(".")
    if module not in ATTRIBUTES:
        raise ValueError(f"unknown target {text!r} (expected contact.*, lead.* or "
                         "organization.*)")
    head, _, tail = rest.partition(".")
    if module == "contact" and head in ("phones", "emails") and (
            not tail or _NAME.fullmatch(tail)):
        return Target("contact", "phone" if head == "phones" else "email", tail)
    if head == "fields" and _NAME.fullmatch(tail):
        return Target(module, "field", tail)  # type: ignore[arg-type]
    if not tail and head in ATTRIBUTES[module]:
        return Target(module, "attr", head)  # type: ignore[arg-type]
    names = ", ".join(sorted(ATTRIBUTES[module]))
    lists = ", phones[.KIND], emails[.KIND]" if module == "contact" else ""
    raise ValueError(f"unknown target {text!r} (expected {module}.fields.NAME{lists} or one "
                     f"of {module}.{{{names}}})")


def _target(value: Any) -> Any:
    return parse_target(value) if isinstance(value, str) else value


TargetText = Annotated[Target, BeforeValidator(_target)]


class IntakeRules(BaseModel):
    """`rules/intake.yaml`: which team gets web leads, and where each form key goes."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    team: str = Field("call-center", min_length=1)
    mapping: dict[str, TargetText] = Field(default_factory=lambda: _targets(DEFAULT_MAPPING))
    free_fields: dict[str, TargetText] = Field(
        default_factory=lambda: _targets(DEFAULT_FREE_FIELDS))


def _targets(table: Mapping[str, str]) -> dict[str, Target]:
    return {key: parse_target(text) for key, text in table.items()}


def fold_key(key: str) -> str:
    """Form keys match ignoring case and accents (`primo_accedant` is `primo_accédant`)."""
    return fold(key.strip())


def _lookup(table: Mapping[str, Target], key: str) -> tuple[str, Target] | None:
    if key in table:
        return key, table[key]
    folded = fold_key(key)
    return next(((k, t) for k, t in table.items() if fold_key(k) == folded), None)


# -- mapping a form -----------------------------------------------------------------------

@dataclass
class Patch:
    """Values for one record: attributes, custom fields, phones and e-mails (with kinds)."""

    attrs: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    phones: list[tuple[str, str]] = field(default_factory=list)
    emails: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.attrs or self.fields or self.phones or self.emails)


@dataclass
class Mapped:
    """A form turned into record patches, plus what could not be used and why."""

    contact: Patch = field(default_factory=Patch)
    lead: Patch = field(default_factory=Patch)
    organization: Patch = field(default_factory=Patch)
    consent: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def phones(self) -> list[str]:
        return [number for number, _ in self.contact.phones]

    @property
    def emails(self) -> list[str]:
        return [email for email, _ in self.contact.emails]

    def patch(self, module: Module) -> Patch:
        return {"contact": self.contact, "lead": self.lead,
                "organization": self.organization}[module]


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def parse_yes_no(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().casefold()
    return True if text in YES else False if text in NO else None


def map_form(form: Mapping[str, Any], rules: IntakeRules, region: str) -> Mapped:
    """Map a web form; unknown keys go to `extra`, unusable values to `rejected`."""
    return map_values(form, rules.mapping, region)


def map_values(values: Mapping[str, Any], table: Mapping[str, Target], region: str,
               locked: Sequence[str] = ()) -> Mapped:
    mapped = Mapped()
    refused = {fold_key(key) for key in locked}
    for key, value in values.items():
        if blank(value):
            continue
        entry = _lookup(table, key)
        if entry is None and fold_key(key) in refused:
            mapped.warnings.append(f"{key}: locked field, not changed")
        elif entry is None:
            mapped.extra[key] = value
        elif isinstance(value, dict | list):
            mapped.rejected[key] = value
            mapped.warnings.append(f"{key}: expected a single value, kept in lead.fields.rejected")
        else:
            put(mapped, key, entry[1], value, region)
    return mapped


def put(mapped: Mapped, key: str, target: Target, value: Any, region: str) -> None:
    """Place one value; an unusable phone, e-mail or consent is kept as text with a warning."""
    text = value if isinstance(value, bool) else str(value).strip()  # CRM fields are text
    patch = mapped.patch(target.module)
    if target.kind == "phone":
        number = normalize(str(text), region)
        if number is None:
            _reject(mapped, key, value, "is not a valid phone number")
        else:
            patch.phones.append((number, target.name))
    elif target.kind == "email":
        if _EMAIL.fullmatch(str(text)):
            patch.emails.append((str(text), target.name))
        else:
            _reject(mapped, key, value, "is not a valid e-mail address")
    elif str(target) == CONSENT:
        mapped.consent = parse_yes_no(text)
        if mapped.consent is None:
            _reject(mapped, key, value, "is not a yes/no value: consent not given")
            mapped.consent = False
    elif target.kind == "field":
        patch.fields[target.name] = text
    else:
        patch.attrs[target.name] = str(text)


def _reject(mapped: Mapped, key: str, value: Any, why: str) -> None:
    mapped.rejected[key] = value
    mapped.warnings.append(f"{key}: {value!r} {why}; kept in lead.fields.rejected")


# -- dedupe -------------------------------------------------------------------------------

Dedupe = Literal["open-lead", "known-contact", "new-person"]


@dataclass(frozen=True)
class Candidate:
    """A contact the store found by one of the submitted phones or e-mails."""

    contact: Contact
    leads: Sequence[Lead]
    matched_by: frozenset[str]

    @property
    def open_lead(self) -> Lead | None:
        open_leads = [lead for lead in self.leads if lead.status == "open"]
        return max(open_leads, key=lambda lead: lead.id or 0, default=None)


@dataclass(frozen=True)
class Match:
    path: Dedupe
    contact: Contact | None = None
    lead: Lead | None = None
    matched_by: frozenset[str] = frozenset()


def decide(candidates: Sequence[Candidate]) -> Match:
    """Open lead of a matching contact, else a matching contact, else a new person.

    Among several contacts (a shared number), one with an open lead wins, then the one
    matched by both phone and e-mail, then §6's primary contact rule (linked to an
    organization, has a job title, first alphabetically, oldest).
    """
    if not candidates:
        return Match("new-person")
    best = min(candidates, key=_rank)
    lead = best.open_lead
    return Match("open-lead" if lead else "known-contact", best.contact, lead, best.matched_by)


def _rank(candidate: Candidate) -> tuple[Any, ...]:
    return (candidate.open_lead is None, -len(candidate.matched_by),
            *primary_order(candidate.contact))
