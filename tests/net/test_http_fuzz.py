"""Hostile HTTP input over a real socket: every error is a JSON 4xx, never a 500 (issue #11).

Known causes of 500s are pinned as regression cases; then a property-based fuzz over every
registered route sends random methods, path segments, queries, headers and bodies, with and
without credentials, and checks the answers' shape.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from agent.app import Agent
from tests.conftest import TOKEN, AgentFactory, auth
from tests.net.leadkit import SECRET, signature

BIG = "9" * 23  # above 2^63: no SQLite or PostgreSQL integer holds it
DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b'{"email": "a@example.fr", "n": ' + b"7" * 5000 + b"}"
SURROGATE = b'{"email": "\\ud800@example.fr", "RGPD": "1"}'


@pytest.fixture
async def agent(start_agent: AgentFactory) -> Agent:
    """PBX reads only from 10/8, so that `token=` is checked for loopback clients."""
    return await start_agent(CRM_AGENT_WEBHOOK_SECRET=SECRET, CRM_AGENT_AGI__ENABLED="false",
                             CRM_AGENT_HTTP__PBX_ALLOW="[10.0.0.0/8]",
                             CRM_AGENT_RECORDING_SECRET="recsec")


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        yield session


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, Any]:
    """One request written byte for byte (headers aiohttp's client would not send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                     + body)
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def assert_error(status: int, body: Any, expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert set(body) == {"error", "detail"} and isinstance(body["detail"], str), body
    if code is not None:
        assert body["error"] == code, body


def multipart(boundary: str | None = "XyZ") -> dict[str, str]:
    kind = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return {**auth(), "Content-Type": kind}


def part(headers: bytes, value: bytes = b"value") -> bytes:
    return b"--XyZ\r\n" + headers + b"\r\n\r\n" + value + b"\r\n--XyZ--\r\n"


NAMELESS = part(b"Content-Disposition: form-data")
KLINGON_PART = part(b'Content-Disposition: form-data; name="nom"\r\n'
                    b"Content-Type: text/plain; charset=klingon")
BINARY_PART = part(b'Content-Disposition: form-data; name="nom"\r\n'
                   b"Content-Type: application/octet-stream", b"\xff\xfe")
FILE_PART = part(b'Content-Disposition: form-data; name="cv"; filename="cv.txt"')
JSON = {**auth(), "Content-Type": "application/json"}
FORM = "application/x-www-form-urlencoded"

CASES: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    ("GET", "/api/contacts", {"Authorization": "Bearer tökén"}, b"", 403, "forbidden"),
    ("GET", "/route?callerid=0612345678&token=tökén", {}, b"", 403, "forbidden"),
    ("GET", "/crm?field_name=name&token=%E2%82%AC", {}, b"", 403, "forbidden"),
    ("POST", "/leads", {"X-Signature": f"t={int(time.time())},v1=é"}, b"{}", 401,
     "bad-signature"),
    ("POST", "/leads", {"X-Signature": "t=" + "9" * 400 + ",v1=00"}, b"{}", 401,
     "bad-signature"),
    ("POST", "/api/contacts", JSON, DEEP, 400, "bad-json"),
    ("POST", "/api/leads", JSON, b'{"title": ' + b"1" * 5000 + b"}", 400, "bad-json"),
    ("POST", "/leads", JSON, HUGE_INT, 400, "bad-json"),
    ("POST", "/leads", JSON, SURROGATE, 400, "bad-json"),
    ("POST", "/events/call", JSON, b'{"call_id": "\\udfff"}', 400, "bad-json"),
    ("POST", "/api/contacts", JSON, b'{"organization_id": 9223372036854775808}', 422,
     "invalid"),
    ("POST", "/api/leads", JSON, b'{"contact_id": 18446744073709551615}', 422, "invalid"),
    ("GET", f"/api/contacts/{BIG}", auth(), b"", 400, "bad-id"),
    ("PATCH", f"/api/leads/{BIG}", JSON, b"{}", 400, "bad-id"),
    ("GET", f"/api/leads/{BIG}/callcenter", auth(), b"", 400, "bad-id"),
    ("GET", f"/api/tasks?lead_id={BIG}", auth(), b"", 400, "bad-query"),
    ("GET", f"/api/contacts?id=-{BIG}", auth(), b"", 400, "bad-query"),
    ("POST", "/leads", {**auth(), "Content-Type": f"{FORM}; charset=klingon"}, b"nom=x", 400,
     "bad-form"),
    ("POST", "/leads", {**auth(), "Content-Type": FORM}, b"nom=\xff\xfe", 400, "bad-form"),
    ("POST", "/dispositions", multipart(boundary=None), b"a", 400, "bad-form"),
    ("POST", "/leads", multipart(), NAMELESS, 400, "bad-form"),
    ("POST", "/leads", multipart(), KLINGON_PART, 400, "bad-form"),
    ("POST", "/leads", multipart(), BINARY_PART, 400, "bad-form"),
    ("POST", "/leads", multipart(), FILE_PART, 400, "bad-form"),
    ("GET", "/recordings/a.wav?exp=9999999999&sig=%C3%A9", {}, b"", 403, "bad-signature"),
    ("GET", "/api/contacts/%0A", auth(), b"", 404, "not-found"),  # past the catch-all's `.*`
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), CASES)
async def test_hostile_input_is_a_json_4xx(http: aiohttp.ClientSession, method: str,
                                           path: str, headers: dict[str, str], body: bytes,
                                           status: int, code: str) -> None:
    async with http.request(method, path, headers=headers, data=body) as resp:
        assert_error(resp.status, await resp.json(), status, code)


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe",
                                    b"X-Signature: t=1,v1=\xc3\xa9\xff"])
