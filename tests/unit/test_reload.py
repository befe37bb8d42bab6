"""One reload mechanism for the rules directory: the last good version stays, a removed
optional file gives its defaults, a save reloads what it touched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import pytest

from agent.core.rules import DEFAULT_MODULES, RulesError
from agent.core.rules.reload import Reloadable, RulesDirectory, RulesHolder

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"


def number(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(str(path), None, None, f"cannot read: {exc}") from exc
    if not text.strip().isdigit():
        raise RulesError(str(path), 1, None, f"not a number: {text.strip()!r}")
    return int(text)


def optional(path: Path) -> Reloadable[int]:
    return Reloadable(path, number, missing=lambda: 0)


async def test_a_broken_save_never_replaces_the_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("1")
    file = Reloadable(path, number)
    file.load_now()
    path.write_text("2")
    assert file.value == 1  # nothing is read until a reload
    assert await file.reload() and file.value == 2 and file.reloaded.is_set()
    file.reloaded.clear()
    path.write_text("two")
    assert not await file.reload()
    assert file.value == 2 and "not a number: 'two'" in (file.error or "")
    assert not file.reloaded.is_set()
    path.unlink()  # required: its absence is an error too
    assert not await file.reload() and file.value == 2
    path.write_text("3")
    assert await file.reload() and (file.value, file.error) == (3, None)


async def test_a_removed_optional_file_gives_its_defaults(tmp_path: Path) -> None:
    file = optional(tmp_path / "n.yaml")
    file.load_now()
    assert file.value == 0
    (tmp_path / "n.yaml").write_text("5")
    assert await file.reload() and file.value == 5
    (tmp_path / "n.yaml").unlink()
    assert await file.reload() and file.value == 0 and file.version == 3


def test_at_start_a_broken_file_raises(tmp_path: Path) -> None:
    (tmp_path / "n.yaml").write_text("x")
    with pytest.raises(RulesError, match="not a number"):
        optional(tmp_path / "n.yaml").load_now()


async def test_a_change_reloads_the_files_it_touches(tmp_path: Path) -> None:
    shutil.copytree(REPO_RULES, tmp_path / "rules")
    directory = RulesDirectory(tmp_path / "rules")
    rules = directory.add(RulesHolder(directory.directory, region="FR",
                                               modules=DEFAULT_MODULES))
    count = directory.add(optional(directory.directory / "count.yaml"))
    for file in directory.files:
        file.load_now()
    results: list[bool] = []
    announced: list[None] = []
    directory.on_reload.append(results.append)
    directory.on_announce.append(lambda: announced.append(None))
    spam = (tmp_path / "rules" / "spam.txt").resolve()
    assert rules.touched_by({spam}) and not count.touched_by({spam})  # a list routing reads
    assert await directory.reload({(tmp_path / "rules" / "journal.yaml").resolve()}) == {}
    assert (rules.version, count.version, results) == (1, 1, [])  # nobody reads it here
    (tmp_path / "rules" / "count.yaml").write_text("oops")
    errors = await directory.reload({count.path.resolve()})
    assert list(errors) == ["count.yaml"] and "not a number" in errors["count.yaml"]
    assert (rules.version, results, announced) == (1, [False], [])
    assert count.touched_by({spam})  # while broken, any change retries it
    (tmp_path / "rules" / "count.yaml").write_text("4")
    assert await directory.reload(announce=False) == {}  # SIGHUP, HTTP: every file
    assert (rules.version, count.value, results, announced) == (2, 4, [False, True], [])
    assert await directory.reload() == {} and len(announced) == 1


async def test_the_watcher_reloads_a_saved_file(tmp_path: Path) -> None:
    directory = RulesDirectory(tmp_path)
    count = directory.add(optional(tmp_path / "count.yaml"))
    count.load_now()
    stop = asyncio.Event()
    watcher = asyncio.create_task(directory.watch(stop))
    try:
        for attempt in range(40):  # the watcher arms asynchronously: save until it reacts
            (tmp_path / "count.yaml").write_text(str(attempt + 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(count.reloaded.wait(), 0.5)
                break
        assert count.value > 0 and count.error is None
    finally:
        stop.set()
        await watcher
