"""An optional settings or rules file, re-read when it changes (`journal.yaml`,
`intake.yaml`, `scoring.yaml`, `workflows.yaml`).

The file is stat'ed at most once every `interval_s`, so asking for the current value on
every write costs nothing; a broken save is reported and the last good value stays.

Decided: the stat and, once per save, the read and parse of these small files run on the
event loop, where they are asked for: on record writes and
outbox batches, never on a routed call. The routing rules, which can be large (number
lists), are loaded in a worker thread instead (`agent.rules_watch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("agent.watched")
T = TypeVar("T")
Stamp = tuple[int, int]


class WatchedFile(Generic[T]):
    def __init__(self, path: Path, read: Callable[[Path], T], *, missing: T | None = None,
                 errors: tuple[type[Exception], ...] = (ValueError,),
                 interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        """`read(path)` parses the file and raises one of `errors` when it is broken;
        `missing` is the value while the file does not exist."""
        self.path, self.read, self.missing, self.errors = path, read, missing, errors
        self.interval_s, self.clock = interval_s, clock
        self.value: T | None = missing
        self.error: str | None = None
        self._stamp: Stamp | None = None
        self._checked = float("-inf")

    def load_now(self) -> None:
        """At start-up: a broken file raises (there is nothing good to keep)."""
        self._stamp, self._checked = self._stat(), self.clock()
        self.value = self.missing if self._stamp is None else self.read(self.path)
        self.error = None

    def current(self) -> T | None:
        self.refresh()
        return self.value

    def refresh(self) -> bool:
        """Re-read the file if it changed (looked at most every `interval_s`); True if so."""
        now = self.clock()
        if now - self._checked < self.interval_s:
            return False
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            self.value, self.error = self.missing, None
            log.info("%s removed: back to the defaults", self.path)
            return True
        try:
            self.value, self.error = self.read(self.path), None
        except self.errors as exc:
            self.error = str(exc)
            log.error("%s not reloaded, the previous version stays active: %s", self.path, exc)
            return False
        log.info("%s reloaded", self.path)
        return True

    def _stat(self) -> Stamp | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size
