"""The rules file as pydantic models: its shape, unknown keys and per-value checks (§5).

Cross references (schedule and list names, field modules) are checked by the compiler,
which knows the configured CRM modules and the base directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.core.model import DestinationType
from agent.core.rules.conditions import LIST_VALUE, NO_VALUE, OPERATORS
from agent.core.rules.errors import RulesError
from agent.core.rules.schedules import parse_days, parse_holiday, parse_ranges, parse_timezone
from agent.core.rules.source import Document, KeyPath, read_yaml
from agent.core.rules.templates import FIELD_NAME, split_template

DESTINATION_TYPES = get_args(DestinationType)
M = TypeVar("M", bound=BaseModel)


def fail(message: str) -> NoReturn:
    raise PydanticCustomError("rules", "{detail}", {"detail": message})


def _checked(parse: Callable[[Any], object]) -> AfterValidator:
    """Run `parse` for its ValueError only; the text is kept and re-parsed by the compiler."""

    def check(value: Any) -> Any:
        try:
            parse(value)
        except ValueError as exc:
            fail(str(exc))
        return value

    return AfterValidator(check)


def _operator(op: str) -> str:
    if op not in OPERATORS:
        fail(f"unknown operator {op!r} (expected one of {', '.join(OPERATORS)})")
    return op


def _field_name(name: str) -> str:
    if not FIELD_NAME.fullmatch(name):
        fail(f"bad field name {name!r} (expected MODULE.FIELD or FIELD)")
    return name


def parse_destination(text: str) -> tuple[str, str]:
    """`"queue:vip"` -> ("queue", "vip"); `hangup` needs no target, every other type does."""
    kind, _, target = text.strip().partition(":")
    if kind not in DESTINATION_TYPES:
        raise ValueError(f"unknown destination type {kind!r} in {text!r} "
                         f"(expected TYPE:TARGET, TYPE one of {', '.join(DESTINATION_TYPES)})")
    if not target and kind != "hangup":
        raise ValueError(f"destination {text!r} needs a target, e.g. {kind}:100")
    split_template(target)
    return kind, target


def _static(text: str) -> str:
    if "{" in text:
        fail("the default cannot use {field} templates")
    return text


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Key = Annotated[str, StringConstraints(pattern=r"^[\w-]+$")]
Operator = Annotated[str, AfterValidator(_operator)]
FieldName = Annotated[str, AfterValidator(_field_name)]
Scalar = bool | int | float | str
Value = Scalar | list[Scalar] | None
Destination = Annotated[str, _checked(parse_destination)]
Audio = Annotated[str, _checked(split_template)]


def check_row(op: str, value: Value) -> None:
    """The value an operator needs: none, a list, a valid regex, or one scalar."""
    if op in NO_VALUE and value is not None:
        fail(f"operator {op!r} takes no value")
    if op in LIST_VALUE and not (isinstance(value, list) and value):
        fail(f"operator {op!r} needs a list value, e.g. [a, b]")
    if op not in NO_VALUE | LIST_VALUE and (value is None or isinstance(value, list)):
        fail(f"operator {op!r} needs a single value")
    if op == "matches":
        try:
            re.compile(str(value))
        except re.error as exc:
            fail(f"invalid regular expression {value!r}: {exc}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldRow(Strict):
    field: FieldName
    op: Operator
    value: Value = None

    @model_validator(mode="after")
    def _value_fits(self) -> FieldRow:
        check_row(self.op, self.value)
        return self


class ScheduleRow(Strict):
    schedule: Name
    op: Literal["open", "closed"] = "open"

    @field_validator("op", mode="before")
    @classmethod
    def _known(cls, op: Any) -> Any:
        if op not in ("open", "closed"):
            fail(f"unknown schedule operator {op!r} (expected open or closed)")
        return op


class AllRow(Strict):
    all: list[Condition] = Field(min_length=1)


class AnyRow(Strict):
    any: list[Condition] = Field(min_length=1)


class NotRow(Strict):
    not_: Condition = Field(alias="not")


_ROW_KEYS = {"field": "field-row", "schedule": "schedule-row", "all": "all-row",
             "any": "any-row", "not": "not-row"}
ROW_TAGS: dict[str, type[Strict]] = {"field-row": FieldRow, "schedule-row": ScheduleRow,
                                      "all-row": AllRow, "any-row": AnyRow, "not-row": NotRow}


def _row_kind(data: Any) -> str | None:
    if isinstance(data, dict):
        return next((tag for key, tag in _ROW_KEYS.items() if key in data), None)
    return next((tag for tag, model in ROW_TAGS.items() if isinstance(data, model)), None)


Condition = Annotated[
    Annotated[FieldRow, Tag("field-row")] | Annotated[ScheduleRow, Tag("schedule-row")]
    | Annotated[AllRow, Tag("all-row")] | Annotated[AnyRow, Tag("any-row")]
    | Annotated[NotRow, Tag("not-row")],
    Discriminator(_row_kind, custom_error_type="rules",
                  custom_error_message="a condition is a mapping with one of the keys "
                                       "field, schedule, all, any or not"),
]
for _model in (AllRow, AnyRow, NotRow):
    _model.model_rebuild()


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class LocationSpec(Strict):
    did: Annotated[list[str], BeforeValidator(_as_list)] = []
    ivr: Annotated[list[str], BeforeValidator(_as_list)] = []

    @model_validator(mode="after")
    def _not_empty(self) -> LocationSpec:
        if not self.did and not self.ivr:
            fail("a location needs did: and/or ivr:")
        return self


class DefaultSpec(Strict):
    destination: Annotated[Destination, AfterValidator(_static)]
    voicemail: bool = False
    audio: Annotated[Audio, AfterValidator(_static)] | None = None


class Conditional(Strict):
    """`field/op/value` (one row, PBXware style) or `when: {...}`: a routing rule's
    condition, also used by scoring criteria and workflows."""

    field: FieldName | None = None
    op: Operator | None = None
    value: Value = None
    when: Condition | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> Conditional:
        if self.field is not None and self.when is not None:
            fail("use either field/op/value or when, not both")
        if self.field is None and (self.op is not None or self.value is not None):
            fail("op/value without field")
        if self.field is not None:
            if self.op is None:
                fail("missing key 'op'")
            check_row(self.op, self.value)
        return self

    def condition(self) -> FieldRow | ScheduleRow | AllRow | AnyRow | NotRow | None:
        if self.field is None or self.op is None:
            return self.when
        return FieldRow.model_construct(field=self.field, op=self.op, value=self.value)

    def condition_path(self, path: KeyPath) -> KeyPath:
        return (*path, "when") if self.when is not None else path


class RuleSpec(Conditional):
    name: Name
    destination: Destination
    voicemail: bool = False
    audio: Audio | None = None
    location: LocationSpec | None = None


class ListFile(Strict):
    file: Name


InlineList = list[Annotated[str, StringConstraints(min_length=1)]]
ListSpec = Annotated[
    Annotated[InlineList, Tag("inline-list")] | Annotated[ListFile, Tag("file-list")],
    Discriminator(lambda data: "file-list" if isinstance(data, dict | ListFile)
                  else "inline-list"),
]


class ScheduleSpec(Strict):
    timezone: Annotated[str, _checked(parse_timezone)]
    hours: dict[Annotated[str, _checked(parse_days)],
                Annotated[str | list[str], _checked(parse_ranges)]] = {}
    holidays: list[Annotated[str, _checked(parse_holiday)]] = []


class RulesSpec(Strict):
    default: DefaultSpec
    rules: Annotated[list[RuleSpec], BeforeValidator(lambda v: [] if v is None else v)] = []
    lists: dict[Key, ListSpec] = {}
    schedules: dict[Key, ScheduleSpec] = {}


def validate(doc: Document, model: type[M]) -> M:
    """Validate a parsed rules file against `model` (no file: an empty mapping); the first
    error (top of the file) becomes a RulesError naming its line and entry."""
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise RulesError(doc.source, doc.line(()), None, "expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = min(exc.errors(include_url=False), key=lambda error: _rank(error, doc))
        path = doc.locate(first["loc"])
        raise doc.error(path, _message(first, path, model)) from None


def parse_file(text: str, source: str, model: type[M]) -> tuple[M, Document]:
    """Read and validate a rules file; the Document points compile errors at their line."""
    doc = read_yaml(text, source)
    return validate(doc, model), doc


def _rank(error: Any, doc: Document) -> tuple[int, bool, int]:
    """Top of the file first; within one entry, an unknown key explains a missing one."""
    path = doc.locate(error["loc"])
    return (doc.line(path[:2]) or 0, error["type"] != "extra_forbidden", doc.line(path) or 0)


def _message(error: Any, path: KeyPath, model: type[BaseModel]) -> str:
    loc = error["loc"]
    kind = error["type"]
    if kind == "rules":
        return str(error.get("ctx", {}).get("detail", error["msg"]))
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        allowed = [] if holder is None else [info.alias or name for name, info
                                             in holder.model_fields.items()]
        expected = f" (expected one of {', '.join(allowed)})" if allowed else ""
        return f"unknown key {loc[-1]!r}{expected}"
    if kind == "missing":
        return f"missing key {loc[-1]!r}"
    text = _PLAIN.get(kind, str(error["msg"]).removeprefix("Value error, "))
    if path[-1:] == ("value",):
        text = "expected text, a number, true/false or a list"
    # Sections name themselves already ("list 'spam': ", "default: ").
    labelled = path and isinstance(path[-1], str) and path != ("default",) and not (
        len(path) == 2 and path[0] in ("lists", "schedules"))
    return f"{path[-1]}: {text}" if labelled else text


_PLAIN = {
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "too_short": "needs at least one item",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "may only contain letters, digits, _ and -",
}
_TAGGED: dict[str, type[BaseModel]] = {**ROW_TAGS, "file-list": ListFile}


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model a pydantic error location points into (its fields are the keys allowed)."""
    current: Any = root
    for part in loc:
        if isinstance(part, str) and part in _TAGGED:  # the branch a tagged union took
            current = _TAGGED[part]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = next((info for name, info in current.model_fields.items()
                          if part in (name, info.alias)), None)
            current = None if field is None else field.annotation
        else:  # a list index or a mapping key: the item type
            current = _item(current)
        if current is None:
            return None
        current = _model_of(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_of(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` seen as X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        options = [a for a in get_args(annotation) if a is not type(None)]
        if origin not in (Union, UnionType) or len(options) != 1:
            return annotation
        annotation = options[0]


def _item(annotation: Any) -> Any:
    return get_args(annotation)[-1] if get_origin(annotation) in (list, dict) else None
