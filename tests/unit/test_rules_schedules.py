"""Schedules in routing rules: hours, overnight ranges, holidays, DST days (§5)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from textwrap import dedent
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.rules import RuleSet, parse_rules

PARIS = ZoneInfo("Europe/Paris")


def schedule_rules(hours: str, holidays: str = "[]", timezone: str = "Europe/Paris") -> RuleSet:
    return parse_rules(dedent(f"""
        default: {{destination: queue:open}}
        schedules:
          office: {{timezone: {timezone}, hours: {hours}, holidays: {holidays}}}
        rules:
          - name: closed
            when: {{schedule: office, op: closed}}
            destination: voicemail:100
    """))


def is_open(ruleset: RuleSet, now: datetime) -> bool:
    return ruleset.evaluate({}, now=now).rule == "default"


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


OFFICE = schedule_rules('{mon-fri: "09:00-12:30,13:30-18:00", sat: "09:00-12:00"}',
                        '["2026-12-25", "01-01"]')


@pytest.mark.parametrize(("now", "expected"), [
    (paris(2026, 3, 31, 10, 12), True),    # Tuesday morning
    (paris(2026, 3, 31, 8, 59), False),    # before opening
    (paris(2026, 3, 31, 9, 0), True),      # opening minute
    (paris(2026, 3, 31, 12, 45), False),   # lunch break between two ranges
    (paris(2026, 3, 31, 13, 30), True),
    (paris(2026, 3, 31, 17, 59), True),
    (paris(2026, 3, 31, 18, 0), False),    # the end of a range is closed
    (paris(2026, 4, 3, 11, 0), True),      # Friday
    (paris(2026, 4, 4, 11, 59), True),     # Saturday morning
    (paris(2026, 4, 4, 12, 0), False),     # Saturday afternoon
    (paris(2026, 4, 5, 10, 0), False),     # Sunday is not listed: closed
    (paris(2026, 12, 24, 10, 0), True),
    (paris(2026, 12, 25, 10, 0), False),   # dated holiday, a Friday
    (paris(2027, 1, 1, 10, 0), False),     # yearly holiday, a Friday
    (paris(2027, 12, 25, 10, 0), True),    # the dated holiday was 2026 only (a Saturday)
])
def test_office_hours_in_local_time(now: datetime, expected: bool) -> None:
    assert is_open(OFFICE, now) is expected


def test_any_timezone_for_now_is_converted_to_the_schedule_timezone() -> None:
    assert is_open(OFFICE, datetime(2026, 3, 31, 8, 12, tzinfo=UTC))  # 10:12 in Paris
    assert not is_open(OFFICE, datetime(2026, 3, 31, 16, 30, tzinfo=UTC))  # 18:30
    new_york = schedule_rules('{mon-fri: "09:00-18:00"}', timezone="America/New_York")
    assert not is_open(new_york, datetime(2026, 3, 31, 8, 12, tzinfo=UTC))  # 04:12 there


def test_trace_says_open_or_closed_with_local_time() -> None:
    closed = OFFICE.evaluate({}, now=paris(2026, 3, 31, 19, 5))
    assert closed.trace[0].reason == (
        "schedule office is closed (Tue 2026-03-31 19:05 Europe/Paris)")
    opened = OFFICE.evaluate({}, now=datetime(2026, 3, 31, 8, 12, tzinfo=UTC))
    assert opened.trace[0].reason == "schedule office is open (Tue 2026-03-31 10:12 Europe/Paris)"
    holiday = OFFICE.evaluate({}, now=paris(2026, 12, 25, 10, 0))
    assert holiday.trace[0].reason == (
        "schedule office is closed (holiday, Fri 2026-12-25 10:00 Europe/Paris)")


def test_op_open_and_default_op() -> None:
    ruleset = parse_rules(dedent("""
        default: {destination: queue:x}
        schedules: {office: {timezone: Europe/Paris, hours: {mon-sun: "09:00-18:00"}}}
        rules:
          - {name: open, when: {schedule: office}, destination: queue:open}
    """))
    assert ruleset.evaluate({}, now=paris(2026, 3, 31, 10, 0)).rule == "open"
    assert ruleset.evaluate({}, now=paris(2026, 3, 31, 20, 0)).rule == "default"


NIGHT = schedule_rules('{fri: "22:00-06:00", sun: "23:00-01:00"}')


@pytest.mark.parametrize(("now", "expected"), [
    (paris(2026, 4, 3, 21, 59), False),   # Friday evening
    (paris(2026, 4, 3, 22, 0), True),
    (paris(2026, 4, 4, 3, 0), True),      # Saturday night, still Friday's range
    (paris(2026, 4, 4, 5, 59), True),
    (paris(2026, 4, 4, 6, 0), False),
    (paris(2026, 4, 4, 23, 0), False),    # Saturday has no range of its own
    (paris(2026, 4, 5, 23, 30), True),    # Sunday 23:00 ...
    (paris(2026, 4, 6, 0, 30), True),     # ... wraps into Monday, across the week boundary
    (paris(2026, 4, 6, 1, 0), False),
])
def test_overnight_ranges_continue_into_the_next_day(now: datetime, expected: bool) -> None:
    assert is_open(NIGHT, now) is expected


@pytest.mark.parametrize(("days", "open_on"), [
    ("mon,wed", {0, 2}),
    ("fri-mon", {4, 5, 6, 0}),
    ("saturday", {5}),
    ("Mon-Sun", {0, 1, 2, 3, 4, 5, 6}),
])
def test_day_specs(days: str, open_on: set[int]) -> None:
    ruleset = schedule_rules(f'{{"{days}": "00:00-24:00"}}')
    monday = paris(2026, 3, 30, 12, 0)
    week = {day for day in range(7) if is_open(ruleset, monday + timedelta(days=day))}
    assert week == open_on


def test_hours_as_a_list_mean_the_same_as_comma_separated() -> None:
    listed = schedule_rules('{mon-fri: ["09:00-12:30", "13:30-18:00"], sat: "09:00-12:00"}')
    monday = paris(2026, 3, 30, 0, 0)
    for minute in range(0, 7 * 24 * 60, 15):
        now = monday + timedelta(minutes=minute)
        assert is_open(listed, now) is is_open(OFFICE, now)


# 2026-03-29 (Sunday): Paris clocks jump 02:00 CET -> 03:00 CEST (UTC+1 -> UTC+2).
# 2026-10-25 (Sunday): Paris clocks fall back 03:00 CEST -> 02:00 CET (UTC+2 -> UTC+1).
DST = schedule_rules('{sat: "22:00-06:00", sun: "09:00-18:00"}')


@pytest.mark.parametrize(("utc", "expected"), [
    (datetime(2026, 3, 29, 6, 59, tzinfo=UTC), False),  # 08:59 CEST
    (datetime(2026, 3, 29, 7, 0, tzinfo=UTC), True),    # 09:00 CEST (08:00 on winter time)
    (datetime(2026, 3, 29, 15, 59, tzinfo=UTC), True),  # 17:59 CEST
    (datetime(2026, 3, 29, 16, 0, tzinfo=UTC), False),  # 18:00 CEST
    (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), True),   # 01:59 CET, overnight range
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), True),    # 03:00 CEST, right after the jump
    (datetime(2026, 3, 29, 3, 59, tzinfo=UTC), True),   # 05:59 CEST
    (datetime(2026, 3, 29, 4, 0, tzinfo=UTC), False),   # 06:00 CEST: a short night
    (datetime(2026, 10, 25, 7, 59, tzinfo=UTC), False),  # 08:59 CET
    (datetime(2026, 10, 25, 8, 0, tzinfo=UTC), True),    # 09:00 CET (10:00 on summer time)
    (datetime(2026, 10, 25, 16, 59, tzinfo=UTC), True),  # 17:59 CET
    (datetime(2026, 10, 25, 17, 0, tzinfo=UTC), False),  # 18:00 CET
    (datetime(2026, 10, 25, 4, 59, tzinfo=UTC), True),   # 05:59 CET, overnight range
    (datetime(2026, 10, 25, 5, 0, tzinfo=UTC), False),   # 06:00 CET: a long night
])
def test_dst_transition_days_follow_the_wall_clock(utc: datetime, expected: bool) -> None:
    assert is_open(DST, utc) is expected


def test_hours_inside_the_skipped_or_repeated_hour() -> None:
    ruleset = schedule_rules('{sun: "02:00-03:00"}')
    # March: 02:00-03:00 does not exist, so the range never opens that day.
    spring = [datetime(2026, 3, 29, 0, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(180)]
    assert not any(is_open(ruleset, now) for now in spring)
    # October: 02:00-03:00 happens twice, both are open (two real hours).
    autumn = [datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(180)]
    assert sum(is_open(ruleset, now) for now in autumn) == 120


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31),
                    timezones=st.just(UTC)))
def test_overnight_schedule_matches_a_reference(now: datetime) -> None:
    local = now.astimezone(PARIS)
    yesterday = (local.weekday() - 1) % 7
    expected = ((local.weekday() == 4 and local.time() >= time(22))
                or (yesterday == 4 and local.time() < time(6))
                or (local.weekday() == 6 and local.time() >= time(23))
                or (yesterday == 6 and local.time() < time(1)))
    assert is_open(NIGHT, now) is expected
