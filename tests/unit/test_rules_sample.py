"""The shipped `rules/routing.yaml` loads and routes representative calls as documented."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.core.rules import Decision, RuleSet, load_rules

SHIPPED = Path(__file__).parents[2] / "rules"
PARIS = ZoneInfo("Europe/Paris")
TUESDAY_10 = datetime(2026, 3, 31, 10, 12, tzinfo=PARIS)
MAIN_DID = {"call.did": "+33140000000"}
KNOWN = {"caller.number": "+33611111111", "caller.known": True, "caller.anonymous": False,
         "caller.blocked": False}


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(SHIPPED)


def route(ruleset: RuleSet, ctx: dict[str, Any], now: datetime = TUESDAY_10) -> Decision:
    return ruleset.evaluate(ctx, now=now)


def test_shipped_rules_load_with_their_list_file(shipped: RuleSet) -> None:
    assert shipped.files == (str(SHIPPED / "routing.yaml"), str(SHIPPED / "spam.txt"))
    assert {"spam", "gold customers", "own manager", "office closed"} <= set(shipped.names)
    assert str(shipped.default.destination) == "queue:reception"
    assert shipped.default.audio == "welcome"


@pytest.mark.parametrize(("ctx", "now", "rule", "destination"), [
    ({"caller.number": "+33184880000"}, TUESDAY_10, "spam", "hangup"),
    ({"caller.number": "+33899123456"}, TUESDAY_10, "spam", "hangup"),
    ({**MAIN_DID, **KNOWN}, datetime(2026, 3, 31, 20, 0, tzinfo=PARIS), "office closed",
     "voicemail:100"),
    ({**MAIN_DID, **KNOWN}, datetime(2026, 3, 31, 23, 0, tzinfo=PARIS), "night desk",
     "number:+33170000000"),
    ({**MAIN_DID, **KNOWN}, datetime(2026, 12, 25, 10, 0, tzinfo=PARIS), "office closed",
     "voicemail:100"),
    ({"call.did": "+33150000000", **KNOWN, "contact.status": "OR"},
     datetime(2026, 3, 31, 20, 0, tzinfo=PARIS), "gold customers", "queue:vip"),
    ({"caller.number": "+32470123456"}, TUESDAY_10, "vip list", "queue:vip"),
    ({**MAIN_DID, **KNOWN, "contact.status": "or"}, TUESDAY_10, "gold customers", "queue:vip"),
    ({"call.location": "main", "call.dtmf": "1"}, TUESDAY_10, "ivr sales", "queue:sales"),
    ({"call.location": "main", "call.dtmf": "2", "queue.support.available": 0},
     TUESDAY_10, "ivr support overflow", "voicemail:200"),
    ({"call.location": "main", "call.dtmf": "2", "queue.support.available": 3,
      "queue.support.waiting": 9}, TUESDAY_10, "ivr support overflow", "voicemail:200"),
    ({"call.location": "main", "call.dtmf": "2", "queue.support.available": 3,
      "queue.support.waiting": 1}, TUESDAY_10, "ivr support", "queue:support"),
    ({**KNOWN, "owner.extension": "201", "lead.status": "open"}, TUESDAY_10, "own manager",
     "extension:201"),
    ({**KNOWN, "owner.extension": "201", "lead.status": "lost", "caller.last_agent": "202"},
     TUESDAY_10, "default", "queue:reception"),
    ({**KNOWN, "caller.last_agent": "202"}, TUESDAY_10, "last agent", "extension:202"),
    ({**KNOWN, "contact.score": -100}, TUESDAY_10, "unhappy customers", "queue:retention"),
    ({**KNOWN, "lead.score": 70}, TUESDAY_10, "hot leads", "queue:sales-priority"),
    ({**KNOWN, "deal.stage": "Negotiation"}, TUESDAY_10, "closing deals", "queue:closers"),
    ({**KNOWN, "account.name": "Globex Corporation"}, TUESDAY_10, "key accounts",
     "queue:key-accounts"),
    ({**KNOWN, "account.name": "Initech Group"}, TUESDAY_10, "key accounts",
     "queue:key-accounts"),
    ({**KNOWN, "contact.job_title": "Sales Director"}, TUESDAY_10, "decision makers",
     "queue:vip"),
    ({**KNOWN, "contact.job_title": "Assistant to the Director"}, TUESDAY_10, "default",
     "queue:reception"),
    ({"caller.number": "+32212345678", "caller.known": False}, TUESDAY_10, "belgian callers",
     "queue:benelux"),
    ({"caller.number": "+33622222222", "caller.known": False, "caller.anonymous": False},
     TUESDAY_10, "new callers", "ivr:welcome-new"),
    ({"caller.known": False, "caller.anonymous": True}, TUESDAY_10, "default",
     "queue:reception"),
    ({"call.location": "welcome-new", "call.dtmf": "1"}, TUESDAY_10, "ivr sales", "queue:sales"),
    ({"call.location": "spring-offer", "call.dtmf": "1"}, TUESDAY_10, "ivr sales",
     "queue:sales"),
    ({"caller.number": "+33622222222", "caller.known": False, "caller.anonymous": False,
      "call.location": "welcome-new"}, TUESDAY_10, "default", "queue:reception"),  # no loop
    ({**KNOWN, "lead.utm_campaign": "spring-2026", "call.location": "spring-offer"},
     TUESDAY_10, "default", "queue:reception"),
])
def test_shipped_rules_route_representative_calls(
    shipped: RuleSet, ctx: dict[str, Any], now: datetime, rule: str, destination: str
) -> None:
    decision = route(shipped, ctx, now)
    assert (decision.rule, str(decision.destination)) == (rule, destination), decision.trace


def test_shipped_rules_flags_and_templated_audio(shipped: RuleSet) -> None:
    manager = route(shipped, {**KNOWN, "owner.extension": "201"})
    assert (manager.voicemail, manager.audio) == (True, None)
    closed = route(shipped, MAIN_DID, datetime(2026, 3, 31, 20, 0, tzinfo=PARIS))
    assert closed.audio == "office-closed"
    campaign = route(shipped, {**KNOWN, "lead.utm_campaign": "spring-2026"})
    assert (campaign.rule, str(campaign.destination), campaign.audio) == (
        "spring campaign", "ivr:spring-offer", "campaign-spring-2026")


def test_shipped_rules_trace_explains_the_decision(shipped: RuleSet) -> None:
    decision = route(shipped, {**MAIN_DID, **KNOWN, "contact.status": "OR"})
    assert [step.rule for step in decision.trace] == [
        "spam", "night desk", "office closed", "vip list", "gold customers"]
    assert [step.matched for step in decision.trace] == [False] * 4 + [True]
    assert decision.trace[1].reason == (
        "schedule night-desk is closed (Tue 2026-03-31 10:12 Europe/Paris)")
    assert decision.trace[-1].reason == "contact.status = 'OR' eq 'OR'"


def test_shipped_rules_need_crm_fields(shipped: RuleSet) -> None:
    assert {"contact.status", "owner.extension", "lead.utm_campaign", "deal.stage",
            "account.name", "caller.number", "call.did", "queue.support.available"} <= (
        shipped.fields)
