"""Opening hours: parsed once into a minute-of-week table, looked up in local wall time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TITLES = tuple(day.title() for day in DAYS)
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_YEARLY = re.compile(r"(\d{2})-(\d{2})")


def parse_days(text: str) -> list[int]:
    """`mon-fri`, `sat`, `mon,wed,fri`, `fri-mon` (wraps) -> weekday numbers (Monday = 0)."""
    days: list[int] = []
    for item in text.split(","):
        first, _, last = item.strip().partition("-")
        start = _day(first)
        end = _day(last) if last else start
        days.extend((start + i) % 7 for i in range((end - start) % 7 + 1))
    return days


def _day(text: str) -> int:
    name = text.strip().lower()
    for names in (DAYS, _FULL_DAYS):
        if name in names:
            return names.index(name)
    raise ValueError(f"unknown day {text.strip()!r} (expected mon, tue, wed, thu, fri, sat, sun)")


def parse_ranges(value: str | list[str]) -> list[tuple[int, int]]:
    """`"09:00-12:00,14:00-18:00"` (or a list) -> (start, end) minutes; end <= start wraps."""
    items = value if isinstance(value, list) else [value]
    ranges: list[tuple[int, int]] = []
    for item in (part for text in items for part in text.split(",")):
        first, sep, last = item.strip().partition("-")
        if not sep:
            raise ValueError(f"bad time range {item.strip()!r} (expected HH:MM-HH:MM)")
        start, end = _minutes(first), _minutes(last)
        if start == DAY_MINUTES:
            raise ValueError(f"bad time range {item.strip()!r} (cannot start at 24:00)")
        if start == end:
            raise ValueError(f"empty time range {item.strip()!r} (use 00:00-24:00 for all day)")
        ranges.append((start, end))
    return ranges


def _minutes(text: str) -> int:
    match = _TIME.fullmatch(text.strip())
    hours, minutes = (int(match[1]), int(match[2])) if match else (99, 99)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"bad time {text.strip()!r} (expected HH:MM, 00:00 to 24:00)")
    return hours * 60 + minutes


def parse_holiday(text: str) -> date | tuple[int, int]:
    """`2026-12-25` (that day) or `12-25` (every year)."""
    text = text.strip()
    try:
        if match := _YEARLY.fullmatch(text):
            month, day = int(match[1]), int(match[2])
            date(2024, month, day)  # a leap year, so 02-29 is accepted
            return (month, day)
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad holiday {text!r} (expected YYYY-MM-DD or MM-DD)") from None


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (e.g. Europe/Paris)") from None


class Schedule:
    """Compiled schedule: is it open at an aware datetime, and why."""

    __slots__ = ("_dates", "_open", "_yearly", "name", "timezone")

    def __init__(self, name: str, timezone: str, hours: dict[str, str | list[str]],
                 holidays: Iterable[str]) -> None:
        self.name = name
        self.timezone = parse_timezone(timezone)
        table = bytearray(WEEK_MINUTES)
        for days, value in hours.items():
            for day in parse_days(days):
                for start, end in parse_ranges(value):
                    _mark(table, day * DAY_MINUTES + start, day * DAY_MINUTES + end
                          + (DAY_MINUTES if end <= start else 0))
        self._open = bytes(table)
        parsed = [parse_holiday(text) for text in holidays]
        self._dates = frozenset(d for d in parsed if isinstance(d, date))
        self._yearly = frozenset(d for d in parsed if isinstance(d, tuple))

    def is_open(self, now: datetime, why: bool = False) -> tuple[bool, str]:
        """Open at `now`? With `why`, the reason (a trace); else an empty one."""
        local = now.astimezone(self.timezone)
        day = local.date()
        holiday = day in self._dates or (day.month, day.day) in self._yearly
        is_open = not holiday and self._open[local.weekday() * DAY_MINUTES + local.hour * 60
                                             + local.minute] == 1
        if not why:
            return is_open, ""
        when = (f"{_TITLES[local.weekday()]} {local.year:04}-{local.month:02}-{local.day:02} "
                f"{local.hour:02}:{local.minute:02} {self.timezone.key}")
        if holiday:
            return False, f"schedule {self.name} is closed (holiday, {when})"
        return is_open, f"schedule {self.name} is {'open' if is_open else 'closed'} ({when})"


def _mark(table: bytearray, start: int, end: int) -> None:
    for minute in range(start, end):
        table[minute % WEEK_MINUTES] = 1
