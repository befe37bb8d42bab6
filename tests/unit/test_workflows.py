"""Workflow rules (§8.3): loading, triggers, field changes and tasks, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.core.model import Contact, Lead
from agent.core.rules import RulesError
from agent.core.rules.records import holds, record_context
from agent.leads.workflows import Workflow, changes_for, parse_workflows, task_for

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
RULES = parse_workflows("""\
workflows:
  - name: france
    module: contact
    changed: [contact.fields.country]
    field: contact.country
    op: contains
    value: france
    set: {country: France, job_title: "{contact.job_title}"}
  - name: accord
    on: update
    changed: [outcome]
    field: lead.outcome
    op: eq
    value: ACCORD
    set: {status: open}
    task: {assignee: "{lead.owner}", title: "Call {contact.name} about {lead.title}",
           due: 1d 2h}
  - name: any lead write
    on: [create]
    set: {seen: true}
dependencies:
  - {from: salutation, to: gender, values: {"M.": Masculin, Mme: Féminin}}
""")


def workflow(name: str) -> Workflow:
    return next(w for w in RULES.workflows if w.name == name)


def test_triggers_follow_event_and_changed_fields() -> None:
    def names(module: str, event: str, *changed: str) -> list[str]:
        return [w.name for w in RULES.triggered(module, event, frozenset(changed))]

    assert names("contact", "create") == ["france", "contact.salutation -> contact.gender"]
    assert names("contact", "update", "fields", "fields.country") == ["france"]
    assert names("contact", "update", "first_name") == []
    assert names("contact", "update", "fields") == [  # a store that names no custom field
        "france", "contact.salutation -> contact.gender"]
    assert names("lead", "update", "fields", "fields.outcome", "owner") == ["accord"]
    assert names("lead", "create") == ["any lead write"]


def test_set_leaves_out_values_already_in_place() -> None:
    contact = Contact(id=1, job_title="CTO", fields={"country": "la france"})
    ctx = record_context(contact, None, None)
    assert holds(workflow("france").condition, ctx)
    assert changes_for(workflow("france"), contact, ctx) == {"fields": {"country": "France"}}
    done = contact.model_copy(update={"fields": {"country": "France"}})
    assert changes_for(workflow("france"), done, record_context(done, None, None)) == {}


def test_dependency_looks_the_value_up_ignoring_case() -> None:
    rule = workflow("contact.salutation -> contact.gender")
    for salutation, gender in (("mme", "Féminin"), (" M. ", "Masculin")):
        contact = Contact(id=1, fields={"salutation": salutation})
        assert changes_for(rule, contact, record_context(contact, None, None)) == {
            "fields": {"gender": gender}}
    unknown = Contact(id=1, fields={"salutation": "Dr"})
    assert changes_for(rule, unknown, record_context(unknown, None, None)) == {}


def test_task_is_rendered_from_the_record() -> None:
    lead = Lead(id=5, contact_id=2, owner="201", title="T3 Lyon", fields={"outcome": "ACCORD"})
    ctx = record_context(Contact(id=2, first_name="Ana", last_name="Lopez"), lead, None)
    task = task_for(workflow("accord"), lead, ctx, NOW)
    assert task is not None
    assert (task.assignee, task.title, task.lead_id, task.contact_id) == (
        "201", "Call Ana Lopez about T3 Lyon", 5, 2)
    assert task.due_at == NOW + timedelta(days=1, hours=2)
    nobody = lead.model_copy(update={"owner": None})
    assert task_for(workflow("accord"), nobody, record_context(None, nobody, None), NOW) is None


@pytest.mark.parametrize(("text", "message"), [
    ("workflows:\n  - {name: a, set: {score: 1}}\n",
     "workflows.yaml:2: rule 'a': lead.score cannot be set by a workflow"),
    ("workflows:\n  - {name: a, module: deal, set: {x: 1}}\n", "module"),
    ("workflows:\n  - {name: a, field: lead.x, op: exists}\n",
     "a workflow needs set: and/or task:"),
    ("workflows:\n  - {name: a, set: {x: 1}, on: delete}\n", "on"),
    ("workflows:\n  - name: a\n    task: {assignee: x, title: t, due: soon}\n",
     "workflows.yaml:3: rule 'a': bad duration 'soon'"),
    ("workflows:\n  - {name: a, set: {x: 1}}\n  - {name: a, set: {y: 1}}\n",
     "workflows.yaml:3: rule 'a': duplicate workflow name 'a'"),
    ("workflows:\n  - {name: a, set: {x: '{nope.x}'}}\n", "unknown field 'nope.x'"),
    ("max_depth: 0\n", "max_depth"),
])
def test_file_errors_name_the_line_and_workflow(text: str, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_workflows(text)
    assert message in str(caught.value)
