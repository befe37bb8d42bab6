"""Lead and contact scoring (§8.3): points per criterion, in the routing condition language.

Pure. Conditions are compiled and the file validated by the rules toolkit (`agent.core.rules`);
they read the record context (`agent.core.rules.records`: `contact.job_title`, custom fields
under the same prefix as in routing: `contact.city`).

A lead's score is its criteria evaluated over the lead, its contact and its account; the
contact's score (`caller.score` in routing) is the same over the contact, its newest open
lead (none: contact only) and its account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pydantic

from agent.core.model import Contact, Lead, Organization
from agent.core.rules import compile_condition, parse_file
from agent.core.rules.conditions import Condition, Context
from agent.core.rules.records import holds, record_context, record_field
from agent.core.rules.schema import Conditional, Name, Strict
from agent.core.rules.source import KeyPath

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
    spec, doc = parse_file(text, source, ScoringSpec)
    criteria = []
    for index, item in enumerate(spec.criteria):
        path: KeyPath = ("criteria", index)
        condition = compile_condition(item.condition(), item.condition_path(path), doc,
                                      record_field)
        criteria.append(Criterion(item.name, condition, item.points))
    return ScoringRules(criteria)


def scores(rules: ScoringRules, contact: Contact, leads: Sequence[Lead],
           account: Organization | None) -> tuple[int, Mapping[int, int]]:
    """(contact score, {lead id: lead score}) for a contact and all its leads."""
    by_lead = {lead.id: rules.lead_score(lead, contact, account)
               for lead in leads if lead.id is not None}
    return rules.contact_score(contact, leads, account), by_lead
