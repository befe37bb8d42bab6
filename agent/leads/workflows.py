"""Workflow rules (§8.3): on create / update of a contact or lead, when CONDITIONS, then set
fields and/or create a task. Field dependencies (`salutation` -> `gender`) are workflows too.

Loading, matching and what a workflow changes are pure, here; `workflow_runner` applies
them to the records on every write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from agent.core.model import Contact, Lead, Task
from agent.core.rules import compile_condition, parse_file, record_field
from agent.core.rules.conditions import MISSING, Condition, Context
from agent.core.rules.durations import Duration
from agent.core.rules.schema import Conditional, Name, Strict, fail
from agent.core.rules.source import Document, KeyPath
from agent.core.rules.templates import Template, compile_template, text_of

log = logging.getLogger("agent.workflows")
Module = Literal["contact", "lead"]
EventName = Literal["create", "update"]
EVENTS: Final[tuple[EventName, ...]] = ("create", "update")
MODELS: Final[dict[str, type[Contact] | type[Lead]]] = {"contact": Contact, "lead": Lead}
SETTABLE: Final = {"contact": frozenset({"first_name", "last_name", "job_title", "owner"}),
                   "lead": frozenset({"title", "owner", "team", "status", "utm_source",
                                      "utm_medium", "utm_campaign"})}
READ_ONLY: Final = frozenset({"id", "score", "fields", "phones", "emails", "contact_id",
                              "organization_id", "created_at", "updated_at"})
Scalar = bool | int | float | str


# -- small value types --------------------------------------------------------------------

def compile_text(source: str) -> Template:
    """A workflow text: `{field}` templates of the record, missing fields left empty."""
    return compile_template(source, record_field, target=False)


def is_template(value: Any) -> bool:
    """Whether a value is a template: a text with a brace (others are set as written)."""
    return isinstance(value, str) and ("{" in value or "}" in value)


def _template(value: Any) -> Any:
    """Check a template's syntax and `{field}` names; it is compiled after validation."""
    if is_template(value):
        try:
            compile_text(value)
        except ValueError as exc:
            fail(str(exc))
    return value


def set_value(value: Any) -> Any:
    return compile_text(value) if is_template(value) else value


# -- the file -----------------------------------------------------------------------------

def _events(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _bare(name: str) -> str:
    """`contact.fields.city`, `fields.city`, `city` -> `city` (custom fields as in routing)."""
    module, dot, rest = name.strip().partition(".")
    return (rest if dot and module in MODELS else name.strip()).removeprefix("fields.")


class TaskSpec(Strict):
    assignee: Annotated[Name, AfterValidator(_template)]
    title: Annotated[Name, AfterValidator(_template)]
    description: Annotated[str, AfterValidator(_template)] = ""
    due: Duration | None = None


class WorkflowSpec(Conditional):
    name: Name
    module: Module = "lead"
    on: Annotated[list[EventName], BeforeValidator(_events)] = Field(
        default_factory=lambda: list(EVENTS), min_length=1)
    changed: list[Annotated[str, AfterValidator(_bare)]] = Field(default_factory=list)
    set: dict[str, Annotated[Scalar | None, AfterValidator(_template)]] = Field(
        default_factory=dict)
    task: TaskSpec | None = None

    @model_validator(mode="after")
    def _does_something(self) -> WorkflowSpec:
        if not self.set and self.task is None:
            fail("a workflow needs set: and/or task:")
        for key in self.set:
            check_settable(self.module, key)
        return self


class DependencySpec(Strict):
    """`from` field value -> `to` field value, looked up case-insensitively in `values`."""

    model_config = Strict.model_config | {"populate_by_name": True}

    name: Name | None = None
    module: Module = "contact"
    source: str = Field(alias="from")
    to: str
    values: dict[str, Scalar]

    @model_validator(mode="after")
    def _settable(self) -> DependencySpec:
        check_settable(self.module, _bare(self.to))
        return self


class WorkflowsSpec(Strict):
    max_depth: int = Field(5, ge=1, le=50)
    workflows: list[WorkflowSpec] = Field(default_factory=list)
    dependencies: list[DependencySpec] = Field(default_factory=list)


def check_settable(module: str, key: str) -> None:
    name = _bare(key)
    if name in READ_ONLY or (name in MODELS[module].model_fields
                             and name not in SETTABLE[module]):
        fail(f"{module}.{name} cannot be set by a workflow")


# -- compiled -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Assignment:
    """One field a workflow sets: a literal, a template, or a dependency table lookup."""

    key: str
    value: Any = None
    source: str | None = None
    table: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, ctx: Context) -> Any:
        if self.source is not None:
            _name, found = record_field(self.source).get(ctx)
            return MISSING if found is MISSING else self.table.get(text_of(found).casefold(),
                                                                   MISSING)
        if isinstance(self.value, Template):  # rendered empty: sets nothing
            return self.value.fill(ctx) or MISSING
        return self.value


