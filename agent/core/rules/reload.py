"""Reload: every file of the rules directory keeps its last good version and is re-read when
it changes (routing rules and their lists, `journal.yaml`, `intake.yaml`, `scoring.yaml`,
`workflows.yaml`).

A `Reloadable` holds one file's parsed value. `RulesDirectory` holds them all and reloads
what a save touched (one watcher over the directory) or everything (SIGHUP,
`POST /admin/rules/reload`, another agent's announcement). Reading and parsing run in a
worker thread and the new value is swapped in with one assignment, so readers (calls,
record writes) never wait, never read a file and never see half a file. A broken file is
reported (log, `error`, readiness, the reload's answer) and the last good value stays; a
removed optional file gives its `missing` value. At start-up (`load_now`) a broken file is
fatal: there is nothing good to keep.

Pure like the rest of the toolkit; watchfiles is imported by the watching coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.core.rules.engine import RuleSet
from agent.core.rules.errors import RulesError
from agent.core.rules.loader import load_rules

log = logging.getLogger("agent.rules")
T = TypeVar("T")
R = TypeVar("R", bound="Reloadable[Any]")


class Reloadable(Generic[T]):
    """The last good value of `path`, parsed by `read(path)`, which raises one of `errors`
    when the file is broken. `missing()` is the value while the file does not exist (None:
    the file is required, its absence is an error)."""

    def __init__(self, path: Path, read: Callable[[Path], T], *,
                 missing: Callable[[], T] | None = None,
                 errors: tuple[type[Exception], ...] = (RulesError,)) -> None:
        self.path, self.read, self.missing, self.errors = path, read, missing, errors
        self.error: str | None = None
        """Why the last reload failed (None once the file is good again)."""
        self.version = 0
        """Bumped by each load that replaced the value."""
        self.reloaded = asyncio.Event()
        """Set after each successful reload (tests and admin tools may clear and wait)."""
        self.value: T  # a plain attribute (read on every call), set by the first load
        self.watched: frozenset[Path] = frozenset()
        """The files (resolved) the value was read from."""
        self._lock = asyncio.Lock()

    def current(self) -> T:
        """The value (a callable for the users that take one): no I/O."""
        return self.value

    def load_now(self) -> None:
        """At start-up, on the caller's thread: a broken file raises."""
        self._set(*self._load())

    async def reload(self) -> bool:
        """Re-read the file in a worker thread; True when the new value is active. A broken
        file never raises here: it is logged, kept in `error`, and the last good value stays."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self._load)
            except self.errors as exc:
                self.error = str(exc)
                log.error("%s not reloaded, the last good version stays active: %s",
                          self.path, exc)
                return False
            self._set(*loaded)
            log.info("%s reloaded", self.path)
            self.reloaded.set()
            return True

    def files(self, value: T) -> Iterable[Path]:
        """The files `value` was read from."""
        return (self.path,)

    def touched_by(self, changed: set[Path]) -> bool:
        """Whether a change to `changed` (resolved paths) calls for a reload: one of its
        files, or any file while it is broken (a file it needs may just have appeared)."""
        return self.error is not None or not self.watched.isdisjoint(changed)

    def _load(self) -> tuple[T, frozenset[Path]]:
        if self.missing is not None and not self.path.exists():
            value = self.missing()
        else:
            value = self.read(self.path)
        return value, frozenset(path.resolve() for path in self.files(value))

    def _set(self, value: T, watched: frozenset[Path]) -> None:
        self.value, self.watched, self.error = value, watched, None
        self.version += 1


class RulesHolder(Reloadable[RuleSet]):
    """The routing rules: `routing.yaml` and the list files it names (required)."""

    def __init__(self, directory: Path, *, region: str, modules: tuple[str, ...]) -> None:
        super().__init__(directory / "routing.yaml",
                         lambda _path: load_rules(directory, region=region, modules=modules))
        self.directory, self.region, self.modules = directory, region, modules

    def files(self, value: RuleSet) -> Iterable[Path]:
        return (self.path, *map(Path, value.files))


class RulesDirectory:
    """Every reloadable file of one rules directory: one watcher, one reload for all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[Reloadable[Any]] = []
        self.on_reload: list[Callable[[bool], None]] = []
        """Called after each reload with True when every file reloaded is good."""
        self.on_announce: list[Callable[[], None]] = []
        """Called after a local reload that changed something (to tell the other agents)."""

    def add(self, file: R) -> R:
        self.files.append(file)
        return file

    async def reload(self, changed: set[Path] | None = None, *,
                     announce: bool = True) -> dict[str, str]:
        """Reload the files `changed` touches (every file when None): the errors, by file
        name (empty: all good). `announce`: tell `on_announce` when one was reloaded."""
        chosen = [f for f in self.files if changed is None or f.touched_by(changed)]
        if not chosen:
            return {}
        good = [await file.reload() for file in chosen]
        errors = {f.path.name: f.error for f in chosen if f.error is not None}
        for listener in self.on_reload:
            listener(not errors)
        if announce and any(good):
            for announcement in self.on_announce:
                announcement()
        return errors

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop`: reload the files each save touches (debounced by watchfiles)."""
        from watchfiles import awatch

        def resolved(changes: set[tuple[Any, str]]) -> set[Path]:
            return {Path(path).resolve() for _change, path in changes}

        async for changes in awatch(self.directory, stop_event=stop, debounce=200):
            await self.reload(await asyncio.to_thread(resolved, changes))
