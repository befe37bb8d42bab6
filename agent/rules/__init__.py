"""Routing rules (§5): load `rules/routing.yaml`, compile once, evaluate per call.

Pure: standard library, pydantic and yaml only; `RuleSet.evaluate` does no I/O.
`source` reads YAML keeping line numbers, `schema` validates it (pydantic), `loader`
compiles it into `engine` objects built from `conditions`, `schedules`, `lists` and
`templates`. Every load error is one `RulesError` naming file, line and rule.
"""

from __future__ import annotations

from agent.rules.engine import Decision, RuleSet, TraceStep
from agent.rules.errors import RulesError
from agent.rules.loader import CALL_FIELDS, CALLER_FIELDS, DEFAULT_MODULES, load_rules, parse_rules

__all__ = [
    "CALLER_FIELDS",
    "CALL_FIELDS",
    "DEFAULT_MODULES",
    "Decision",
    "RuleSet",
    "RulesError",
    "TraceStep",
    "load_rules",
    "parse_rules",
]
