"""Routing use case: caller number → lookup (cache, breaker, deadline) → rules → decision.

Pure of network libraries: what is known about a caller comes through a `CallerDirectory`
(`CallerLookup`: the CRM port and the agent's call history), the clock and the rules are
injected. The PBX adapters (FastAGI, HTTP) turn a `RouteResult` into their own answer.

Deadline policy: the lookup gets `budget_s` (the adapter keeps the rest of the PBX's
deadline for its own I/O). A lookup that misses the budget keeps running in the background
(shielded, one per number) so its answer warms the cache for the next call, while this call
gets the stale cached view if there is one, else routes as an unknown caller with an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cachetools import TTLCache

from agent.core import phones
from agent.core.model import CallerRecords, flatten
from agent.core.rules import Decision, RuleSet, TraceStep
from agent.crm.port import Crm
from agent.journal.association import Association, associate
from agent.routing.decisions import DecisionLog

log = logging.getLogger("agent.routing")


class CallerDirectory(Protocol):
    async def find_caller(self, e164: str) -> CallerRecords: ...

    async def last_agent(self, e164: str) -> str | None: ...


class CallHistory(Protocol):
    async def last_agent(self, e164: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CallerLookup:
    """The caller's records from the CRM, who last talked to them from the agent's calls."""

    crm: Crm
    calls: CallHistory

    async def find_caller(self, e164: str) -> CallerRecords:
        return await self.crm.find_caller(e164)

    async def last_agent(self, e164: str) -> str | None:
        return await self.calls.last_agent(e164)


@dataclass(slots=True)
class RouteRequest:
    """A call to route; `caller` is E.164 (None: withheld or invalid), see `Router.request`.
    Read-only by convention: built for every call, and a frozen dataclass costs several
    times as much to build (bench/README.md)."""

    caller: str | None
    did: str | None = None
    dtmf: str | None = None
    location: str | None = None
    via: str = "http"
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallerView:
    """What routing needs about one number, cached as one unit."""

    ctx: Mapping[str, Any]
    contact_id: int | None = None
    contact_name: str = ""
    owner: str | None = None
    score: int = 0

    @property
    def known(self) -> bool:
        return self.contact_id is not None


UNKNOWN = CallerView(ctx={"caller.known": False})


Looked = tuple["CallerView", str | None]
"""What is known of a caller, and why the CRM could not say (None: it did)."""


@dataclass(slots=True)
class RouteResult:
    """Read-only by convention, like `RouteRequest`."""

    decision: Decision
    caller: str | None
    anonymous: bool
    view: CallerView
    ctx: Mapping[str, Any]
    error: str | None
    took_ms: float
    lookup_ms: float
    rules: RuleSet | None = None
    now: datetime | None = None

    @property
    def trace(self) -> tuple[TraceStep, ...]:
        """Which rule matched and why: replayed on demand (evaluation is pure), so that a
        live call does not build it."""
        if self.decision.trace or self.rules is None or self.now is None:
            return self.decision.trace
        return self.rules.evaluate(self.ctx, now=self.now).trace


def build_view(records: CallerRecords, assoc: Association, last_agent: str | None) -> CallerView:
    contact = assoc.contact
    owner = assoc.owner
    ctx: dict[str, Any] = {
        **flatten("contact", contact),
        **flatten("lead", assoc.lead), **flatten("account", assoc.account),
        **flatten("deal", assoc.deal),
        "caller.known": records.known,
    }
    if contact is not None:
        ctx["contact.name"] = contact.name
        ctx["caller.score"] = contact.score
    if owner:
        ctx["owner.extension"] = owner
    if last_agent:
        ctx["caller.last_agent"] = last_agent
    return CallerView(ctx=ctx, contact_id=contact.id if contact else None,
                      contact_name=contact.name if contact else "", owner=owner,
                      score=contact.score if contact else 0)


class Breaker:
    """Opens after `failures` consecutive errors; lets one probe through after `reset_s`."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float]) -> None:
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self.count = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.clock() - self.opened_at >= self.reset_s:
            self.opened_at = self.clock()  # half-open: one probe per reset period
            return True
        return False

    def success(self) -> None:
        self.count, self.opened_at = 0, None

    def failure(self) -> None:
        self.count += 1
        if self.count >= self.failures:
            if self.opened_at is None:
                log.warning("CRM circuit breaker open after %d failures", self.count)
            self.opened_at = self.clock()

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


