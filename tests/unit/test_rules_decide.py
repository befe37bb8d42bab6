"""`RuleSet.decide` (the live path, no trace) must give exactly what `evaluate` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules import load_rules

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
def test_decide_agrees_with_evaluate_on_the_sample_rules(ctx: dict[str, object],
                                                         now: datetime) -> None:
    full = SAMPLE.evaluate(ctx, now=now)
    fast = SAMPLE.decide(ctx, now=now)
    assert (fast.destination, fast.voicemail, fast.audio, fast.rule) == (
        full.destination, full.voicemail, full.audio, full.rule)
    assert SAMPLE.verdicts(fast.rule) == tuple((s.rule, s.matched) for s in full.trace)
