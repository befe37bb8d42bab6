"""Routing rules: operators, conditions, fields, lists, scopes, templates and decisions (§5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from textwrap import dedent
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.model import Destination
from agent.core.rules import DEFAULT_MODULES, Decision, RuleSet, TraceStep, parse_rules

NOW = datetime(2026, 3, 31, 8, 12, tzinfo=UTC)  # Tuesday 10:12 in Paris
ABSENT = object()


def rules(body: str, **options: Any) -> RuleSet:
    head = "default: {destination: queue:general}\n"
    return parse_rules(head + dedent(body), **options)


def row_rules(field: str, op: str, value: Any = ABSENT) -> RuleSet:
    row = f"  - name: r\n    field: {field}\n    op: {op}\n    destination: queue:hit\n"
    if value is not ABSENT:
        row += f"    value: {json.dumps(value)}\n"
    return rules("rules:\n" + row)


def hits(field: str, op: str, value: Any, ctx: dict[str, Any]) -> bool:
    return row_rules(field, op, value).evaluate(ctx, now=NOW).rule == "r"


OPERATOR_TABLE = [
    # eq / ne: numbers when both sides are numbers, else case-insensitive trimmed text
    ("eq", "OR", "OR", True),
    ("eq", "OR", "or", True),
    ("eq", "OR", " Or ", True),
    ("eq", "OR", "ARGENT", False),
    ("eq", 5, "5.0", True),
    ("eq", "5", 5, True),
    ("eq", 12.5, 12.50, True),
    ("eq", "05", "5", False),  # DTMF 05 is not 5: leading zeros keep a value textual
    ("eq", "0612345670", "0612345670", True),  # not read as an octal number
    ("ne", "OR", "ARGENT", True),
    ("ne", "OR", "or", False),
    ("ne", 5, "5.00", False),
    # booleans: true/false/yes/no/1/0 on either side
    ("eq", True, True, True),
    ("eq", True, "yes", True),
    ("eq", True, "1", True),
    ("eq", True, 1, True),
    ("eq", False, "no", True),
    ("eq", False, 0, True),
    ("eq", "true", True, True),
    ("eq", "no", False, True),
    ("eq", True, False, False),
    ("eq", True, "gold", False),
    ("ne", True, False, True),
    # ordering: numeric, never "10" < "9" as text; text only against a text value
    ("gt", 9, 10, True),
    ("gt", 9, "10", True),
    ("gt", 0, 12.5, True),
    ("gt", 0, "-3", False),
    ("gt", 0, "N/A", False),
    ("lt", 50, 45, True),
    ("lt", 50, 50, False),
    ("le", 50, 50, True),
    ("ge", 45, 44, False),
    ("ge", 45, "45", True),
    ("lt", "b", "A", True),
    ("ge", "2026-01-01", "2026-03-01", True),
    # text operators, case-insensitive
    ("contains", "direct", "Sales Director", True),
    ("contains", "DIRECT", "sales director", True),
    ("contains", "manager", "Sales Director", False),
    ("not_contains", "intern", "Sales Director", True),
    ("not_contains", "sales", "Sales Director", False),
    ("starts_with", "spring", "Spring-2026", True),
    ("starts_with", "2026", "spring-2026", False),
    ("ends_with", "group", "ACME Group", True),
    ("ends_with", "acme", "ACME Group", False),
    # lists of values
    ("in", ["negotiation", "proposal"], "Proposal", True),
    ("in", ["negotiation", "proposal"], "won", False),
    ("in", [1, 2, 3], "2", True),
    ("in", [True], "yes", True),
    ("not_in", ["lost"], "open", True),
    ("not_in", ["lost", "converted"], "LOST", False),
    # regex, searched anywhere, case-insensitive
    ("matches", r"^(acme|globex)\b", "Globex Corp", True),
    ("matches", r"^acme$", "ACME Inc", False),
    ("matches", r"^\d{4}$", 2026, True),
    ("matches", "vip", "a VIP customer", True),
    # a list-valued CRM field (tags) matches when any element does
    ("eq", "vip", ["partner", "VIP"], True),
    ("contains", "part", ["partner", "vip"], True),
    ("ne", "vip", ["partner", "VIP"], False),
    ("in", ["gold", "vip"], ["partner", "vip"], True),
]


@pytest.mark.parametrize(("op", "value", "actual", "expected"), OPERATOR_TABLE)
def test_operator(op: str, value: Any, actual: Any, expected: bool) -> None:
    assert hits("contact.status", op, value, {"contact.status": actual}) is expected


@pytest.mark.parametrize(("op", "actual", "expected"), [
    ("exists", "201", True),
    ("exists", 0, True),
    ("exists", False, True),
    ("missing", "201", False),
    ("missing", 0, False),
])
def test_exists_and_missing_on_a_present_field(op: str, actual: Any, expected: bool) -> None:
    assert hits("owner.extension", op, ABSENT, {"owner.extension": actual}) is expected


MISSING_TABLE = [
    ("eq", "OR", False),
    ("ne", "OR", True),
    ("lt", 5, False),
    ("ge", 5, False),
    ("contains", "a", False),
    ("not_contains", "a", True),
    ("starts_with", "a", False),
    ("ends_with", "a", False),
    ("in", ["a"], False),
    ("not_in", ["a"], True),
    ("matches", ".*", False),
    ("exists", ABSENT, False),
    ("missing", ABSENT, True),
]


@pytest.mark.parametrize("absent", [ABSENT, None, "", "   ", []], ids=repr)
@pytest.mark.parametrize(("op", "value", "expected"), MISSING_TABLE)
def test_missing_field_matches_only_missing_and_negations(
    op: str, value: Any, expected: bool, absent: Any
) -> None:
    ctx = {} if absent is ABSENT else {"contact.status": absent}
    decision = row_rules("contact.status", op, value).evaluate(ctx, now=NOW)
    assert (decision.rule == "r") is expected
    assert decision.trace[0].reason == "contact.status is missing"


@given(actual=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
       value=st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "OR", "1"])))
def test_negated_operators_are_exact_negations(actual: Any, value: Any) -> None:
    ctx = {"contact.status": actual}
    for positive, negative, expected in (("eq", "ne", value), ("in", "not_in", [value]),
                                         ("contains", "not_contains", value)):
        assert hits("contact.status", positive, expected, ctx) is not hits(
            "contact.status", negative, expected, ctx)


@given(st.text(alphabet="abcdefgHIJKLMéÉß ", min_size=1, max_size=10))
def test_eq_ignores_case(text: str) -> None:
    if text.strip():
        assert hits("contact.status", "eq", text.upper(), {"contact.status": text.lower()})


COMBINATORS = """
rules:
  - name: r
    when:
      all:
        - {field: caller.known, op: eq, value: true}
        - any:
            - {field: contact.status, op: eq, value: OR}
            - {field: account.name, op: matches, value: '^acme'}
        - not: {field: caller.blocked, op: eq, value: true}
    destination: queue:hit
