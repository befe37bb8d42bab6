"""PBX-facing reads (`/crm`, `/route`) and the rules admin endpoints (§4, §5)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from agent.core.rules.reload import RulesDirectory, RulesHolder
from agent.http.core import (
    METRICS,
    ApiError,
    parse,
    pbx_query,
    query_int,
    require_pbx,
    require_token,
)
from agent.routing.service import Looked, Router, RouteRequest, RouteResult

log = logging.getLogger("agent.http")
ROUTER = web.AppKey("router", Router)
RULES = web.AppKey("rules", RulesHolder)
RULES_FILES = web.AppKey("rules_files", RulesDirectory)
DEADLINE = web.AppKey("deadline_s", float)
CALLER_PARAMS = ("callerid", "caller", "cid", "phone", "number", "from")
ROUTE_FIELDS = {"destination", "route"}
FIRST_OF = {"email": "contact.emails", "phone": "contact.phones"}
"""`/crm` field names answered with the first value of a contact's list."""
T = TypeVar("T")
L = TypeVar("L")


def caller_param(query: Mapping[str, str]) -> str | None:
    for name in CALLER_PARAMS:
        value = query.get(name)
        if value:
            return value
    return None


@functools.lru_cache(maxsize=1024)
def field_keys(name: str, modules: tuple[str, ...]) -> tuple[str, ...]:
    """The context keys a `field_name` reads, in order: itself when qualified, else the
    bare name in each module (the rules' module order), then the list it is the first
    value of (`email`: `contact.emails`)."""
    if "." in name:
        return (name,)
    return (*(f"{m}.{name}" for m in modules), *((FIRST_OF[name],) if name in FIRST_OF else ()))


def field_value(ctx: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """The first of `keys` set in `ctx`, as the plain text a PBX compares ("" when none); a
    list (a contact's e-mails or phones) answers its first value."""
    for key in keys:
        value = ctx.get(key)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if value is not None:
            if isinstance(value, bool):
                return "1" if value else "0"
            return str(value)
    return ""


def summary(result: RouteResult, *, trace: bool) -> dict[str, Any]:
    decision = result.decision
    body: dict[str, Any] = {
        "destination": {"type": decision.destination.type,
                        "target": decision.destination.target},
        "voicemail": decision.voicemail, "audio": decision.audio, "rule": decision.rule,
        "caller": result.caller, "anonymous": result.anonymous,
        "contact": {"known": result.view.known, "id": result.view.contact_id,
                    "name": result.view.contact_name, "owner_extension": result.view.owner,
                    "score": result.view.score},
        "error": result.error, "took_ms": round(result.took_ms, 3),
    }
    if trace:
        body["trace"] = [{"rule": s.rule, "matched": s.matched, "reason": s.reason}
                         for s in result.trace]
    return body


async def in_time(request: web.Request, answer: Awaitable[T], late: Callable[[], L],
                  what: str, via: str) -> T | L:
    """`answer` awaited within the deadline; past it, `late()`. Only for an answer that is
    not there yet: a cached caller's is used at once (no coroutine, no timeout scope)."""
    deadline_s = request.app[DEADLINE]
    try:
        async with asyncio.timeout(deadline_s):
            return await answer
    except TimeoutError:
        log.warning("%s missed the %.0f ms deadline (%s)", what, deadline_s * 1000, via)
        return late()


async def decide(request: web.Request, route: RouteRequest) -> RouteResult:
    """Route within the deadline; past it, the default destination with an error."""
    router = request.app[ROUTER]
    result = router.route(route)
    if not isinstance(result, RouteResult):
        result = await in_time(request, result, lambda: router.give_up(route, "timeout"),
                               "routing", route.via)
    request.app[METRICS].routed(result.decision.rule, route.via, result.took_ms / 1000)
    return result


def route_request(router: Router, query: Mapping[str, str], via: str) -> RouteRequest:
    return router.request(caller_param(query), did=query.get("did"), dtmf=query.get("dtmf"),
                          location=query.get("location"), via=via)


async def crm_field(request: web.Request) -> web.Response:
    """PBXware custom CRM: `?field_name=F&dtmf=D&callerid=N` → plain-text value of F.

    The PBX compares the value with its own rules (§4), so a field is read without
    evaluating ours or logging a decision; `destination` (or `route`) asks for the agent's
    own decision, which is logged like every live one. This is the PBX's hot path: a
    caller's CRM field is read straight from their cached record; the whole rules context
    is built only for the fields only it holds (`caller.*`, `call.*`, `queue.*`)."""
    require_pbx(request)
    query, router = pbx_query(request), request.app[ROUTER]
    name = query.get("field_name", "").strip()
    if not name:
        raise ApiError(400, "missing-field-name", "field_name is required")
    call = route_request(router, query, "crm")
    if name in ROUTE_FIELDS:
        result = await decide(request, call)
        return web.Response(text=str(result.decision.destination), content_type="text/plain")
    looked = router.look_up(call.caller)
    known: Looked | None = (looked if isinstance(looked, tuple)
                            else await in_time(request, looked, lambda: None, "lookup", "crm"))
    text = ""
    if known is not None:  # else the lookup missed the deadline: an empty answer
        modules = request.app[RULES].modules
        ctx = known[0].ctx
        if "." in name and name.partition(".")[0] not in modules:
            ctx = router.context(call, known[0])
        text = field_value(ctx, field_keys(name, modules))
    return web.Response(text=text, content_type="text/plain")


async def route(request: web.Request) -> web.Response:
    require_pbx(request)
    query = pbx_query(request)
    result = await decide(request, route_request(request.app[ROUTER], query, "http"))
    return web.json_response(summary(result, trace=query.get("trace") == "1"))


class RulesTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caller: str | None = None
    did: str | None = None
    dtmf: str | None = None
    location: str | None = None
    at: datetime | None = None


async def rules_test(request: web.Request) -> web.Response:
    """Dry run: the decision with the trace of every rule tried; not logged as a call."""
    require_token(request)
    body = await parse(request, RulesTest)
    if body.at is not None and body.at.tzinfo is None:
        raise ApiError(422, "invalid", "at: give a timezone, e.g. 2026-12-01T10:00:00+01:00")
    router = request.app[ROUTER]
    result = await router.dry_run(router.request(body.caller, did=body.did, dtmf=body.dtmf,
                                                 location=body.location, via="test",
                                                 at=body.at))
    return web.json_response(summary(result, trace=True))


async def rules_reload(request: web.Request) -> web.Response:
    """Reload every file of the rules directory; 422 naming the broken ones (each keeps its
    last good version)."""
    require_token(request)
    errors = await request.app[RULES_FILES].reload()
    return web.json_response({"reloaded": not errors, "error": "; ".join(errors.values()) or None},
                             status=422 if errors else 200)


async def decisions(request: web.Request) -> web.Response:
    require_token(request)
    limit = query_int(request.query, "limit", 50)
    return web.json_response(request.app[ROUTER].decisions.latest(limit))


def routes() -> list[web.RouteDef]:
    return [web.get("/crm", crm_field), web.get("/route", route),
            web.post("/admin/rules/test", rules_test),
            web.post("/admin/rules/reload", rules_reload),
            web.get("/admin/decisions", decisions)]
