"""The live path (no trace, rules that cannot match skipped by what they need) decides
exactly what the traced evaluation decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.rules import load_rules

SAMPLE = load_rules(Path(__file__).parents[2] / "rules")
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-200, 200),
                   st.sampled_from(["OR", "or", "ARGENT", "lost", "open", "201", "202", "x y",
                                    "spring", "", "5", "2", "1", "main", "0140000000",
                                    "+33140000000", "+33612345678", "+33899123456"]))
FIELDS = sorted(SAMPLE.fields | {"caller.number", "call.did", "call.location", "call.dtmf",
                                 "queue.support.available", "queue.support.waiting"})
CONTEXTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=len(FIELDS))
MOMENTS = st.integers(0, 366 * 24 * 60).map(
    lambda minutes: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes))


@settings(max_examples=400)
@given(CONTEXTS, MOMENTS)
def test_skipping_rules_by_what_they_need_never_changes_the_decision(
        ctx: dict[str, object], now: datetime) -> None:
    full = SAMPLE.evaluate(ctx, now=now)
    fast = SAMPLE.evaluate(ctx, now=now, trace=False)
    assert (fast.destination, fast.voicemail, fast.audio, fast.rule) == (
        full.destination, full.voicemail, full.audio, full.rule)
    assert SAMPLE.verdicts(fast.rule) == tuple((s.rule, s.matched) for s in full.trace)


@pytest.mark.parametrize("trace", [True, False])
def test_a_naive_time_is_refused_with_or_without_the_trace(trace: bool) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SAMPLE.evaluate({}, now=datetime(2026, 3, 31, 10, 0), trace=trace)