"""


@pytest.mark.parametrize(("ctx", "expected"), [
    ({"caller.known": True, "contact.status": "OR"}, True),
    ({"caller.known": True, "account.name": "ACME"}, True),
    ({"caller.known": True, "contact.status": "OR", "caller.blocked": False}, True),
    ({"caller.known": True, "contact.status": "OR", "caller.blocked": True}, False),
    ({"caller.known": True, "contact.status": "ARGENT", "account.name": "Initech"}, False),
    ({"caller.known": False, "contact.status": "OR"}, False),
    ({"contact.status": "OR"}, False),
])
def test_all_any_not_nest(ctx: dict[str, Any], expected: bool) -> None:
    assert (rules(COMBINATORS).evaluate(ctx, now=NOW).rule == "r") is expected


def test_combinator_trace_explains_the_outcome() -> None:
    ruleset = rules(COMBINATORS)
    failed = ruleset.evaluate({"caller.known": True, "contact.status": "ARGENT"}, now=NOW)
    assert failed.trace[0].reason == (
        "not all: none of: contact.status = 'ARGENT' eq 'OR'; account.name is missing")
    passed = ruleset.evaluate({"caller.known": True, "account.name": "Acme"}, now=NOW)
    assert passed.trace[0] == TraceStep("r", True, (
        "caller.known = True eq True and account.name = 'Acme' matches '^acme' "
        "and not (caller.blocked is missing)"))


@pytest.mark.parametrize(("ctx", "found"), [
    ({"contact.status": "OR"}, "contact.status"),
    ({"lead.status": "OR"}, "lead.status"),
    ({"owner.status": "OR"}, "owner.status"),
    ({"contact.status": None, "lead.status": "OR"}, "lead.status"),
])
def test_bare_field_searches_modules_in_order(ctx: dict[str, Any], found: str) -> None:
    decision = row_rules("status", "eq", "OR").evaluate(ctx, now=NOW)
    assert decision.rule == "r"
    assert decision.trace[0].reason == f"{found} = 'OR' eq 'OR'"


def test_bare_field_takes_the_first_module_that_has_it() -> None:
    ctx = {"contact.status": "ARGENT", "lead.status": "OR"}
    assert row_rules("status", "eq", "OR").evaluate(ctx, now=NOW).rule == "default"
    reordered = rules("rules:\n  - {name: r, field: status, op: eq, value: OR, "
                      "destination: queue:hit}\n", modules=("lead", "contact"))
    assert reordered.evaluate(ctx, now=NOW).rule == "r"


def test_bare_field_missing_everywhere() -> None:
    decision = row_rules("status", "eq", "OR").evaluate({"call.dtmf": "1"}, now=NOW)
    assert decision.rule == "default"
    assert decision.trace[0].reason == "status is missing"


LISTS = """
lists:
  vip: ["+33 6 12 34 56 78", "0698765432", "+3247*"]
  premium: ["0033899*"]
