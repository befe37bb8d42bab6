"""Load a rules directory: YAML (with lines) -> pydantic validation -> compiled RuleSet."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from agent.core.model import Destination
from agent.core.rules.conditions import (
    AllOf,
    AnyOf,
    BareField,
    Condition,
    Field,
    FieldCondition,
    ListField,
    NotOf,
    ScheduleCondition,
)
from agent.core.rules.engine import Decision, Rule, RuleSet, Scope, did_key
from agent.core.rules.errors import RulesError
from agent.core.rules.lists import NumberList, parse_entry, read_list_file
from agent.core.rules.records import RECORD_MODULES
from agent.core.rules.schedules import Schedule
from agent.core.rules.schema import (
    AllRow,
    AnyRow,
    FieldRow,
    ListFile,
    LocationSpec,
    NotRow,
    RuleSpec,
    RulesSpec,
    ScheduleRow,
    parse_destination,
    validate,
)
from agent.core.rules.source import Document, KeyPath, read_yaml
from agent.core.rules.templates import Template, compile_template

DEFAULT_MODULES: Final = (*RECORD_MODULES, "deal", "owner")
"""What routing reads of a caller (`crm.modules` in the configuration)."""
CALLER_FIELDS: Final = ("anonymous", "blocked", "known", "last_agent", "number", "score")
CALL_FIELDS: Final = ("did", "dtmf", "location")
_QUEUE_FIELD = re.compile(r"[^.]+\.(?:available|waiting)")
_DID = re.compile(r"\+?\d+")
RowSpec = FieldRow | ScheduleRow | AllRow | AnyRow | NotRow


def load_rules(directory: Path, *, region: str = "FR",
               modules: Sequence[str] = DEFAULT_MODULES) -> RuleSet:
    """Read `directory/routing.yaml` and the list files it references; raise RulesError."""
    path = Path(directory) / "routing.yaml"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), None, None, f"cannot read the rules file: {exc}") from exc
    return parse_rules(text, source=str(path), base_dir=Path(directory), region=region,
                       modules=modules)


def parse_rules(text: str, *, source: str = "routing.yaml", base_dir: Path | None = None,
                region: str = "FR", modules: Sequence[str] = DEFAULT_MODULES) -> RuleSet:
    """Validate and compile rules text; `{file: ...}` lists are read from `base_dir`."""
    doc = read_yaml(text, source)
    if doc.data is None:
        raise RulesError(source, None, None, "the file is empty (expected default: and rules:)")
    if not isinstance(doc.data, dict):
        raise RulesError(source, doc.line(()), None, "expected a mapping with default: and rules:")
    return _Compiler(doc, base_dir, region, tuple(modules)).compile(validate(doc, RulesSpec))


class _Compiler:
    def __init__(self, doc: Document, base_dir: Path | None, region: str,
                 modules: tuple[str, ...]) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.region = region
        self.modules = modules
        self.files = [doc.source]
        self.lists: dict[str, NumberList] = {}
        self.schedules: dict[str, Schedule] = {}

    def compile(self, spec: RulesSpec) -> RuleSet:
        for name, entry in spec.lists.items():
            self.lists[name] = self._list(name, entry)
        for name, hours in spec.schedules.items():
            self.schedules[name] = Schedule(name, hours.timezone, hours.hours, hours.holidays)
        kind, target = parse_destination(spec.default.destination)
        default = Decision(Destination(type=kind, target=target),  # type: ignore[arg-type]
                           spec.default.voicemail, spec.default.audio, "default")
        first_line: dict[str, int | None] = {}
        rules = []
        for index, rule in enumerate(spec.rules):
            path: KeyPath = ("rules", index)
            if rule.name in first_line:
                raise self.doc.error(path, f"duplicate rule name {rule.name!r} "
                                           f"(first used on line {first_line[rule.name]})")
            first_line[rule.name] = self.doc.line(path)
            rules.append(self._rule(rule, path))
        return RuleSet(rules, default, self.files, self.lists)

    def _rule(self, spec: RuleSpec, path: KeyPath) -> Rule:
        when = (*path, "when") if spec.when is not None else path
        kind, target = parse_destination(spec.destination)
        audio = None if spec.audio is None else self._template(spec.audio, (*path, "audio"))
        scope = None if spec.location is None else self._scope(spec.location, path)
        return Rule(spec.name, self._condition(spec.condition(), when), kind,
                    self._template(target, (*path, "destination")), spec.voicemail, audio, scope)

    def _condition(self, spec: RowSpec | None, path: KeyPath) -> Condition:
        return compile_condition(spec, path, self.doc, self._field, self.schedules)

    def _field(self, name: str) -> Field:
        prefix, dot, rest = name.partition(".")
        if not dot:
            return BareField(name, self.modules)
        if prefix == "list":
            if rest not in self.lists:
                raise ValueError(_unknown("list", rest, self.lists))
            return ListField(name, self.lists[rest], self.region)
        if (prefix in self.modules or (prefix == "caller" and rest in CALLER_FIELDS)
                or (prefix == "call" and rest in CALL_FIELDS)
                or (prefix == "queue" and _QUEUE_FIELD.fullmatch(rest))):
            return Field(name)
        raise ValueError(_bad_field(name, self.modules))

    def _template(self, text: str, path: KeyPath) -> Template:
        try:
            return compile_template(text, self._field)
        except ValueError as exc:
            raise self.doc.error(path, str(exc)) from None

    def _scope(self, spec: LocationSpec, path: KeyPath) -> Scope:
        dids = []
        for index, raw in enumerate(spec.did):
            key = did_key(raw, self.region)
            if key is None or not _DID.fullmatch(key):
                raise self.doc.error((*path, "location", "did", index), f"bad DID {raw!r}")
            dids.append(key)
        return Scope(dids, spec.ivr, self.region)

    def _list(self, name: str, spec: list[str] | ListFile) -> NumberList:
        path: KeyPath = ("lists", name)
        if not isinstance(spec, ListFile):
            entries = []
            for index, raw in enumerate(spec):
                try:
                    entries.append(parse_entry(raw, self.region))
                except ValueError as exc:
                    raise self.doc.error((*path, index), str(exc)) from None
            return NumberList(name, entries)
        if self.base_dir is None:
            raise self.doc.error((*path, "file"), "list files need a rules directory")
        file = self.base_dir / spec.file
        try:
            numbers = read_list_file(file, name, self.region)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise self.doc.error((*path, "file"), f"cannot read {file}: {reason}") from exc
        self.files.append(str(file))
        return numbers


def compile_condition(spec: RowSpec | None, path: KeyPath, doc: Document,
                      field_of: Callable[[str], Field],
                      schedules: Mapping[str, Schedule] | None = None) -> Condition:
    """Condition rows -> a compiled condition, for every rules file. `field_of` resolves a
    field name (ValueError when the file may not use it); `schedules` is None where time
    has no meaning (scoring, workflows)."""
    match spec:
        case None:
            return Condition()
        case FieldRow():
            try:
                field = field_of(spec.field)
            except ValueError as exc:
                raise doc.error((*path, "field"), str(exc)) from None
            return FieldCondition(field, spec.op, spec.value)
        case ScheduleRow():
            if schedules is None:
                raise doc.error(path, "schedules are only available in routing rules")
            if spec.schedule not in schedules:
                raise doc.error((*path, "schedule"), _unknown("schedule", spec.schedule,
                                                              schedules))
            return ScheduleCondition(schedules[spec.schedule], spec.op == "open")
        case AllRow():
            return AllOf(compile_condition(row, (*path, "all", i), doc, field_of, schedules)
                         for i, row in enumerate(spec.all))
        case AnyRow():
            return AnyOf(compile_condition(row, (*path, "any", i), doc, field_of, schedules)
                         for i, row in enumerate(spec.any))
        case NotRow():
            return NotOf(compile_condition(spec.not_, (*path, "not"), doc, field_of, schedules))
    raise AssertionError(spec)  # pragma: no cover


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    names = ", ".join(sorted(known))
    return f"unknown {kind} {name!r} ({f'defined: {names}' if names else f'no {kind}s defined'})"


def _bad_field(name: str, modules: tuple[str, ...]) -> str:
    prefix = name.partition(".")[0]
    if prefix == "caller":
        return f"unknown field {name!r} (caller fields: {', '.join(CALLER_FIELDS)})"
    if prefix == "call":
        return f"unknown field {name!r} (call fields: {', '.join(CALL_FIELDS)})"
    if prefix == "queue":
        return f"unknown field {name!r} (expected queue.NAME.available or queue.NAME.waiting)"
    return (f"unknown field {name!r} (expected FIELD or MODULE.FIELD with MODULE one of "
            f"{', '.join((*modules, 'caller', 'call', 'list', 'queue'))})")
