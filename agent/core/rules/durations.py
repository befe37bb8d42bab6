"""Durations in rules files (`due:` of a workflow task, `missed_task_due:` in journal.yaml):
one syntax, parsed here.

A bare number is seconds (`90`, `90.5`); otherwise numbers each followed by a unit, `s`,
`m`, `h`, `d` or `w` (`90s`, `15m`, `1.5h`, `2d`, `1w`), several of them added up (`1h30m`,
`2d 4h`). Case and spaces between the parts do not matter; negative durations do not exist.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import BeforeValidator

from agent.core.rules.schema import fail

UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FORMS: Final = ("a number of seconds (90) or numbers with a unit s, m, h, d or w "
                "(90s, 15m, 1.5h, 2d, 1h30m)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_PARTS = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")


def parse_duration(value: object) -> timedelta:
    """`90` (seconds), `90s`, `15m`, `1.5h`, `2d`, `1w`, `1h30m`, `2d 4h`, a number of
    seconds or a timedelta; ValueError naming the value and the accepted forms."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _PARTS.fullmatch(text):
            seconds = sum(float(n) * UNITS[unit] for n, unit in _PART.findall(text))
        else:
            raise ValueError(_bad(value))
    else:
        raise ValueError(_bad(value))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(_bad(value))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def _bad(value: object) -> str:
    return f"bad duration {value!r}: not a duration like {FORMS}"


def _validate(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(str(exc))


Duration = Annotated[timedelta, BeforeValidator(_validate)]
"""A pydantic field in the duration syntax above."""
