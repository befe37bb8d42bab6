"""Loading rules: list files, and errors that name the file, line and rule to fix (§5)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent

import pytest

from agent.core.rules import RulesError, load_rules, parse_rules

RULES = Path(__file__).parents[1] / "fixtures" / "rules"
NOW = datetime(2026, 3, 31, 8, 0, tzinfo=UTC)
HEAD = "default: {destination: queue:general}\n"


def error_of(text: str, **options: object) -> RulesError:
    with pytest.raises(RulesError) as caught:
        parse_rules(dedent(text), **options)  # type: ignore[arg-type]
    return caught.value


def test_list_file_is_read_relative_to_the_rules_directory() -> None:
    ruleset = load_rules(RULES / "lists")
    assert ruleset.files == (str(RULES / "lists" / "routing.yaml"),
                             str(RULES / "lists" / "spam.txt"))
    for number in ("+33184880000", "+33187654321", "+33899123456"):
        assert ruleset.evaluate({"caller.number": number}, now=NOW).rule == "spam"
    assert ruleset.evaluate({"caller.number": "+33612345678"}, now=NOW).rule == "vip"
    assert ruleset.evaluate({"caller.number": "+33698765432"}, now=NOW).rule == "default"


def test_bad_line_in_a_list_file_names_that_file_and_line() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(RULES / "bad_list")
    error = caught.value
    assert (error.file, error.line, error.rule) == (str(RULES / "bad_list" / "spam.txt"), 4, None)
    assert str(error) == (f"{RULES / 'bad_list' / 'spam.txt'}:4: list 'spam': "
                          "invalid phone number 'not-a-number'")


def test_missing_list_file_points_at_its_reference() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(RULES / "missing_list")
    error = caught.value
    assert (error.file, error.line) == (str(RULES / "missing_list" / "routing.yaml"), 4)
    assert "list 'spam': cannot read" in error.message
    assert "nowhere.txt" in error.message


def test_list_file_without_a_directory_is_an_error() -> None:
    error = error_of(HEAD + "lists: {spam: {file: spam.txt}}\n")
    assert (error.line, error.message) == (2, "list 'spam': list files need a rules directory")


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    assert caught.value.file == str(tmp_path / "routing.yaml")
    assert "cannot read the rules file" in str(caught.value)


def test_error_message_reads_like_a_compiler_message() -> None:
    error = error_of("""\
        default: {destination: queue:general}
        rules:
          - name: gold customers
            field: contact.status
            op: eqq
            value: OR
            destination: queue:vip
    """, source="rules/routing.yaml")
    assert (error.file, error.line, error.rule) == ("rules/routing.yaml", 5, "gold customers")
    assert str(error) == (
        "rules/routing.yaml:5: rule 'gold customers': unknown operator 'eqq' (expected one of "
        "eq, ne, lt, le, gt, ge, contains, not_contains, starts_with, ends_with, in, not_in, "
        "matches, exists, missing)")


CASES = [
    # (id, rules text, line, rule, message fragment)
    ("bad yaml", """\
        default: {destination: queue:general}
        rules:
          - name: a
            destination: queue:a
           oops: [
     """, 5, None, "invalid YAML"),
    ("tab indentation", "default: {destination: queue:general}\nrules:\n\t- name: a\n",
     3, None, "invalid YAML"),
    ("duplicate yaml key", """\
        default: {destination: queue:general}
        rules:
          - name: a
            destination: queue:a
            destination: queue:b
    """, 5, "a", "duplicate key 'destination'"),
    ("unknown key in a rule", """\
        default: {destination: queue:general}
        rules:
          - name: a
            dest: queue:a
    """, 4, "a", "unknown key 'dest' (expected one of field, op, value, when, name, "
                 "destination, voicemail, audio, location)"),
    ("unknown key in a condition", """\
        default: {destination: queue:general}
        rules:
          - name: a
            when:
              all:
                - {field: call.dtmf, op: eq, value: 1}
                - {field: call.dtmf, op: eq, valeu: 1}
            destination: queue:a
    """, 7, "a", "unknown key 'valeu' (expected one of field, op, value)"),
    ("unknown top-level key", HEAD + "rulez: []\n", 2, None, "unknown key 'rulez'"),
    ("unknown operator in a condition", """\
        default: {destination: queue:general}
        rules:
          - name: a
            when:
              not:
                field: call.dtmf
                op: equals
                value: 1
            destination: queue:a
    """, 7, "a", "unknown operator 'equals'"),
    ("not a condition", """\
        default: {destination: queue:general}
        rules:
          - name: a
            when: {fields: call.dtmf}
            destination: queue:a
    """, 4, "a", "a condition is a mapping with one of the keys field, schedule, all, any or not"),
    ("duplicate rule name", """\
        default: {destination: queue:general}
        rules:
          - name: gold
            destination: queue:a
          - name: silver
            destination: queue:b
          - name: gold
            destination: queue:c
    """, 7, "gold", "duplicate rule name 'gold' (first used on line 3)"),
    ("bad destination type", """\
        default: {destination: queue:general}
        rules:
          - name: a
            destination: queu:a
    """, 4, "a", "unknown destination type 'queu'"),
    ("destination without target", HEAD + "rules:\n  - {name: a, destination: extension}\n",
     3, "a", "destination 'extension' needs a target"),
    ("target with a space", HEAD + "rules:\n  - {name: a, destination: 'queue:sales team'}\n",
     3, "a", "contains a space"),
    ("unbalanced template", HEAD + "rules:\n  - {name: a, destination: 'extension:{owner'}\n",
     3, "a", "unbalanced brace"),
    ("template in default", "default: {destination: 'extension:{owner.extension}'}\n",
     1, None, "default: the default cannot use {field} templates"),
    ("bad regex", """\
        default: {destination: queue:general}
        rules:
          - name: a
            field: account.name
            op: matches
            value: '(acme'
            destination: queue:a
    """, 3, "a", "invalid regular expression '(acme'"),
    ("in without a list", HEAD + "rules:\n  - {name: a, field: x, op: in, value: a, "
                                 "destination: queue:a}\n",
     3, "a", "operator 'in' needs a list value"),
    ("exists with a value", HEAD + "rules:\n  - {name: a, field: x, op: exists, value: a, "
                                   "destination: queue:a}\n",
     3, "a", "operator 'exists' takes no value"),
    ("eq without a value", HEAD + "rules:\n  - {name: a, field: x, op: eq, destination: queue:a}\n",
     3, "a", "operator 'eq' needs a single value"),
    ("field and when", HEAD + "rules:\n  - {name: a, field: x, op: exists, when: {field: y, "
                              "op: exists}, destination: queue:a}\n",
     3, "a", "use either field/op/value or when, not both"),
    ("rule without name", HEAD + "rules:\n  - {destination: queue:a}\n", 3, "#1",
     "missing key 'name'"),
    ("unknown module", """\
        default: {destination: queue:general}
        rules:
          - name: a
            field: contcat.status
            op: eq
            value: OR
            destination: queue:a
    """, 4, "a", "unknown field 'contcat.status' (expected FIELD or MODULE.FIELD with MODULE one "
                 "of contact, lead, account, deal, owner, caller, call, list, queue)"),
    ("caller field typo", HEAD + "rules:\n  - {name: a, field: caller.knwon, op: eq, value: true, "
                                 "destination: queue:a}\n",
     3, "a", "unknown field 'caller.knwon' (caller fields: anonymous, blocked, known, "
             "last_agent, number, score)"),
    ("queue field", HEAD + "rules:\n  - {name: a, field: queue.support.free, op: gt, value: 0, "
                           "destination: queue:a}\n",
     3, "a", "expected queue.NAME.available or queue.NAME.waiting"),
    ("template field", HEAD + "rules:\n  - {name: a, destination: 'extension:{caller.ext}'}\n",
     3, "a", "unknown field 'caller.ext'"),
    ("unknown list", HEAD + "rules:\n  - {name: a, field: list.spam, op: eq, value: true, "
                            "destination: hangup}\n",
     3, "a", "unknown list 'spam' (no lists defined)"),
    ("bad inline list entry", """\
        default: {destination: queue:general}
        lists:
          vip:
            - "+33612345678"
            - "06 12 34"
    """, 5, None, "list 'vip': invalid phone number '06 12 34'"),
    ("national prefix", HEAD + "lists: {premium: ['0899*']}\n", 2, None,
     "list 'premium': bad prefix '0899*' (a prefix is international, e.g. +33899*)"),
    ("unknown schedule", """\
        default: {destination: queue:general}
        schedules: {office: {timezone: Europe/Paris}}
        rules:
          - name: closed
            when: {schedule: ofice, op: closed}
            destination: voicemail:100
    """, 5, "closed", "unknown schedule 'ofice' (defined: office)"),
    ("schedule op", """\
        default: {destination: queue:general}
        schedules: {office: {timezone: Europe/Paris}}
        rules:
          - name: closed
            when: {schedule: office, op: shut}
            destination: voicemail:100
    """, 5, "closed", "unknown schedule operator 'shut' (expected open or closed)"),
    ("bad time zone", """\
        default: {destination: queue:general}
        schedules:
          office:
            timezone: Europe/Pariss
    """, 4, None, "schedule 'office': unknown time zone 'Europe/Pariss'"),
    ("bad day", """\
        default: {destination: queue:general}
        schedules:
          office:
            timezone: Europe/Paris
            hours:
              mon-fir: "09:00-18:00"
    """, 6, None, "schedule 'office': unknown day 'fir'"),
    ("bad hours", """\
        default: {destination: queue:general}
        schedules:
          office:
            timezone: Europe/Paris
            hours:
              mon-fri: "9h-18h"
    """, 6, None, "schedule 'office': bad time '9h' (expected HH:MM, 00:00 to 24:00)"),
    ("not a range", HEAD + "schedules: {o: {timezone: UTC, hours: {mon: '09:00'}}}\n",
     2, None, "bad time range '09:00' (expected HH:MM-HH:MM)"),
    ("bad time", HEAD + "schedules: {o: {timezone: UTC, hours: {mon: '09:00-25:00'}}}\n",
     2, None, "bad time '25:00'"),
    ("empty range", HEAD + "schedules: {o: {timezone: UTC, hours: {mon: '09:00-09:00'}}}\n",
     2, None, "empty time range '09:00-09:00' (use 00:00-24:00 for all day)"),
    ("bad holiday", """\
        default: {destination: queue:general}
        schedules:
          office:
            timezone: Europe/Paris
            holidays:
              - 2026-12-25
              - 2026-13-01
    """, 7, None, "bad holiday '2026-13-01' (expected YYYY-MM-DD or MM-DD)"),
    ("bad voicemail flag", HEAD + "rules:\n  - name: a\n    destination: queue:a\n"
                                  "    voicemail: maybe\n",
     5, "a", "voicemail: expected true or false"),
    ("rules not a list", HEAD + "rules: gold\n", 2, None, "rules: expected a list"),
    ("rule not a mapping", HEAD + "rules:\n  - gold\n", 3, "#1", "expected a mapping"),
    ("value of the wrong type", HEAD + "rules:\n  - {name: a, field: x, op: eq, value: {a: 1}, "
                                       "destination: queue:a}\n",
     3, "a", "value: expected text, a number, true/false or a list"),
    ("bad location did", HEAD + "rules:\n  - name: a\n    destination: queue:a\n"
                                "    location: {did: [main]}\n",
     5, "a", "bad DID 'main'"),
    ("empty location", HEAD + "rules:\n  - name: a\n    destination: queue:a\n"
                              "    location: {}\n",
     5, "a", "a location needs did: and/or ivr:"),
    ("missing default", "rules: []\n", 1, None, "missing key 'default'"),
    ("not a mapping", "- a\n- b\n", 1, None, "expected a mapping with default: and rules:"),
]


@pytest.mark.parametrize(("text", "line", "rule", "fragment"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_load_error_names_file_line_and_rule(text: str, line: int, rule: str | None,
                                             fragment: str) -> None:
    error = error_of(text)
    assert (error.file, error.line, error.rule) == ("routing.yaml", line, rule), str(error)
    assert fragment in error.message
    rule_part = "" if rule is None else f"rule {rule!r}: "
    assert str(error) == f"routing.yaml:{line}: {rule_part}{error.message}"


def test_empty_file() -> None:
    error = error_of("# nothing yet\n")
    assert str(error) == "routing.yaml: the file is empty (expected default: and rules:)"


def test_unknown_module_depends_on_configured_modules() -> None:
    text = HEAD + "rules:\n  - {name: a, field: deal.stage, op: eq, value: won, " \
                  "destination: queue:a}\n"
    assert parse_rules(text).fields == {"deal.stage"}
    error = error_of(text, modules=("contact", "lead"))
    assert "unknown field 'deal.stage'" in error.message
