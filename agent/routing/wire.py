"""Wiring of routing: the lookup cache and the router, `/crm` `/route` and the rules admin
endpoints, the decision log's flush, FastAGI."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.config import cannot_listen
from agent.http import add_routes, openapi
from agent.ops.http import READY_CHECKS
from agent.pbx.agi import AgiServer
from agent.routing import http as pbx
from agent.routing.agi_scripts import AgiScripts, fallback_vars
from agent.routing.decisions import DecisionLog
from agent.routing.service import Breaker, CallerLookup, LookupCache, Router
from agent.services import Services
from agent.store import Store
from agent.store.broadcast import CALLERS

log = logging.getLogger("agent.routing")
LOOKUP_SHARE = 0.6
"""Share of `routing.deadline_ms` the CRM lookup may use. FastAGI gives the script 80 %
and keeps 20 % for the MSet round trip; the lookup stops at 60 % so that the rules still
run and the caller gets a real decision (with CRM_ERROR) rather than the bare fallback."""


async def wire(services: Services) -> Router:
    """The router, its HTTP endpoints and the decision log's flush; returns the router."""
    config, app = services.config, services.app
    deadline_s = config.routing.deadline_ms / 1000
    router = build_router(services, deadline_s * LOOKUP_SHARE)
    services.records.caller_changed.append(router.invalidate)
    if services.broadcast is not None:  # the other agents drop the callers this one wrote
        broadcast = services.broadcast
        await broadcast.subscribe(CALLERS, router.invalidate)
        services.records.caller_changed.append(lambda e164: broadcast.send(CALLERS, e164))
    app[pbx.ROUTER], app[pbx.RULES], app[pbx.DEADLINE] = router, services.rules, deadline_s
    app[pbx.RULES_FILES] = services.rules_files
    add_routes(app, pbx.routes())
    openapi.document(app, "POST", "/admin/rules/test", body=pbx.RulesTest)

    async def ready() -> tuple[bool, object]:
        return True, {"rules": str(services.rules.directory), "error": services.rules.error,
                      "breaker": router.breaker.state}

    app[READY_CHECKS]["rules"] = ready
    services.stack.push_async_callback(router.close)
    stop = asyncio.Event()
    flush = asyncio.create_task(flush_decisions(services.store, router.decisions, stop=stop,
                                                keep=config.routing.decision_log_size),
                                name="decision-log")

    async def stop_flushing() -> None:
        stop.set()
        await asyncio.gather(flush, return_exceptions=True)

    services.stack.push_async_callback(stop_flushing)
    return router


def build_router(services: Services, budget_s: float) -> Router:
    config, metrics = services.config, services.metrics
    routing = config.routing
    cache = LookupCache(routing.cache_size, routing.cache_ttl_s, routing.negative_ttl_s,
                        routing.stale_ttl_s)
    directory = CallerLookup(services.crm, services.store)
    router = Router(directory, services.rules.current, region=config.region, budget_s=budget_s,
                    cache=cache, breaker=Breaker(routing.breaker_failures,
                                                 routing.breaker_reset_s, services.clock),
                    decisions=DecisionLog(routing.decision_log_size),
                    queue_state=services.queues.snapshot, is_blocked=services.is_blocked)
    router.on_lookup = metrics.lookup_seconds.observe
    router.on_cache = metrics.cached
    router.on_error = metrics.crm_error
    metrics.breaker_open.set_function(lambda: router.breaker.state == "open")
    return router


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


async def listen(services: Services, router: Router) -> AgiServer | None:
    """Start the FastAGI server (scripts `route`, `lookup`, `dtmf`) when enabled."""
    config, metrics, rules = services.config, services.metrics, services.rules
    if not config.agi.enabled:
        return None
    scripts = AgiScripts(router, metrics, callerid_name=config.agi.set_callerid_name)
    server = AgiServer(scripts.scripts(), host=config.agi.host, port=config.agi.port,
                       deadline_s=config.routing.deadline_ms / 1000,
                       header_timeout_s=config.agi.header_timeout_s, allow=config.agi.allow,
                       fallback=lambda _req, reason: fallback_vars(rules.value.default, reason))
    try:
        await server.start()
    except OSError as exc:
        raise cannot_listen(exc, "FastAGI", config.agi.host, config.agi.port,
                            "agi.port") from None
    metrics.agi_outcomes = server.outcomes
    services.stack.push_async_callback(server.stop)
    return server