async def test_undecodable_credentials_are_refused(agent: Agent, header: bytes) -> None:
    head = b"POST /leads HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
    status, body = await raw_request(agent.http_port, head, b"{}")
    assert_error(status, body, 403 if header.startswith(b"Authorization") else 401)
    status, body = await raw_request(
        agent.http_port, b"GET /api/contacts HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert status in (401, 403) and set(body) == {"error", "detail"}


async def test_the_valid_credentials_still_work(http: aiohttp.ClientSession) -> None:
    async with http.get("/route", params={"callerid": "0612345678", "token": TOKEN}) as resp:
        assert resp.status == 200
    raw = b'{"email": "ok@example.fr", "RGPD": "1"}'
    async with http.post("/leads", data=raw, headers={"Content-Type": "application/json",
                                                      "X-Signature": signature(raw)}) as resp:
        assert resp.status == 201, await resp.text()
    async with http.get("/api/contacts/9223372036854775807", headers=auth()) as resp:
        assert resp.status == 404


# -- fuzz -----------------------------------------------------------------------------------

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS")
WEBHOOKS = {"/leads", "/dispositions", "/events/call"}
GROUPS: dict[str, Callable[[str], bool]] = {
    "api": lambda path: path.startswith("/api/"),
    "webhooks": lambda path: path in WEBHOOKS,
    "pbx-and-admin": lambda path: path in ("/crm", "/route") or path.startswith("/admin/"),
    "everything-else": lambda path: not (path.startswith(("/api/", "/admin/"))
                                         or path in WEBHOOKS or path in ("/crm", "/route")),
}
KEYS = ("id", "email", "phones", "phone", "organization_id", "contact_id", "lead_id", "fields",
        "call_id", "caller", "did", "direction", "answered_by", "started_at", "project_id",
        "outcome", "reason", "followed_by", "title", "assignee", "status", "extension", "name",
        "role", "at", "dtmf", "limit", "offset", "token", "field_name", "callerid", "trace",
        "exp", "sig", "nom", "prenom", "tel_mobile", "RGPD", "owner", "utm")
NASTY_TEXT = ("", " ", "tökén", "\u20ac", "\x00", "9" * 23, "9" * 5000, "-1", "1e400", "NaN",
              "0612345678", "+33612345678", "a@example.fr", TOKEN, "%ff", "../etc/passwd",
              "\u0663\u0664", "2026-12-01T10:00:00+01:00", "destination", "status")
RAW_QUERY = ("%FF", "%ED%A0%80", "%C3%A9", "%00", "a%2Fb", "%E2%82")
NASTY_BODIES = (DEEP, HUGE_INT, SURROGATE, b"\xff\xfe{}", b"{", b"null", b"[]", b'"x"',
                b'{"id": 9223372036854775808}', b'{"a": NaN}', b"\xef\xbb\xbf{}",
                b'{"call_id": "c", "utm": {"a": 1}}', b"nom=\xff", NAMELESS, KLINGON_PART,
                BINARY_PART, FILE_PART, part(b'Content-Disposition: form-data; name="nom"'))
CONTENT_TYPES = (None, "application/json", FORM, f"{FORM}; charset=klingon",
                 f"{FORM}; charset=latin-1", "multipart/form-data; boundary=XyZ",
                 "multipart/form-data", "text/plain", "application/json; charset=utf-16")
PLAIN = st.characters(exclude_categories=["Cs"])  # what can travel percent-encoded
text = st.sampled_from(NASTY_TEXT) | st.text(PLAIN, max_size=12)
scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
          | st.text(max_size=12) | st.sampled_from(NASTY_TEXT))
values = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                        max_size=5), max_leaves=12)
segment = (st.integers(0, 2**70).map(str) | st.sampled_from(("0", "9" * 5000, "1.5", "-1"))
           | text)


def agent_routes(agent: Agent) -> list[tuple[str, str]]:
    """(method, canonical path) of every registered route, HEAD being GET's twin."""
    assert agent.app is not None
    return sorted({(r.method, r.resource.canonical) for r in agent.app.router.routes()
                   if r.resource is not None and r.method != "HEAD"})


@st.composite
def paths(draw: st.DrawFn, canonical: str) -> str:
    def fill(match: re.Match[str]) -> str:
        return quote(draw(segment), safe="/" if match[0].startswith("{path") else "")

    path = "/" + re.sub(r"\{[^}]*\}", fill, canonical).lstrip("/")  # `//x` names a host
    if draw(st.integers(0, 7)) == 0:
        path += "/" + quote(draw(text), safe="")
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), text | st.sampled_from(RAW_QUERY)),
                          max_size=4))
    query = "&".join(f"{quote(k)}={v if v in RAW_QUERY else quote(v, safe='')}"
                     for k, v in pairs)
    target = path + ("?" + query if query else "")
    assume(len(target) < 8000)  # aiohttp's parser refuses longer request lines itself
    return target


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("json", "nasty", "form", "bytes", "empty")))
    if kind == "json":
        return json.dumps(draw(values)).encode()  # lone surrogates come out as \ud800
    if kind == "nasty":
        return draw(st.sampled_from(NASTY_BODIES))
    if kind == "form":
        return urlencode(draw(st.dictionaries(st.sampled_from(KEYS), text, max_size=5))
                         ).encode()
    return draw(st.binary(max_size=64)) if kind == "bytes" else b""


@st.composite
def headers_for(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    authorization = draw(st.sampled_from((None, "Bearer wrong", "Bearer tökén", "Bearer",
                                          "Basic dXNlcjpwdw==", *[f"Bearer {TOKEN}"] * 5)))
    if authorization is not None:
        headers["Authorization"] = authorization
    now = int(time.time())
    sig = draw(st.sampled_from((None, "valid", "future", "old", "t=1,v1=zz", f"t={now},v1=é",
                                "t=" + "9" * 400 + ",v1=00", "t=x", "v1=00")))
    if sig in ("valid", "future", "old"):
        sig = signature(body, at=now + {"valid": 0, "future": 400, "old": -400}[sig])
    if sig is not None:
        headers["X-Signature"] = sig
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


async def check_answer(resp: aiohttp.ClientResponse, what: str) -> None:
    assert resp.status < 500, (what, await resp.text())
    if resp.status >= 400 and resp.method != "HEAD":
        assert resp.content_type == "application/json", (what, await resp.text())
        body = await resp.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), (what, body)
        assert isinstance(body.get("detail"), str), (what, body)


def test_the_groups_cover_every_route_once() -> None:
    sample = ["/api/contacts", "/leads", "/crm", "/admin/rules/test", "/healthz", "/{path}"]
    for path in sample:
        assert sum(member(path) for member in GROUPS.values()) == 1, path


@pytest.mark.parametrize("group", list(GROUPS))
@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_fuzz_no_route_answers_5xx(agent: Agent, http: aiohttp.ClientSession,
                                         group: str, data: st.DataObject) -> None:
    routes = [r for r in agent_routes(agent) if GROUPS[group](r[1])]
    assert routes, group
    method, canonical = data.draw(st.sampled_from(routes), label="route")
    method = data.draw(st.just(method) if method != "*" else st.sampled_from(METHODS)
                       | st.sampled_from(METHODS), label="method")
    target = data.draw(paths(canonical), label="target")
    body = data.draw(bodies(), label="body")
    headers = data.draw(headers_for(body), label="headers")
    async with http.request(method, URL(target, encoded=True), data=body,
                            headers=headers) as resp:
        event(f"{resp.status}")
        await check_answer(resp, f"{method} {target}")


async def test_every_route_takes_every_nasty_body(agent: Agent,
                                                  http: aiohttp.ClientSession) -> None:
    """Deterministic sweep: no route is left to chance."""
    for method, canonical in agent_routes(agent):
        path = re.sub(r"\{[^}]*\}", "1", canonical)
        for body in NASTY_BODIES:
            for content_type in ("application/json", FORM):
                headers = {**auth(), "Content-Type": content_type}
                verb = "POST" if method == "*" else method
                async with http.request(verb, path, data=body, headers=headers) as resp:
                    await check_answer(resp, f"{verb} {path} {body[:20]!r}")
