"""Scoring (§8.3): criteria in the routing condition language, over contact and leads."""

from __future__ import annotations

import pytest

from agent.core.model import Contact, Lead, Organization
from agent.core.rules import RulesError
from agent.leads.scoring import parse_scoring, scores

RULES = parse_scoring("""\
criteria:
  - {name: e-mail, field: contact.emails, op: exists, points: 25}
  - {name: title, field: job_title, op: exists, points: 20}
  - {name: industry, field: account.industry, op: exists, points: 10}
  - {name: google, field: lead.utm_source, op: eq, value: google, points: 5}
  - name: opted out
    when: {any: [{field: contact.opted_out, op: eq, value: true},
                 {field: contact.member_status, op: contains, value: désabo}]}
    points: -100
""")


def test_points_add_up_per_criterion() -> None:
    contact = Contact(id=1, emails=["a@example.fr"], job_title="CTO")
    assert scores(RULES, contact, [], None)[0] == 45
    assert scores(RULES, contact, [], Organization(name="x", fields={"industry": "BTP"}))[0] == 55
    opted_out = contact.model_copy(update={"fields": {"member_status": "Désabonné"}})
    assert scores(RULES, opted_out, [], None)[0] == -55
    blank = Contact(id=2, job_title="  ", emails=[])
    assert scores(RULES, blank, [], None)[0] == 0


def test_each_lead_scores_itself_and_the_contact_takes_its_newest_open_lead() -> None:
    contact = Contact(id=1, emails=["a@example.fr"])
    leads = [Lead(id=1, contact_id=1, utm_source="Google"),
             Lead(id=2, contact_id=1, utm_source="bing"),
             Lead(id=3, contact_id=1, utm_source="google", status="lost")]
    contact_score, by_lead = scores(RULES, contact, leads, None)
    assert by_lead == {1: 30, 2: 25, 3: 30}
    assert contact_score == 25  # lead 2 is the newest open one


@pytest.mark.parametrize(("text", "message"), [
    ("criteria:\n  - {name: a, field: deal.x, op: exists, points: 1}\n",
     "scoring.yaml:2: rule 'a': unknown field 'deal.x'"),
    ("criteria:\n  - name: a\n    field: x\n    op: gt\n    points: 1\n",
     "scoring.yaml:2: rule 'a': operator 'gt' needs a single value"),
    ("criteria:\n  - {name: a, when: {schedule: office}, points: 1}\n",
     "schedules are only available in routing rules"),
    ("criteria:\n  - {name: a, field: x, op: exists}\n", "missing key 'points'"),
    ("criterias: []\n", "scoring.yaml:1: unknown key 'criterias'"),
])
def test_file_errors_name_the_line_and_criterion(text: str, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_scoring(text)
    assert message in str(caught.value)


def test_an_empty_file_scores_nothing() -> None:
    assert parse_scoring("").criteria == ()
