"""Compiled conditions: `test(ctx, now, why)` gives the verdict and, when `why`, its reason."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, NamedTuple

from agent.core.rules.lists import NumberList, caller_key
from agent.core.rules.schedules import Schedule

OPERATORS: Final = ("eq", "ne", "lt", "le", "gt", "ge", "contains", "not_contains",
                    "starts_with", "ends_with", "in", "not_in", "matches", "exists", "missing")
NEGATED: Final = {"ne": "eq", "not_contains": "contains", "not_in": "in"}
NO_VALUE: Final = frozenset({"exists", "missing"})
LIST_VALUE: Final = frozenset({"in", "not_in"})
MAX_SHOWN = 40
MAX_MATCHED = 1024  # regexes see at most this many characters of a CRM value
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")
_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_NUMBER_FLAGS = {1.0: True, 0.0: False}
_MANY = (list, tuple, set, frozenset)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Context = Mapping[str, Any]
Needs = tuple[tuple[str, ...], ...]
"""Context keys a condition cannot hold without: for each clause, at least one of its keys
must be in the context (an absent key reads as missing). A cheap test that lets the live path
skip most rules of an unknown or sparse caller without evaluating them."""


class Operand(NamedTuple):
    """A value seen as text (stripped, casefolded), as a number and as a boolean."""

    string: str
    text: str
    number: float | None
    flag: bool | None
    is_bool: bool


def operand(value: Any) -> Operand:
    """The comparable forms of a value; memoised, since calls repeat the same CRM values."""
    try:
        return _cached_operand(value)
    except TypeError:  # unhashable
        return _operand(value)


def _operand(value: Any) -> Operand:
    if isinstance(value, bool):
        text = "true" if value else "false"
        return Operand(text, text, float(value), value, True)
    if isinstance(value, int | float | Decimal):
        number = _finite(value)
        flag = None if number is None else _NUMBER_FLAGS.get(number)
        return Operand(str(value), str(value).casefold(), number, flag, False)
    string = value.isoformat() if isinstance(value, date | datetime) else str(value).strip()
    text = string.casefold()
    number = _finite(string) if _NUMBER.fullmatch(string) else None
    return Operand(string, text, number, _FLAGS.get(text), False)


_cached_operand = lru_cache(maxsize=8192, typed=True)(_operand)  # typed: 1, 1.0, True differ


def _finite(value: float | Decimal | str) -> float | None:
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _compare(a: Operand, b: Operand) -> int:
    """Booleans when either side is one, numbers when both are, else case-insensitive text."""
    if (a.is_bool or b.is_bool) and a.flag is not None and b.flag is not None:
        return int(a.flag) - int(b.flag)
    if a.number is not None and b.number is not None:
        return (a.number > b.number) - (a.number < b.number)
    return (a.text > b.text) - (a.text < b.text)


def _ordered(a: Operand, b: Operand) -> int | None:
    # `balance gt 0` must not match a balance of "N/A" by comparing text.
    if b.number is not None and not b.is_bool and a.number is None:
        return None
    return _compare(a, b)


def _ranked(accept: Callable[[int], bool]) -> Callable[[Operand, Any], bool]:
    def check(a: Operand, b: Any) -> bool:
        order = _ordered(a, b)
        return order is not None and accept(order)
    return check


CHECKS: Final[dict[str, Callable[[Operand, Any], bool]]] = {
    "eq": lambda a, b: _compare(a, b) == 0,
    "lt": _ranked(lambda order: order < 0),
    "le": _ranked(lambda order: order <= 0),
    "gt": _ranked(lambda order: order > 0),
    "ge": _ranked(lambda order: order >= 0),
    "contains": lambda a, b: b.text in a.text,
    "starts_with": lambda a, b: a.text.startswith(b.text),
    "ends_with": lambda a, b: a.text.endswith(b.text),
    "in": lambda a, b: any(_compare(a, item) == 0 for item in b),
    "matches": lambda a, b: b.search(a.string[:MAX_MATCHED]) is not None,
}


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def present(value: Any) -> Any:
    """None, blank text and empty lists count as missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, _MANY) and not value:
        return MISSING
    return value


class Field:
    """A qualified field (`contact.status`), read straight from the context."""

    __slots__ = ("name", "names")

    def __init__(self, name: str) -> None:
        self.name = name
        self.names: tuple[str, ...] = (name,)

    def get(self, ctx: Context) -> tuple[str, Any]:
        """The name the value was found under, and the value (or MISSING)."""
        return self.name, present(ctx.get(self.name))

    def keys(self) -> tuple[str, ...] | None:
        """The context keys its value is read from (None: computed, never missing)."""
        return self.names


class BareField(Field):
    """A bare field (`status`): the first module (in order) that has it wins."""

    __slots__ = ()

    def __init__(self, name: str, modules: Iterable[str]) -> None:
        super().__init__(name)
        self.names = tuple(f"{module}.{name}" for module in modules)

    def get(self, ctx: Context) -> tuple[str, Any]:
        for name in self.names:
            value = present(ctx.get(name))
            if value is not MISSING:
                return name, value
        return self.name, MISSING


