"""HTTP plumbing shared by every route module: app keys, errors, auth, JSON bodies.

Handlers stay short: parse into a pydantic model, call the use case, respond. Routes are
added with `add_routes`, which maps domain errors to `{"error": code, "detail": text}` with
a status; `finish_routes` answers what no route serves the same way.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent.config import Config, IpNetwork, describe
from agent.metrics import Metrics
from agent.records import Records
from agent.store import NotFound, Store, StoreError

log = logging.getLogger("agent.http")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
RECORDS = web.AppKey("records", Records)
METRICS = web.AppKey("metrics", Metrics)
TOKEN = web.AppKey("token", str)
PBX_PEER = web.AppKey[Callable[[str], bool]]("pbx_peer")
SIGNATURE_MAX_AGE_S = 300


class ApiError(Exception):
    """An HTTP-facing error: status, short machine code, human detail."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def guarded(handler: Handler) -> Handler:
    """`handler`, with exceptions mapped to JSON errors: nothing leaks a traceback.

    A wrapper on each route rather than a middleware: with any middleware, aiohttp runs a
    chain of two more coroutines on every request, 3 µs, a tenth of a `/crm` answer."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.detail)
        except ValidationError as exc:
            return error_response(422, "invalid", describe(exc))
        except NotFound as exc:
            return error_response(404, "not-found", str(exc))
        except StoreError as exc:
            log.error("store error on %s %s: %s", request.method, request.path, exc)
            return error_response(503, "store-unavailable", "the store is not reachable")
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "too-large", "request body exceeds the size limit")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error_response(exc.status, exc.reason.lower().replace(" ", "-"),
                                      exc.text or "")
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(500, "internal", "unexpected error; see the agent's log")

    return guard


def add_routes(app: web.Application, routes: Iterable[web.RouteDef]) -> None:
    """Add `routes` to `app`, each handler `guarded`."""
    app.add_routes([web.RouteDef(r.method, r.path, guarded(r.handler), r.kwargs)
                    for r in routes])


async def no_route(request: web.Request) -> web.Response:
    """What no route serves: 404, or 405 naming the methods the path has, in JSON like
    every other error (aiohttp's own answers are plain text). Registered last, as a
    catch-all; only requests that match nothing else pay for the search."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        response = error_response(405, "method-not-allowed",
                                  f"allowed here: {', '.join(sorted(allowed))}")
        response.headers["Allow"] = ",".join(sorted(allowed))
        return response
    return error_response(404, "not-found", "no such path")


def finish_routes(app: web.Application) -> None:
    """Once every feature has added its routes: the catch-all for what none serves."""
    app.router.add_route("*", "/{path:.*}", no_route)


# -- bodies -------------------------------------------------------------------------------

async def read_json(request: web.Request) -> Any:
    body = await request.read()
    try:
        return json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad-json", f"body is not valid JSON: {exc}") from None


async def read_form_or_json(request: web.Request) -> dict[str, Any]:
    """A JSON object or a form-encoded body, as a dict."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {k: str(v) for k, v in form.items()}
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "bad-json", "body must be a JSON object")
    return data


async def parse(request: web.Request, model: type[M]) -> M:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "bad-json", "body must be a JSON object")
    return model.model_validate(data)


def dump(value: BaseModel | Sequence[BaseModel], status: int = 200) -> web.Response:
    if not isinstance(value, BaseModel):
        return web.Response(text="[" + ",".join(v.model_dump_json(by_alias=True) for v in value)
                            + "]", status=status, content_type="application/json")
    return web.Response(text=value.model_dump_json(by_alias=True), status=status,
                        content_type="application/json")


# -- auth ---------------------------------------------------------------------------------

def bearer_ok(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = request.app[TOKEN]
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def require_token(request: web.Request) -> None:
    if "Authorization" not in request.headers:
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    if not bearer_ok(request):
        raise ApiError(403, "forbidden", "invalid token")


def require_pbx(request: web.Request) -> None:
    """PBX-facing reads: from an allowed network, or with `token=` / a bearer token."""
    peer = request.remote or ""
    if request.app[PBX_PEER](peer):
        return
    token = request.query.get("token")
    if token is not None and hmac.compare_digest(token, request.app[TOKEN]):
        return
    if bearer_ok(request):
        return
    raise ApiError(403, "forbidden", f"{peer or 'this address'} is not in http.pbx_allow; "
                                     "pass token=")


def peer_check(allowed: Sequence[IpNetwork]) -> Callable[[str], bool]:
    """Whether a peer address is in one of the `allowed` networks, memoised per address (a
    PBX calls from the same few addresses, once per call). Built once, with the app."""
    networks = tuple(allowed)

    @functools.lru_cache(maxsize=1024)
    def allowed_peer(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in networks)

    return allowed_peer


def signature_ok(secret: str, header: str, body: bytes, now: float) -> bool:
    """`X-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, max 5 minutes old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - stamp) > SIGNATURE_MAX_AGE_S:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


async def require_webhook(request: web.Request) -> None:
    """Inbound webhooks: a bearer token, or a valid `X-Signature` when a secret is set."""
    if bearer_ok(request):
        return
    secret = request.app[CONFIG].http.webhook_secret
    header = request.headers.get("X-Signature")
    if secret is not None and header is not None:
        if signature_ok(secret.get_secret_value(), header, await request.read(), time.time()):
            return
        raise ApiError(401, "bad-signature", "X-Signature is invalid or older than 5 minutes")
    require_token(request)


def query_int(query: Mapping[str, str], name: str, default: int, *, high: int = 1000) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad-query", f"{name} must be an integer") from None
    if not 0 <= value <= high:
        raise ApiError(400, "bad-query", f"{name} must be between 0 and {high}")
    return value
