"""The rules toolkit: every rules file (routing §5, scoring, workflows, intake, journal)
is read, validated and compiled here, and its conditions evaluated by one evaluator.

Pure: standard library, pydantic and yaml only; `RuleSet.evaluate` does no I/O.
`source` reads YAML keeping line numbers, `schema` validates it (pydantic, `parse_file`
for any file's model), `loader` compiles routing rules into `engine` objects and any
file's condition rows with `compile_condition`, from `conditions`, `schedules`, `lists`
and `templates`. Every load error is one `RulesError` naming file, line and entry.
`reload` keeps each file's last good version and re-reads it when it changes.
"""

from __future__ import annotations

from agent.core.rules.engine import Decision, RuleSet, TraceStep
from agent.core.rules.errors import RulesError
from agent.core.rules.loader import (
    CALL_FIELDS,
    CALLER_FIELDS,
    DEFAULT_MODULES,
    compile_condition,
    load_rules,
    parse_rules,
)
from agent.core.rules.records import RECORD_MODULES, holds, record_context, record_field
from agent.core.rules.schema import parse_file

__all__ = [
    "CALLER_FIELDS",
    "CALL_FIELDS",
    "DEFAULT_MODULES",
    "RECORD_MODULES",
    "Decision",
    "RuleSet",
    "RulesError",
    "TraceStep",
    "compile_condition",
    "holds",
    "load_rules",
    "parse_file",
    "parse_rules",
    "record_context",
    "record_field",
]