@dataclass
class LookupCache:
    """Per-number TTL cache; unknown numbers expire sooner (a quarter of the entries); the
    last good view of a number serves, as stale, for `stale_ttl_s` when the CRM fails.
    `size` 0 disables it."""

    size: int
    ttl_s: float
    negative_ttl_s: float
    stale_ttl_s: float
    clock: Callable[[], float] = time.monotonic
    fresh: TTLCache[str, CallerView] = field(init=False)
    negative: TTLCache[str, CallerView] = field(init=False)
    stale: TTLCache[str, CallerView] = field(init=False)

    def __post_init__(self) -> None:
        size, clock = max(1, self.size), self.clock
        self.fresh = TTLCache(size, self.ttl_s, clock)
        self.negative = TTLCache(max(1, size // 4), self.negative_ttl_s, clock)
        self.stale = TTLCache(size, self.stale_ttl_s, clock)

    def get(self, e164: str) -> CallerView | None:
        if self.size == 0:
            return None
        return _get(self.fresh, e164) or _get(self.negative, e164)

    def put(self, e164: str, view: CallerView) -> None:
        if self.size == 0:
            return
        if view.known:
            self.fresh[e164] = view
            self.stale[e164] = view
        else:
            self.negative[e164] = view
            self.stale.pop(e164, None)

    def get_stale(self, e164: str) -> CallerView | None:
        return _get(self.stale, e164)

    def invalidate(self, e164: str) -> None:
        for cache in (self.fresh, self.negative, self.stale):
            cache.pop(e164, None)


def _get(cache: TTLCache[str, CallerView], e164: str) -> CallerView | None:
    """The entry, None when absent or expired. Membership first: a miss (an unknown caller,
    in `fresh`) raises no `KeyError` through TTLCache's layers. Not `TTLCache.get`, which
    does the same test and read and measured slower (bench/README.md)."""
    try:
        return cache[e164] if e164 in cache else None  # noqa: SIM401 (see the docstring)
    except KeyError:  # expired between the test and the read
        return None


class Router:
    def __init__(self, directory: CallerDirectory, rules: Callable[[], RuleSet], *,
                 region: str, budget_s: float, cache: LookupCache, breaker: Breaker,
                 decisions: DecisionLog,
                 queue_state: Callable[[], Mapping[str, Mapping[str, int]]] = dict,
                 is_blocked: Callable[[str], bool] = lambda _n: False,
                 clock: Callable[[], float] = time.monotonic, max_inflight: int = 1000) -> None:
        self.directory, self.rules, self.region = directory, rules, region
        self.budget_s, self.cache, self.breaker = budget_s, cache, breaker
        self.decisions, self.queue_state, self.is_blocked = decisions, queue_state, is_blocked
        self.clock, self.max_inflight = clock, max_inflight
        self.inflight: dict[str, asyncio.Future[CallerView]] = {}
        self.on_lookup: Callable[[float], None] = lambda _seconds: None
        self.on_cache: Callable[[str], None] = lambda _result: None
        self.on_error: Callable[[str], None] = lambda _reason: None
        """Called with the reason each time a caller is answered without the CRM."""

    def request(self, caller: str | None, *, did: str | None = None, dtmf: str | None = None,
                location: str | None = None, via: str = "http",
                at: datetime | None = None) -> RouteRequest:
        """A call to route, its caller ID read once into E.164 (None: withheld or invalid)."""
        return RouteRequest(phones.normalize(caller, self.region), did, dtmf, location, via, at)

    def route(self, request: RouteRequest) -> RouteResult | Awaitable[RouteResult]:
        """Where the call goes, logged for audit: at once when no lookup is needed (a
        cached or anonymous caller: no task, no timer), else an awaitable that asks the CRM
        within the lookup budget."""
        start = self.clock()
        known = self.look_up(request.caller)
        if isinstance(known, tuple):
            view, error = known
            return self._decide(request, view, error, start, live=True)
        return self._decide_after(request, known, start, live=True)

    async def dry_run(self, request: RouteRequest) -> RouteResult:
        """The decision with the trace of every rule tried, not logged (rule tests, CLI)."""
        start = self.clock()
        return await self._decide_after(request, self.look_up(request.caller), start,
                                        live=False)

    def give_up(self, request: RouteRequest, reason: str) -> RouteResult:
        """The default destination, when even routing could not finish in time."""
        return RouteResult(self.rules().default, request.caller, request.caller is None,
                           UNKNOWN, {}, reason, 0.0, 0.0)

    def look_up(self, e164: str | None) -> Looked | Awaitable[Looked]:
        """What is known of a caller, and why the CRM could not say (None: it did): at
        once when cached or anonymous, else an awaitable. When the CRM fails, the stale
        view or the unknown caller's, as for routing. Nothing is decided or logged."""
        if e164 is None:
            return UNKNOWN, None
        cached = self.cache.get(e164)
        if cached is None:
            return self._ask_crm(e164)
        self.on_cache("hit")
        return cached, None

    async def _decide_after(self, request: RouteRequest, known: Looked | Awaitable[Looked],
                            start: float, *, live: bool) -> RouteResult:
        view, error = known if isinstance(known, tuple) else await known
        return self._decide(request, view, error, start, live=live)

    def _decide(self, request: RouteRequest, view: CallerView, error: str | None,
                start: float, *, live: bool) -> RouteResult:
        lookup_ms = (self.clock() - start) * 1000
        caller = request.caller
        ctx = self.context(request, view)
        rules, now = self.rules(), request.at or datetime.now(UTC)
        decision = rules.evaluate(ctx, now=now, trace=not live)
        result = RouteResult(decision, caller, caller is None, view, ctx, error,
                             (self.clock() - start) * 1000, lookup_ms, rules, now)
        if live:
            self.decisions.add(result, request.via, rules)
        return result

    def context(self, request: RouteRequest, view: CallerView) -> dict[str, Any]:
        """What the rules read: the caller's records, the call and the queues."""
        caller = request.caller
        ctx = dict(view.ctx)
        ctx["caller.anonymous"] = caller is None
        ctx["caller.blocked"] = caller is not None and self.is_blocked(caller)
        if caller:
            ctx["caller.number"] = caller
        if request.did:
            ctx["call.did"] = request.did
        if request.dtmf:
            ctx["call.dtmf"] = request.dtmf
        if request.location:
            ctx["call.location"] = request.location
        for queue, state in self.queue_state().items():
            for name, count in state.items():
                ctx[f"queue.{queue}.{name}"] = count
        return ctx

    async def _ask_crm(self, e164: str) -> Looked:
        self.on_cache("miss")
        if not self.breaker.allow():
            return self.fallback(e164, "crm-unavailable")
        pending = self.inflight.get(e164)
        if pending is None:
            if len(self.inflight) >= self.max_inflight:
                return self.fallback(e164, "crm-overloaded")
            pending = asyncio.ensure_future(self._lookup(e164))
            self.inflight[e164] = pending
            pending.add_done_callback(lambda f: self._done(e164, f))
        try:
            async with asyncio.timeout(self.budget_s):
                return await asyncio.shield(pending), None
        except TimeoutError:
            self.breaker.failure()  # a CRM that hangs is as dead as one that errors
            return self.fallback(e164, "crm-timeout")
        except Exception as exc:  # the CRM failed: route anyway, say why
            log.warning("lookup of %s failed: %s", phones.mask(e164), exc)
            return self.fallback(e164, "crm-error")

    async def _lookup(self, e164: str) -> CallerView:
        started = self.clock()
        try:
            records, last_agent = await asyncio.gather(
                self.directory.find_caller(e164), self.directory.last_agent(e164))
        except Exception:
            self.breaker.failure()
            self.on_lookup(self.clock() - started)
            raise
        self.breaker.success()
        self.on_lookup(self.clock() - started)
        view = build_view(records, associate(records, datetime.now(UTC)), last_agent)
        self.cache.put(e164, view)
        return view

    def _done(self, e164: str, future: asyncio.Future[CallerView]) -> None:
        self.inflight.pop(e164, None)
        if not future.cancelled():
            future.exception()  # retrieved here: waiters may all have timed out

    async def close(self) -> None:
        """Cancel lookups still running in the background (shutdown)."""
        pending = list(self.inflight.values())
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def fallback(self, e164: str, reason: str) -> tuple[CallerView, str]:
        self.on_error(reason)
        stale = self.cache.get_stale(e164)
        return (stale, f"{reason} (stale)") if stale else (UNKNOWN, reason)

    def invalidate(self, e164: str) -> None:
        self.cache.invalidate(e164)
