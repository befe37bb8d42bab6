"""HTTP plumbing shared by every route module: app keys, errors, auth, JSON bodies.

Handlers stay short: parse into a pydantic model, call the use case, respond. Routes are
added with `add_routes`, which maps domain errors to `{"error": code, "detail": text}` with
a status; `finish_routes` answers what no route serves the same way.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from multidict import MultiDict
from pydantic import BaseModel, ValidationError

from agent.config import Config, IpNetwork, describe
from agent.crm.port import Crm, NotFound
from agent.crm.records import Records
from agent.ops.metrics import Metrics
from agent.store import Store, StoreError

log = logging.getLogger("agent.http")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
CRM = web.AppKey[Crm]("crm")
RECORDS = web.AppKey("records", Records)
METRICS = web.AppKey("metrics", Metrics)
TOKEN = web.AppKey("token", str)
PBX_PEER = web.AppKey[Callable[[str], bool]]("pbx_peer")


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
    chain of two more coroutines on every request (measured in bench/README.md)."""

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
    app.router.add_route("*", r"/{path:[\s\S]*}", no_route)  # `.` stops at a newline


# -- bodies -------------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_LONG_DIGITS = re.compile(rb"\d{19}")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def load_json(body: bytes) -> Any:
    """`body` as JSON, strictly: UTF-8 with no lone surrogate, no NaN, nesting at most 1,024
    deep (orjson's limits), and integers within 64 bits, what both stores' columns hold."""
    try:
        data = orjson.loads(body or b"null")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad-json", f"body is not valid JSON: {exc}") from None
    if _LONG_DIGITS.search(body) and not _ints_fit(data):  # only a long number can overflow
        raise ApiError(422, "invalid", f"integers must lie within {INT64_MIN}..{INT64_MAX}")
    return data


def _ints_fit(data: Any) -> bool:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            return False
    return True


async def read_json(request: web.Request) -> Any:
    return load_json(await request.read())


async def read_form(request: web.Request) -> dict[str, str]:
    """A form-encoded or multipart body; undecodable text or a malformed form is a 400."""
    try:
        form = await request.post()
    except (ValueError, LookupError) as exc:  # UnicodeDecodeError; an unknown charset
        raise ApiError(400, "bad-form", f"body is not a valid form: {exc}") from None
    fields: dict[str, str] = {}
    upload: str | None = None
    for name, value in form.items():
        if isinstance(value, web.FileField):
            value.file.close()
            upload = upload or value.name
        elif isinstance(value, str):
            fields[name] = value
        else:
            try:
                fields[name] = bytes(value).decode()
            except UnicodeDecodeError as exc:
                raise ApiError(400, "bad-form", f"body is not a valid form: {exc}") from None
    if upload is not None:
        raise ApiError(400, "bad-form", f"{upload}: file uploads are not accepted")
    return fields


async def read_form_or_json(request: web.Request) -> dict[str, Any]:
    """A JSON object or a form-encoded body, as a dict."""
    if request.content_type in FORM_TYPES:
        return await read_form(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "bad-json", "body must be a JSON object")
    return data


def path_id(request: web.Request, name: str = "id") -> int:
    """A record id from the path (digits); one that no store can hold is a 400."""
    raw = request.match_info[name]
    value = int(raw) if len(raw) <= 19 else INT64_MAX + 1
    if value > INT64_MAX:
        raise ApiError(400, "bad-id", f"{name} must be at most {INT64_MAX}")
    return value


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

def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of any two texts: `compare_digest` refuses non-ASCII `str`, and
    aiohttp decodes undecodable header bytes to surrogates."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def bearer_ok(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and same_secret(token.strip(), request.app[TOKEN])


def require_token(request: web.Request) -> None:
    if "Authorization" not in request.headers:
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    if not bearer_ok(request):
        raise ApiError(403, "forbidden", "invalid token")


def pbx_query(request: web.Request) -> Mapping[str, str]:
    """The query of a PBX request. PBXware appends `?field_name=...` to the configured URL
    even when that URL has a query already (`/crm?token=T?field_name=status&dtmf=1`): a
    second literal `?` separates parameters like `&` (an encoded `%3F` stays in its value)."""
    raw = request.rel_url.raw_query_string
    if "?" not in raw:
        return request.query
    return MultiDict(parse_qsl(raw.replace("?", "&"), keep_blank_values=True))


def require_pbx(request: web.Request) -> None:
    """PBX-facing reads: from an allowed network, or with `token=` / a bearer token."""
    peer = request.remote or ""
    if request.app[PBX_PEER](peer):
        return
    token = pbx_query(request).get("token")
    if token is not None and same_secret(token, request.app[TOKEN]):
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
