"""Wiring of routing: rules (+ hot reload), lookup cache, the router, `/crm` `/route`, FastAGI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from agent.agi import AgiServer
from agent.broadcast import CALLERS, RULES, Broadcast
from agent.channel_vars import fallback_vars
from agent.config import ConfigError, cannot_listen
from agent.decisions import DecisionLog
from agent.http import add_routes, openapi, pbx
from agent.http.ops import READY_CHECKS
from agent.routing import Breaker, LookupCache, Router
from agent.routing_agi import AgiScripts
from agent.rules import RulesError
from agent.rules.reload import RulesDirectory, RulesHolder
from agent.store.postgres import PostgresDatabase

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.store import Store

log = logging.getLogger("agent.routing")
LOOKUP_SHARE = 0.6
"""Share of `routing.deadline_ms` the CRM lookup may use. FastAGI gives the script 80 %
and keeps 20 % for the MSet round trip; the lookup stops at 60 % so that the rules still
run and the caller gets a real decision (with CRM_ERROR) rather than the bare fallback."""


async def prepare(agent: Agent) -> None:
    config, metrics = agent.config, agent.metrics
    files = agent.rules_files
    holder = files.add(RulesHolder(files.directory, region=config.region,
                                   modules=tuple(config.crm.modules)))
    files.on_reload.append(lambda ok: metrics.rules_reloads.labels(
        "ok" if ok else "failed").inc())
    try:
        holder.load_now()
    except RulesError as exc:
        raise ConfigError(f"cannot start with broken rules: {exc}") from None
    deadline_s = config.routing.deadline_ms / 1000
    router = build_router(agent, holder, deadline_s * LOOKUP_SHARE)
    assert agent.records is not None and agent.app is not None
    agent.records.caller_changed.append(router.invalidate)
    agent.router, agent.rules = router, holder
    app = agent.app
    app[pbx.ROUTER], app[pbx.RULES], app[pbx.DEADLINE] = router, holder, deadline_s
    app[pbx.RULES_FILES] = files
    add_routes(app, pbx.routes())
    openapi.document(app, "POST", "/admin/rules/test", body=pbx.RulesTest)

    async def ready() -> tuple[bool, object]:
        return True, {"rules": str(holder.directory), "error": holder.error,
                      "breaker": router.breaker.state}

    app[READY_CHECKS]["rules"] = ready
    agent.stack.push_async_callback(router.close)
    await start_background(agent, files, router)
    await share_with_other_agents(agent, files, router)


async def share_with_other_agents(agent: Agent, files: RulesDirectory, router: Router) -> None:
    """On a shared PostgreSQL store, keep every agent's cache and rules in step (§10)."""
    assert agent.store is not None and agent.records is not None
    if not isinstance(agent.store.db, PostgresDatabase):
        return
    broadcast = Broadcast(agent.store.db)
    await broadcast.subscribe(CALLERS, router.invalidate)
    await broadcast.subscribe(RULES, lambda _payload: agent.spawn(files.reload(announce=False)))
    agent.records.caller_changed.append(lambda e164: broadcast.send(CALLERS, e164))
    files.on_announce.append(lambda: broadcast.send(RULES))
    agent.stack.push_async_callback(broadcast.close)


def build_router(agent: Agent, holder: RulesHolder, budget_s: float) -> Router:
    config, metrics, store = agent.config, agent.metrics, agent.store
    assert store is not None
    routing = config.routing
    cache = LookupCache(routing.cache_size, routing.cache_ttl_s, routing.negative_ttl_s,
                        routing.stale_ttl_s)
    router = Router(store, holder.current, region=config.region, budget_s=budget_s,
                    cache=cache, breaker=Breaker(routing.breaker_failures,
                                                 routing.breaker_reset_s, agent.clock),
                    decisions=DecisionLog(routing.decision_log_size),
                    queue_state=lambda: agent.queue_state(),
                    is_blocked=lambda number: agent.is_blocked(number))

    router.on_lookup = metrics.lookup_seconds.observe
    router.on_cache = metrics.cached
    router.on_error = metrics.crm_error
    metrics.breaker_open.set_function(lambda: router.breaker.state == "open")
    return router


async def start_background(agent: Agent, files: RulesDirectory, router: Router) -> None:
    """The decision log's flush; the rules directory's watcher (every feature's files:
    journal and leads add theirs after this) and SIGHUP, which reloads them all."""
    stop = asyncio.Event()
    assert agent.store is not None
    flush = flush_decisions(agent.store, router.decisions, stop=stop,
                            keep=agent.config.routing.decision_log_size)
    tasks = [asyncio.create_task(flush, name="decision-log")]
    if agent.config.routing.watch:
        tasks.append(asyncio.create_task(files.watch(stop), name="rules-watch"))
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: agent.spawn(files.reload()))

    async def stop_all() -> None:
        stop.set()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*tasks, return_exceptions=True)

    agent.stack.push_async_callback(stop_all)


FLUSH_INTERVAL_S = 1.0
"""How often the decision log is persisted. Each write is a transaction with a fixed cost
(commit, WAL pages, a thread hop), so a few large writes cost the calls less than many small
ones (bench/README.md)."""


async def flush_decisions(store: Store, decisions: DecisionLog, *, keep: int,
                          stop: asyncio.Event, interval_s: float = FLUSH_INTERVAL_S) -> None:
    """Persist the decision log (audit) once a second and at shutdown, in batches of up to
    1,000 decisions: each batch is one row, written in one transaction on the store's thread,
    and calls are answered in between. Each tick writes what was pending when it began, so
    under load the store is written once a second, not continuously in small batches."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
        stopping = stop.is_set()
        while batches := decisions.take():  # at stop: until nothing is left
            for batch in batches:
                try:
                    await store.log_decisions(batch.rows, batch.rulesets, keep=keep)
                except Exception as exc:
                    log.warning("decision log not persisted (%d entries): %s",
                                len(batch.rows), exc)
            if not stopping:
                break
        if stopping:
            return


async def start(agent: Agent) -> None:
    """Start the FastAGI server (scripts `route`, `lookup`, `dtmf`)."""
    config = agent.config
    if not config.agi.enabled:
        return
    router, holder, metrics = agent.router, agent.rules, agent.metrics
    scripts = AgiScripts(router, metrics, callerid_name=config.agi.set_callerid_name)
    server = AgiServer(scripts.scripts(),
                       host=config.agi.host, port=config.agi.port,
                       deadline_s=config.routing.deadline_ms / 1000,
                       header_timeout_s=config.agi.header_timeout_s, allow=config.agi.allow,
                       fallback=lambda _req, reason: fallback_vars(holder.rules.default, reason))
    try:
        await server.start()
    except OSError as exc:
        raise cannot_listen(exc, "FastAGI", config.agi.host, config.agi.port,
                            "agi.port") from None
    agent.agi = server
    metrics.agi_outcomes = server.outcomes
    agent.stack.push_async_callback(server.stop)
