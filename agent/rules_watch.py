"""Holds the active rules; reloads them on file change, SIGHUP or request.

Loading (file reads, YAML, pydantic) runs in a worker thread and the new `RuleSet` is
swapped in with one assignment, so calls in flight never wait and never see half a file.
A broken file is reported (log, metric, `/readyz`) and the last good rules stay active.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from agent.rules import RulesError, RuleSet, load_rules

log = logging.getLogger("agent.rules")


class RulesHolder:
    def __init__(self, directory: Path, *, region: str, modules: tuple[str, ...],
                 on_reload: Callable[[bool], None] = lambda _ok: None) -> None:
        self.directory, self.region, self.modules = directory, region, modules
        self.on_reload = on_reload
        self.error: str | None = None
        self._lock = asyncio.Lock()
        self._rules: RuleSet | None = None
        self.on_announce: list[Callable[[], None]] = []
        self.reloaded = asyncio.Event()
        """Set after each successful reload (tests and admin tools may clear and wait)."""

    @property
    def rules(self) -> RuleSet:
        if self._rules is None:
            raise RuntimeError("rules not loaded")
        return self._rules

    def current(self) -> RuleSet:
        return self.rules

    def load_now(self) -> None:
        """First load at start-up: a broken file here is fatal (nothing good to keep)."""
        self._rules = load_rules(self.directory, region=self.region, modules=self.modules)

    async def reload(self, *, announce: bool = True) -> bool:
        """Reload; True when the new rules are active. Never raises for a bad file.
        `announce`: tell `on_announce` listeners (the other agents) about it."""
        async with self._lock:
            try:
                rules = await asyncio.to_thread(load_rules, self.directory, region=self.region,
                                                modules=self.modules)
            except RulesError as exc:
                self.error = str(exc)
                log.error("rules reload failed, keeping the previous rules: %s", exc)
                self.on_reload(False)
                return False
            self._rules, self.error = rules, None
            log.info("rules reloaded from %s", self.directory)
            self.on_reload(True)
            self.reloaded.set()
            if announce:
                for listener in self.on_announce:
                    listener()
            return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever a file in the rules directory changes (debounced by watchfiles)."""
        from watchfiles import awatch

        async for _changes in awatch(self.directory, stop_event=stop, debounce=200,
                                     recursive=False):
            await self.reload()
