"""The decision log: the last N routing decisions, for audit (§5), and those not persisted yet.

Entries are named tuples of strings and numbers: cheap to append, left alone by the garbage
collector, no CRM data kept alive. The rules tried, and whether each matched, follow from the
rule set in force (named by its key) and the matched rule. The reasons of each verdict are
kept for the last `explained` decisions only (they hold the call's context) and formatted on
read. `agent.routing.wire.flush_decisions` persists them once a second.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.core import phones
from agent.core.rules import RuleSet

if TYPE_CHECKING:
    from agent.routing.service import RouteResult

class Logged(NamedTuple):
    """One decision, also the row persisted (columns in this order, store/schema.py)."""

    at: float
    via: str
    caller: str
    """Masked."""
    rule: str
    destination: str
    took_ms: float
    lookup_ms: float
    error: str | None
    ruleset: str
    """The key of the rule set in force: it names the `RuleSet.names` tried."""
    tried: int


@dataclass(frozen=True, slots=True)
class DecisionBatch:
    rows: list[Logged]
    rulesets: dict[str, tuple[str, ...]]
    """The rule names of every ruleset key in `rows`."""


class DecisionLog:
    """The last `size` decisions, and the ones not persisted yet (see the module's text)."""

    FIELDS = Logged._fields[:8]  # what `latest` shows of each
    RULESETS = 64  # rule sets remembered (one per reload that renamed, added or moved rules)

    def __init__(self, size: int, explained: int = 100) -> None:
        self._recent: deque[Logged] = deque(maxlen=max(1, size))
        self._pending: deque[Logged] = deque(maxlen=max(1, size))
        # the last `explained` entries and their results, side by side (no pair per call)
        self._explained = deque[Logged](maxlen=max(1, explained))
        self._results: deque[RouteResult] = deque(maxlen=max(1, explained))
        self._rulesets: dict[str, RuleSet] = {}

    def add(self, result: RouteResult, via: str, rules: RuleSet) -> None:
        decision, key = result.decision, rules.key
        if key not in self._rulesets:
            self._remember(rules)
        entry = Logged(time.time(), via, phones.mask(result.caller), decision.rule,
                       str(decision.destination), round(result.took_ms, 3),
                       round(result.lookup_ms, 3), result.error, key,
                       len(rules.verdicts(decision.rule)))
        self._recent.append(entry)
        self._pending.append(entry)
        self._explained.append(entry)
        self._results.append(result)

    def _remember(self, rules: RuleSet) -> None:
        if len(self._rulesets) >= self.RULESETS:
            del self._rulesets[next(iter(self._rulesets))]
        self._rulesets[rules.key] = rules

    def _verdicts(self, rule: str, key: str) -> tuple[tuple[str, bool], ...]:
        rules = self._rulesets.get(key)
        return () if rules is None else rules.verdicts(rule)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The `limit` most recent decisions, newest first; recent ones with reasons."""
        # explained entries are also in _recent (a shorter window): same objects, same ids
        explained = {id(entry): result
                     for entry, result in zip(self._explained, self._results, strict=True)}
        items = list(self._recent)[-limit:] if limit > 0 else []
        out = []
        for item in reversed(items):
            entry: dict[str, Any] = dict(zip(self.FIELDS, item, strict=False))
            result = explained.get(id(item))
            entry["trace"] = ([(s.rule, s.matched, s.reason) for s in result.trace] if result
                              else [list(step) for step in self._verdicts(item.rule, item.ruleset)])
            out.append(entry)
        return out

    def take(self, size: int = 1000) -> list[DecisionBatch]:
        """Every decision not persisted yet, oldest first, in batches of up to `size`.
        Decisions logged after this call wait for the next one."""
        pending, known = self._pending, self._rulesets
        rows = list(pending)
        pending.clear()
        batches = []
        for start in range(0, len(rows), max(1, size)):
            chunk = rows[start:start + size]
            batches.append(DecisionBatch(chunk, {key: known[key].names
                                                 for key in {row.ruleset for row in chunk}
                                                 if key in known}))
        return batches