@dataclass(frozen=True)
class TaskTemplate:
    assignee: Template
    title: Template
    description: Template
    due: timedelta | None


@dataclass(frozen=True)
class Workflow:
    name: str
    module: Module
    events: frozenset[str]
    changed: frozenset[str]
    condition: Condition
    assignments: tuple[Assignment, ...] = ()
    task: TaskTemplate | None = None

    def triggered_by(self, event: str, changed: frozenset[str]) -> bool:
        """Create: always. Update: when no `changed` filter, or a listed field changed."""
        if event not in self.events:
            return False
        if event == "create" or not self.changed:
            return True
        names = {name.removeprefix("fields.") for name in changed}
        if self.changed & names:
            return True
        coarse = "fields" in changed and not any(n.startswith("fields.") for n in changed)
        model = MODELS[self.module].model_fields
        return coarse and any(name not in model for name in self.changed)


class WorkflowRules:
    def __init__(self, workflows: Iterable[Workflow], max_depth: int = 5) -> None:
        self.workflows = tuple(workflows)
        self.max_depth = max_depth

    def triggered(self, module: str, event: str, changed: frozenset[str]) -> list[Workflow]:
        return [w for w in self.workflows
                if w.module == module and w.triggered_by(event, changed)]


def parse_workflows(text: str, source: str = "workflows.yaml") -> WorkflowRules:
    spec, doc = parse_file(text, source, WorkflowsSpec)
    names: dict[str, KeyPath] = {}
    workflows = [_workflow(item, doc, ("workflows", i))
                 for i, item in enumerate(spec.workflows)]
    workflows += [_dependency(item, ("dependencies", i))
                  for i, item in enumerate(spec.dependencies)]
    for item, path in zip(workflows, _paths(spec), strict=True):
        if item.name in names:
            raise doc.error(path, f"duplicate workflow name {item.name!r}")
        names[item.name] = path
    return WorkflowRules(workflows, spec.max_depth)


def _paths(spec: WorkflowsSpec) -> list[KeyPath]:
    paths: list[KeyPath] = [("workflows", i) for i in range(len(spec.workflows))]
    return paths + [("dependencies", i) for i in range(len(spec.dependencies))]


def _workflow(spec: WorkflowSpec, doc: Document, path: KeyPath) -> Workflow:
    condition = compile_condition(spec.condition(), spec.condition_path(path), doc,
                                  record_field)
    assignments = tuple(Assignment(_bare(k), set_value(v)) for k, v in spec.set.items())
    task = None if spec.task is None else TaskTemplate(
        compile_text(spec.task.assignee), compile_text(spec.task.title),
        compile_text(spec.task.description), spec.task.due)
    return Workflow(spec.name, spec.module, frozenset(spec.on), frozenset(spec.changed),
                    condition, assignments, task)


def _dependency(spec: DependencySpec, path: KeyPath) -> Workflow:
    source = _bare(spec.source)
    table = {str(k).strip().casefold(): v for k, v in spec.values.items()}
    name = spec.name or f"{spec.module}.{source} -> {spec.module}.{_bare(spec.to)}"
    assignment = Assignment(_bare(spec.to), source=f"{spec.module}.{source}", table=table)
    return Workflow(name, spec.module, frozenset({"create", "update"}), frozenset({source}),
                    Condition(), (assignment,))


# -- applying -----------------------------------------------------------------------------

def changes_for(workflow: Workflow, record: Contact | Lead, ctx: Context) -> dict[str, Any]:
    """What `set:` changes on the record (values already in place are left out)."""
    attrs: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for assignment in workflow.assignments:
        value = assignment.resolve(ctx)
        if value is MISSING:
            continue
        name = assignment.key
        if name in type(record).model_fields:
            if getattr(record, name) != value:
                attrs[name] = value
        elif record.fields.get(name) != value:
            custom[name] = value
    return {**attrs, "fields": custom} if custom else attrs


def task_for(workflow: Workflow, record: Contact | Lead, ctx: Context,
             now: datetime) -> Task | None:
    template = workflow.task
    if template is None:
        return None
    assignee = template.assignee.fill(ctx)
    if not assignee:
        log.warning("workflow %r: assignee %r is empty for %s %s; no task created",
                    workflow.name, template.assignee.source, workflow.module, record.id)
        return None
    lead = record if isinstance(record, Lead) else None
    contact_id = record.id if isinstance(record, Contact) else record.contact_id
    return Task(assignee=assignee, title=template.title.fill(ctx) or workflow.name,
                description=template.description.fill(ctx),
                due_at=now + template.due if template.due else None,
                lead_id=lead.id if lead else None, contact_id=contact_id,
                organization_id=record.organization_id)