rules:
  - {name: premium, field: list.premium, op: eq, value: true, destination: hangup}
  - {name: vip, field: list.vip, op: eq, value: true, destination: queue:vip}
  - {name: not vip, field: list.vip, op: eq, value: false, destination: queue:others}
"""


@pytest.mark.parametrize(("number", "rule"), [
    ("+33612345678", "vip"),
    ("06 12 34 56 78", "vip"),
    ("+33698765432", "vip"),
    ("+32470123456", "vip"),
    ("+33899123456", "premium"),
    ("+33612345679", "not vip"),
    ("+32270123456", "not vip"),
    (None, "not vip"),
])
def test_inline_lists_with_exact_numbers_and_prefixes(number: str | None, rule: str) -> None:
    ctx = {} if number is None else {"caller.number": number}
    assert rules(LISTS).evaluate(ctx, now=NOW).rule == rule


def test_list_field_trace_and_fields() -> None:
    ruleset = rules(LISTS)
    decision = ruleset.evaluate({"caller.number": "+33612345678"}, now=NOW)
    assert decision.trace[1] == TraceStep("vip", True, "list.vip = True eq True")
    assert {"list.vip", "caller.number"} <= ruleset.fields


LOCATION = """
rules:
  - name: scoped
    destination: ivr:main
    location: {did: ["01 40 00 00 00", "5000"]}
  - name: in ivr
    field: call.dtmf
    op: eq
    value: 1
    destination: queue:sales
    location: {ivr: [main, Sales]}
