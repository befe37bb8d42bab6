"""One `{field}` template engine (`agent.core.rules.templates`) for routing and workflows."""

from __future__ import annotations

import pytest

from agent.core.model import Contact
from agent.core.rules import RulesError, record_field
from agent.core.rules.records import record_context
from agent.core.rules.templates import Template, compile_template, split_template
from agent.leads.workflows import changes_for, parse_workflows


def text(source: str, *, target: bool = False) -> Template:
    return compile_template(source, record_field, target=target)


def test_a_text_fills_missing_fields_with_nothing_and_strips() -> None:
    template = text("Rendez-vous {contact.name} (projet { lead.project_id }) ")
    ctx = {"contact.name": "Ana Lopez", "lead.project_id": 12.0}
    assert template.fill(ctx) == "Rendez-vous Ana Lopez (projet 12)"
    assert template.fill({"contact.name": "Ana"}) == "Rendez-vous Ana (projet )"
    assert text("{lead.owner}").fill({}) == ""
    assert text("{contact.tags}").fill({"contact.tags": ["a", "b"]}) == "a, b"
    assert template.source == "Rendez-vous {contact.name} (projet {lead.project_id}) "


def test_render_says_which_field_is_missing() -> None:
    template = text("Call {contact.name}")
    assert template.render({"contact.name": "Ana"}) == ("Call Ana", "")
    assert template.render({}) == (None, "template field contact.name is missing")


def test_a_target_refuses_spaces_in_the_text_and_lists_or_dial_syntax_in_values() -> None:
    with pytest.raises(ValueError, match="contains a space"):
        split_template("ext {owner.extension}")
    assert split_template("ext {owner.extension}", target=False) == (
        ["ext ", ""], ["owner.extension"])
    target = text("ext-{contact.extension}", target=True)
    assert target.render({"contact.extension": "201"}) == ("ext-201", "")
    for value in (["201"], "201&PJSIP/1", "2 01"):
        rendered, why = target.render({"contact.extension": value})
        assert rendered is None and "has an unusable value" in why
        assert target.fill({"contact.extension": value}) == "ext-"


@pytest.mark.parametrize(("source", "message"), [
    ("{contact.name", "unbalanced brace"), ("a } b", "unbalanced brace"),
    ("{}", "bad template field {}"), ("{contact.first name}", "bad template field"),
    ("{nope.x}", "unknown field 'nope.x'"),
])
def test_bad_templates_are_refused(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        text(source)


@pytest.mark.parametrize(("value", "message"), [
    ("'{contact.name'", "workflows.yaml:2: rule 'a': unbalanced brace in '{contact.name'"),
    ("'{contact.first name}'", "bad template field {contact.first name}"),
])
def test_workflow_templates_are_checked_at_load(value: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_workflows(f"workflows:\n  - {{name: a, set: {{job_title: {value}}}}}\n")


def test_workflow_values_without_braces_are_set_as_written() -> None:
    rules = parse_workflows("workflows:\n  - {name: a, module: contact, "
                            "set: {job_title: ' CTO ', last_name: '{contact.first_name}'}}\n")
    contact = Contact(id=1, first_name="Ana")
    assert changes_for(rules.workflows[0], contact, record_context(contact, None, None)) == {
        "job_title": " CTO ", "last_name": "Ana"}