class ListField(Field):
    """`list.NAME`: whether `caller.number` is on that list (false for anonymous callers)."""

    __slots__ = ("numbers", "region")

    def __init__(self, name: str, numbers: NumberList, region: str) -> None:
        super().__init__(name)
        self.names = (name, "caller.number")
        self.numbers = numbers
        self.region = region

    def get(self, ctx: Context) -> tuple[str, bool]:
        return self.name, caller_key(ctx.get("caller.number"), self.region) in self.numbers

    def keys(self) -> None:
        return None


Verdict = tuple[bool, str]
"""Whether a condition holds, and why: the reason is written only when asked for (`why`),
for a trace (dry run, decision log); a live call needs only the verdict."""
VERDICTS: Final = ((False, ""), (True, ""))
"""The verdicts without a reason, built once: a live call allocates none."""


class Condition:
    """Base of compiled conditions; the default one always matches."""

    __slots__ = ()

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        return True, "no condition" if why else ""

    def fields(self) -> Iterable[str]:
        return ()

    def needs(self) -> Needs:
        return ()


class FieldCondition(Condition):
    __slots__ = ("check", "expected", "field", "hits", "if_missing", "negate", "op", "shown")

    MEMO = 4096
    """Values remembered per condition with their verdict: calls repeat the same CRM values
    (statuses, booleans, owners), and comparing costs more than looking up."""

    def __init__(self, field: Field, op: str, value: Any) -> None:
        self.field = field
        self.op = op
        self.negate = op in NEGATED
        self.if_missing = self.negate or op == "missing"
        """The verdict on a missing value."""
        base = NEGATED.get(op, op)
        self.check = CHECKS.get(base)
        self.expected = _expected(base, value)
        self.shown = "" if op in NO_VALUE else " " + show(value)
        self.hits: dict[tuple[type, Any], bool] = {}

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        name, value = self.field.get(ctx)
        if value is MISSING:
            missing = self.if_missing
            return (missing, f"{name} is missing") if why else VERDICTS[missing]
        if self.check is None:
            hit = self.op == "exists"
        else:
            key = (type(value), value)  # typed: True, 1 and 1.0 do not compare alike
            try:
                hit = self.hits[key]
            except KeyError:
                hit = self.hits[key] = self._hit(value) != self.negate
                if len(self.hits) > self.MEMO:
                    self.hits.clear()
            except TypeError:  # unhashable: a list of values
                hit = self._hit(value) != self.negate
        return (hit, f"{name} = {show(value)} {self.op}{self.shown}") if why else VERDICTS[hit]

    def _hit(self, value: Any) -> bool:
        check = self.check
        assert check is not None
        if isinstance(value, _MANY):
            return any(check(operand(item), self.expected) for item in value)
        return bool(check(operand(value), self.expected))

    def fields(self) -> Iterable[str]:
        return self.field.names

    def needs(self) -> Needs:
        keys = self.field.keys()  # a missing value matches only the negated ops and `missing`
        return () if keys is None or self.if_missing else (keys,)


def _expected(op: str, value: Any) -> Any:
    if op == "matches":
        return re.compile(str(value), re.IGNORECASE)
    if op in LIST_VALUE:
        return tuple(operand(item) for item in value)
    return None if op in NO_VALUE else operand(value)


class ScheduleCondition(Condition):
    __slots__ = ("schedule", "want_open")

    def __init__(self, schedule: Schedule, want_open: bool) -> None:
        self.schedule = schedule
        self.want_open = want_open

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        is_open, reason = self.schedule.is_open(now, why)
        return is_open == self.want_open, reason


class AllOf(Condition):
    __slots__ = ("parts",)

    def __init__(self, parts: Iterable[Condition]) -> None:
        self.parts = tuple(parts)

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        if not why:  # a loop, not all(): no generator per call
            for part in self.parts:
                if not part.test(ctx, now)[0]:
                    return False, ""
            return True, ""
        reasons = []
        for part in self.parts:
            matched, reason = part.test(ctx, now, why)
            if not matched:
                return False, f"not all: {reason}"
            reasons.append(reason)
        return True, " and ".join(reasons)

    def fields(self) -> Iterable[str]:
        return (name for part in self.parts for name in part.fields())

    def needs(self) -> Needs:
        return tuple(clause for part in self.parts for clause in part.needs())


class AnyOf(AllOf):
    __slots__ = ()

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        if not why:  # a loop, not any(): no generator per call
            for part in self.parts:
                if part.test(ctx, now)[0]:
                    return True, ""
            return False, ""
        reasons = []
        for part in self.parts:
            matched, reason = part.test(ctx, now, why)
            if matched:
                return True, reason
            reasons.append(reason)
        return False, "none of: " + "; ".join(reasons)

    def needs(self) -> Needs:
        firsts = [part.needs()[:1] for part in self.parts]  # one clause of each part will do
        if not all(firsts):
            return ()
        return (tuple(dict.fromkeys(key for (clause,) in firsts for key in clause)),)


class NotOf(Condition):
    __slots__ = ("part",)

    def __init__(self, part: Condition) -> None:
        self.part = part

    def test(self, ctx: Context, now: datetime, why: bool = False) -> Verdict:
        matched, reason = self.part.test(ctx, now, why)
        return (not matched, f"not ({reason})") if why else VERDICTS[not matched]

    def fields(self) -> Iterable[str]:
        return self.part.fields()