"""


@pytest.mark.parametrize("did", ["+33140000000", "0140000000", "01.40.00.00.00", "0033140000000",
                                 "33140000000", "+33 (0)1 40 00 00 00", "5000"])
def test_location_did_matches_any_number_format(did: str) -> None:
    decision = rules(LOCATION).evaluate({"call.did": did}, now=NOW)
    assert decision.rule == "scoped"
    assert decision.trace[0].reason == "no condition"


def test_location_out_of_scope_falls_through_with_reason() -> None:
    decision = rules(LOCATION).evaluate({"call.did": "0140000001", "call.dtmf": "1"}, now=NOW)
    assert decision.rule == "default"
    assert decision.trace[0].reason == (
        "out of scope: did +33140000001 not in [+33140000000, 5000]")
    assert decision.trace[1].reason == "out of scope: location (none) not in [main, sales]"


@pytest.mark.parametrize(("location", "rule"), [("main", "in ivr"), ("SALES", "in ivr"),
                                                ("support", "default")])
def test_location_ivr(location: str, rule: str) -> None:
    ctx = {"call.location": location, "call.dtmf": "1"}
    assert rules(LOCATION).evaluate(ctx, now=NOW).rule == rule


def test_location_with_did_and_ivr_applies_on_either() -> None:
    ruleset = rules("""
    rules:
      - {name: r, destination: queue:x, location: {did: ["+33140000000"], ivr: [main]}}
    """)
    assert ruleset.evaluate({"call.did": "0140000000"}, now=NOW).rule == "r"
    assert ruleset.evaluate({"call.location": "main"}, now=NOW).rule == "r"
    assert ruleset.evaluate({"call.did": "0150000000", "call.location": "x"},
                            now=NOW).rule == "default"
    assert {"call.did", "call.location"} <= ruleset.fields


def test_rule_without_location_applies_everywhere() -> None:
    ruleset = rules("rules:\n  - {name: r, destination: queue:x}\n")
    assert ruleset.evaluate({"call.did": "+33999999999", "call.location": "x"},
                            now=NOW).rule == "r"


TEMPLATES = """
rules:
  - name: own manager
    field: caller.known
    op: eq
    value: true
    destination: extension:{owner.extension}
    audio: hello-{ extension }
  - name: fallback
    destination: queue:general-{call.location}
"""


def test_template_fills_the_target_and_audio() -> None:
    ctx = {"caller.known": True, "owner.extension": "201", "call.location": "main"}
    decision = rules(TEMPLATES).evaluate(ctx, now=NOW)
    assert decision.destination == Destination(type="extension", target="201")
    assert decision.audio == "hello-201"  # a bare field in a template searches the modules


def test_template_renders_whole_numbers_without_decimals() -> None:
    decision = rules(TEMPLATES).evaluate({"caller.known": True, "owner.extension": 201.0},
                                         now=NOW)
    assert str(decision.destination) == "extension:201"


def test_template_with_a_missing_field_skips_the_rule() -> None:
    decision = rules(TEMPLATES).evaluate({"caller.known": True, "call.location": "main"},
                                         now=NOW)
    assert decision.rule == "fallback"
    assert str(decision.destination) == "queue:general-main"
    assert decision.trace[0] == TraceStep(
        "own manager", False,
        "caller.known = True eq True, but template field owner.extension is missing")


@pytest.mark.parametrize("value", ["201&PJSIP/0899123456", "201,30", "2 01", "201\nHANGUP",
                                   'a"b'])
def test_template_refuses_values_that_would_inject_dial_syntax(value: str) -> None:
    ctx = {"caller.known": True, "owner.extension": value}
    decision = rules(TEMPLATES).evaluate(ctx, now=NOW)
    assert decision.rule == "default"  # fallback also needs call.location
    assert "has an unusable value" in decision.trace[0].reason


def test_voicemail_and_audio_flags() -> None:
    ruleset = parse_rules(dedent("""
        default: {destination: "voicemail:100", voicemail: true, audio: closed}
        rules:
          - {name: flags, field: call.dtmf, op: eq, value: 1, destination: queue:a,
             voicemail: true, audio: unpaid-reminder}
          - {name: plain, field: call.dtmf, op: eq, value: 2, destination: queue:b}
    """))
    flags = ruleset.evaluate({"call.dtmf": "1"}, now=NOW)
    assert (flags.voicemail, flags.audio) == (True, "unpaid-reminder")
    plain = ruleset.evaluate({"call.dtmf": "2"}, now=NOW)
    assert (plain.voicemail, plain.audio) == (False, None)
    default = ruleset.evaluate({"call.dtmf": "3"}, now=NOW)
    assert (str(default.destination), default.voicemail, default.audio) == (
        "voicemail:100", True, "closed")
    assert ruleset.default == Decision(Destination(type="voicemail", target="100"), True,
                                       "closed", "default", ())


def test_hangup_needs_no_target() -> None:
    ruleset = rules("rules:\n  - {name: bye, destination: hangup}\n")
    assert ruleset.evaluate({}, now=NOW).destination == Destination(type="hangup")


FIRST_MATCH = """
rules:
  - {name: gold, field: contact.status, op: eq, value: OR, destination: queue:vip}
  - {name: known, field: caller.known, op: eq, value: true, destination: queue:known}
  - {name: anyone, destination: queue:anyone}
