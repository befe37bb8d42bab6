"""One duration syntax (`agent.core.rules.durations`) for workflows.yaml and journal.yaml."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from agent.core.rules import RulesError
from agent.core.rules.durations import Duration, parse_duration
from agent.journal import JournalError, load_settings
from agent.leads.workflows import parse_workflows


@pytest.mark.parametrize(("value", "expected"), [
    (90, timedelta(seconds=90)), ("90", timedelta(seconds=90)),  # a bare number: seconds
    (90.5, timedelta(seconds=90.5)), ("0.5", timedelta(milliseconds=500)),
    (0, timedelta()), ("0m", timedelta()),
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)),
    ("4h", timedelta(hours=4)), ("1.5h", timedelta(minutes=90)), ("1d", timedelta(days=1)),
    ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)),
    ("1h30m", timedelta(minutes=90)), ("1h 30m", timedelta(minutes=90)),
    ("2d4h", timedelta(days=2, hours=4)), ("2d 4h", timedelta(days=2, hours=4)),
    ("1d 2h", timedelta(days=1, hours=2)), (" 4H ", timedelta(hours=4)),
    ("4 h", timedelta(hours=4)), ("1.5h30m", timedelta(hours=2)),
    (timedelta(minutes=3), timedelta(minutes=3)),
])
def test_accepted_forms(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["", " ", "soon", "4x", "h", "4h later", "-1h", "+1h",
                                   "1.5.h", ".5h", "h4", "4h-", "1 5m", "4 hours", "PT4H",
                                   -5, float("nan"), float("inf"), True, None, [4],
                                   timedelta(seconds=-1)])
def test_garbage_is_refused_naming_the_value_and_the_forms(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    message = str(caught.value)
    assert message.startswith(f"bad duration {value!r}: ")
    assert "number of seconds (90)" in message and "1.5h" in message and "1h30m" in message


def test_too_long_a_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999w")


class _Model(BaseModel):
    due: Duration | None = None


def test_pydantic_type_parses_and_reports_the_plain_message() -> None:
    assert _Model.model_validate({"due": "1.5h"}).due == timedelta(minutes=90)
    assert _Model.model_validate({"due": 90}).due == timedelta(seconds=90)
    assert _Model.model_validate({}).due is None
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate({"due": "soon"})
    assert caught.value.errors()[0]["msg"].startswith("bad duration 'soon': not a duration")


WORKFLOW = "workflows:\n  - name: a\n    task: {{assignee: x, title: t, due: {due}}}\n"


@pytest.mark.parametrize(("due", "expected"), [
    ("90", timedelta(seconds=90)),  # refused by workflows.yaml before #13
    ("1.5h", timedelta(minutes=90)),  # likewise
    ("1d 2h", timedelta(days=1, hours=2)), ("2d4h", timedelta(days=2, hours=4)),
    ("30m", timedelta(minutes=30)),
])
def test_workflow_due_takes_the_one_syntax(due: str, expected: timedelta) -> None:
    [workflow] = parse_workflows(WORKFLOW.format(due=due)).workflows
    assert workflow.task is not None and workflow.task.due == expected


def test_workflow_bad_due_names_the_line() -> None:
    with pytest.raises(RulesError) as caught:
        parse_workflows(WORKFLOW.format(due="soon"))
    assert "workflows.yaml:3: rule 'a': bad duration 'soon': not a duration like" in str(
        caught.value)


@pytest.mark.parametrize(("due", "expected"), [
    ("90", timedelta(seconds=90)), ("1.5h", timedelta(minutes=90)),
    ("1h30m", timedelta(minutes=90)), ("2d 4h", timedelta(days=2, hours=4)),  # as before
    ("1w", timedelta(weeks=1)),
])
def test_journal_due_takes_the_one_syntax(tmp_path: Path, due: str,
                                          expected: timedelta) -> None:
    path = tmp_path / "journal.yaml"
    path.write_text(f"missed_task_due: {due}\n")
    assert load_settings(path).missed_task_due == expected


def test_journal_bad_due_names_the_line_without_pydantic_noise(tmp_path: Path) -> None:
    path = tmp_path / "journal.yaml"
    path.write_text("blocklist_lists: []\nmissed_task_due: 1x\n")
    with pytest.raises(JournalError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(
        f"{path}:2: missed_task_due: bad duration '1x': not a duration like a number of "
        "seconds (90)")
