"""The shared services every feature is built from. `agent.app` makes them first, then
hands them to each feature's `wire` (which returns what the feature provides): no feature
sets another's state, and the order of the features is no hidden contract.

Shared: the agent's store, the CRM (the port; the embedded backend on the same database)
and its record writer, the rules directory (every feature's file, one
watcher, SIGHUP), the routing rules, `journal.yaml` (employees, the blocklist), the live
queue counters (fed by AMI, read by routing) and, on PostgreSQL, the broadcast to the
other agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.config import Config, ConfigError
from agent.core.queues import QueueBoard
from agent.core.rules import RulesError
from agent.core.rules.reload import Reloadable, RulesDirectory, RulesHolder
from agent.crm.embedded import EmbeddedCrm
from agent.crm.port import Crm
from agent.crm.records import Records
from agent.http import build_app
from agent.journal import JournalError, JournalSettings, settings_file
from agent.ops.metrics import Metrics
from agent.store import Store, StoreError, open_store
from agent.store.broadcast import RULES, Broadcast
from agent.store.postgres import PostgresDatabase

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


@dataclass(frozen=True)
class Services:
    config: Config
    metrics: Metrics
    token: str
    store: Store
    crm: Crm
    records: Records
    rules_files: RulesDirectory
    rules: RulesHolder
    journal_settings: Reloadable[JournalSettings]
    queues: QueueBoard
    app: web.Application
    stack: AsyncExitStack
    spawn: Spawn
    broadcast: Broadcast | None = None
    clock: Callable[[], float] = time.monotonic

    def is_blocked(self, number: str) -> bool:
        """On the blocklist of `journal.yaml`: routed by the rules, never journaled."""
        return self.journal_settings.value.blocked(number)


async def build(config: Config, metrics: Metrics, token: str, stack: AsyncExitStack,
                spawn: Spawn) -> Services:
    """Open the store and load the shared files: a broken one stops the start-up here."""
    try:
        store = await open_store(config.store_url, config.store.connect_timeout_s)
    except StoreError as exc:
        raise ConfigError(f"cannot open the store: {exc}") from None
    stack.push_async_callback(store.close)
    files = RulesDirectory(config.path(config.rules.dir))
    files.on_reload.append(lambda ok: metrics.rules_reloads.labels(
        "ok" if ok else "failed").inc())
    rules = files.add(RulesHolder(files.directory, region=config.region,
                                  modules=tuple(config.crm.modules)))
    journal_settings = files.add(settings_file(files.directory / "journal.yaml", config.region))
    try:
        rules.load_now()
        journal_settings.load_now()
    except RulesError as exc:
        raise ConfigError(f"cannot start with broken rules: {exc}") from None
    except JournalError as exc:
        raise ConfigError(f"cannot start with a broken journal file: {exc}") from None
    crm = EmbeddedCrm(store.db)
    records = Records(crm)
    broadcast = await _broadcast(store, files, stack, spawn)
    app = build_app(config, store, records, metrics, token)
    services = Services(config, metrics, token, store, crm, records, files, rules,
                        journal_settings, QueueBoard(), app, stack, spawn, broadcast)
    _watch(services)
    return services


async def _broadcast(store: Store, files: RulesDirectory, stack: AsyncExitStack,
                     spawn: Spawn) -> Broadcast | None:
    """On a shared PostgreSQL store, the agents tell each other about rules reloads (and
    the callers they wrote: see `routing.wire`) (§10)."""
    if not isinstance(store.db, PostgresDatabase):
        return None
    broadcast = Broadcast(store.db)
    await broadcast.subscribe(RULES, lambda _payload: spawn(files.reload(announce=False)))
    files.on_announce.append(lambda: broadcast.send(RULES))
    stack.push_async_callback(broadcast.close)
    return broadcast


def _watch(services: Services) -> None:
    """The rules directory's watcher (when `rules.watch`) and SIGHUP reload every file."""
    stop = asyncio.Event()
    files = services.rules_files
    watcher = (asyncio.create_task(files.watch(stop), name="rules-watch")
               if services.config.rules.watch else None)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: services.spawn(files.reload()))

    async def stop_watching() -> None:
        stop.set()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)

    services.stack.push_async_callback(stop_watching)