"""


def test_first_match_wins_and_later_rules_are_not_traced() -> None:
    decision = rules(FIRST_MATCH).evaluate({"contact.status": "OR", "caller.known": True},
                                           now=NOW)
    assert (decision.rule, str(decision.destination)) == ("gold", "queue:vip")
    assert decision.trace == (TraceStep("gold", True, "contact.status = 'OR' eq 'OR'"),)


def test_trace_lists_every_rule_tried_until_the_match() -> None:
    decision = rules(FIRST_MATCH).evaluate({"contact.status": "ARGENT"}, now=NOW)
    assert decision.rule == "anyone"
    assert decision.trace == (
        TraceStep("gold", False, "contact.status = 'ARGENT' eq 'OR'"),
        TraceStep("known", False, "caller.known is missing"),
        TraceStep("anyone", True, "no condition"),
    )


def test_default_when_nothing_matches_keeps_the_trace() -> None:
    ruleset = rules("""
    rules:
      - {name: gold, field: contact.status, op: eq, value: OR, destination: queue:vip}
    """)
    decision = ruleset.evaluate({"contact.status": "ARGENT"}, now=NOW)
    assert decision == Decision(Destination(type="queue", target="general"), False, None,
                                "default", (TraceStep("gold", False,
                                                      "contact.status = 'ARGENT' eq 'OR'"),))
    assert ruleset.default.trace == ()
    assert rules("rules:\n").evaluate({}, now=NOW).rule == "default"


def test_evaluate_is_deterministic_and_does_not_touch_the_context() -> None:
    ruleset = rules(LISTS + "  - {name: x, destination: 'extension:{owner.extension}'}\n")
    ctx = {"caller.number": "+33600000000", "owner.extension": "7"}
    before = dict(ctx)
    assert ruleset.evaluate(ctx, now=NOW) == ruleset.evaluate(ctx, now=NOW)
    assert ctx == before


def test_evaluate_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rules("rules:\n").evaluate({}, now=datetime(2026, 3, 31, 10, 0))


def test_fields_lets_routing_skip_the_crm_lookup() -> None:
    crm_free = rules("""
    rules:
      - {name: a, field: call.dtmf, op: eq, value: 1, destination: queue:a}
      - {name: b, field: queue.support.available, op: gt, value: 0, destination: queue:b}
    """)
    assert crm_free.fields == {"call.dtmf", "queue.support.available"}
    assert not any(name.split(".")[0] in DEFAULT_MODULES for name in crm_free.fields)
    needs_crm = rules(TEMPLATES + FIRST_MATCH.replace("rules:\n", ""))
    assert {"caller.known", "owner.extension", "contact.status", "call.location"} <= (
        needs_crm.fields)
    assert "contact.extension" in needs_crm.fields  # the bare {extension} template


def test_yaml_values_keep_their_text() -> None:
    # YAML 1.1 would turn these into an int, an octal int, 540 and a boolean.
    ruleset = rules("""
    rules:
      - {name: phone, field: caller.number, op: eq, value: +33612345678, destination: queue:a}
      - {name: octal, field: call.dtmf, op: eq, value: 0612345670, destination: queue:b}
      - {name: time, field: contact.slot, op: eq, value: 9:00, destination: queue:c}
      - {name: word, field: contact.region, op: eq, value: ON, destination: queue:d}
    """)
    for name, ctx in (("phone", {"caller.number": "+33612345678"}),
                      ("octal", {"call.dtmf": "0612345670"}),
                      ("time", {"contact.slot": "9:00"}),
                      ("word", {"contact.region": "on"})):
        assert ruleset.evaluate(ctx, now=NOW).rule == name
