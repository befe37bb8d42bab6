"""Lead and contact scoring (§8.3): points per criterion, in the routing condition language.

Pure. Also home of what scoring and workflows share: the record context conditions read
(`contact.job_title`, custom fields under the same prefix as in routing: `contact.city`),
the adapter from `agent.rules` condition rows to compiled conditions, and the validation
of a rules file with errors naming its file, line and entry.

A lead's score is its criteria evaluated over the lead, its contact and its account; the
contact's score (`caller.score` in routing) is the same over the contact, its newest open
lead (none: contact only) and its account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ValidationError

from agent.model import Contact, Lead, Organization, flatten
from agent.rules.conditions import (
    AllOf,
    AnyOf,
    BareField,
    Condition,
    Context,
    Field,
    FieldCondition,
    NotOf,
)
from agent.rules.errors import RulesError
from agent.rules.schema import (
    AllRow,
    AnyRow,
    Conditional,
    FieldRow,
    Name,
    NotRow,
    ScheduleRow,
    Strict,
)
from agent.rules.source import Document, KeyPath, read_yaml

M = TypeVar("M", bound=BaseModel)
MODULES: Final = ("contact", "lead", "account")
Row = FieldRow | ScheduleRow | AllRow | AnyRow | NotRow
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


# -- the context conditions read ----------------------------------------------------------

def record_context(contact: Contact | None, lead: Lead | None,
                   account: Organization | None) -> dict[str, Any]:
    ctx = {**flatten("contact", contact), **flatten("lead", lead),
           **flatten("account", account)}
    if contact is not None:
        ctx["contact.name"] = contact.name
    return ctx


# -- conditions: agent.rules rows -> compiled conditions ----------------------------------

def field_of(name: str, modules: Sequence[str] = MODULES) -> Field:
    """`contact.city` or a bare `city` (searched in contact, lead, account); ValueError."""
    prefix, dot, _rest = name.partition(".")
    if not dot:
        return BareField(name, modules)
    if prefix not in modules:
        raise ValueError(f"unknown field {name!r} (expected FIELD or MODULE.FIELD with "
                         f"MODULE one of {', '.join(modules)})")
    return Field(name)


def compile_condition(row: Row | None, doc: Document, path: KeyPath) -> Condition:
    """The adapter to `agent.rules.conditions`; schedules are for routing only."""
    match row:
        case None:
            return Condition()
        case FieldRow():
            try:
                return FieldCondition(field_of(row.field), row.op, row.value)
            except ValueError as exc:
                raise error(doc, (*path, "field"), str(exc)) from None
        case AllRow():
            return AllOf(compile_condition(r, doc, (*path, "all", i))
                         for i, r in enumerate(row.all))
        case AnyRow():
            return AnyOf(compile_condition(r, doc, (*path, "any", i))
                         for i, r in enumerate(row.any))
        case NotRow():
            return NotOf(compile_condition(row.not_, doc, (*path, "not")))
        case ScheduleRow():
            raise error(doc, path, "schedules are only available in routing rules")
    raise AssertionError(row)  # pragma: no cover


def holds(condition: Condition, ctx: Context) -> bool:
    return condition.test(ctx, _EPOCH)[0]


# -- rules files: YAML with lines -> validated model --------------------------------------

def entry_name(doc: Document, path: KeyPath) -> str | None:
    """The `name:` of the list entry a path is in (`criteria: [{name: ...}]`)."""
    if len(path) < 2 or not isinstance(path[1], int):
        return None
    try:
        entry = doc.data[path[0]][path[1]]
    except (TypeError, KeyError, IndexError):
        return None
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name else f"#{path[1] + 1}"


def error(doc: Document, path: KeyPath, message: str) -> RulesError:
    return RulesError(doc.source, doc.line(path), entry_name(doc, path), message)


def validated(text: str, source: str, model: type[M]) -> tuple[M, Document]:
    """Parse and validate a rules file; the first error (top of file) is a RulesError."""
    doc = read_yaml(text, source)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise RulesError(source, doc.line(()), None, "expected a mapping at the top level")
    try:
        return model.model_validate(data), doc
    except ValidationError as exc:
        first = min(exc.errors(include_url=False),
                    key=lambda e: doc.line(doc.locate(e["loc"])) or 0)
        path = doc.locate(first["loc"])
        raise error(doc, path, _message(first, path)) from None


def _message(error: Any, path: KeyPath) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "rules":
        return str(error.get("ctx", {}).get("detail", error["msg"]))
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return f"missing key {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    label = next((str(p) for p in reversed(path) if isinstance(p, str)), "")
    return f"{label}: {message}" if label else message


# -- scoring ------------------------------------------------------------------------------

class CriterionSpec(Conditional):
    name: Name
    points: int


class ScoringSpec(Strict):
    criteria: list[CriterionSpec] = pydantic.Field(default_factory=list)


@dataclass(frozen=True)
class Criterion:
    name: str
    condition: Condition
    points: int


class ScoringRules:
    """Compiled criteria; `score(ctx)` is the sum of the points of those that hold."""

    def __init__(self, criteria: Iterable[Criterion]) -> None:
        self.criteria = tuple(criteria)

    def hits(self, ctx: Context) -> list[Criterion]:
        return [c for c in self.criteria if holds(c.condition, ctx)]

    def score(self, ctx: Context) -> int:
        return sum(c.points for c in self.hits(ctx))

    def lead_score(self, lead: Lead, contact: Contact | None,
                   account: Organization | None) -> int:
        return self.score(record_context(contact, lead, account))

    def contact_score(self, contact: Contact, leads: Sequence[Lead],
                      account: Organization | None) -> int:
        return self.score(record_context(contact, newest_open(leads), account))


def newest_open(leads: Sequence[Lead]) -> Lead | None:
    return max((lead for lead in leads if lead.status == "open"),
               key=lambda lead: lead.id or 0, default=None)


def parse_scoring(text: str, source: str = "scoring.yaml") -> ScoringRules:
    spec, doc = validated(text, source, ScoringSpec)
    criteria = []
    for index, item in enumerate(spec.criteria):
        path: KeyPath = ("criteria", index)
        condition = compile_condition(item.condition(), doc, item.condition_path(path))
        criteria.append(Criterion(item.name, condition, item.points))
    return ScoringRules(criteria)


def scores(rules: ScoringRules, contact: Contact, leads: Sequence[Lead],
           account: Organization | None) -> tuple[int, Mapping[int, int]]:
    """(contact score, {lead id: lead score}) for a contact and all its leads."""
    by_lead = {lead.id: rules.lead_score(lead, contact, account)
               for lead in leads if lead.id is not None}
    return rules.contact_score(contact, leads, account), by_lead
