"""`/api/...`: the embedded CRM's records, for admins, tests and the admin page (§4).

Every route needs the bearer token. Phones are accepted in any format and stored as E.164.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from agent.core import phones
from agent.core.model import Contact, Deal, Employee, Lead, Organization, Task
from agent.http.core import (
    CONFIG,
    CRM,
    RECORDS,
    STORE,
    ApiError,
    dump,
    parse,
    path_id,
    query_int,
    read_json,
    require_token,
)

Prepare = Callable[[web.Request, dict[str, Any]], dict[str, Any]]


def normalize_phones(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    """Store phones as E.164; a number that cannot be parsed is a 422 naming it."""
    if "phones" not in data:
        return data
    if not isinstance(data["phones"], list):
        raise ApiError(422, "invalid", "phones: must be a list of phone numbers")
    region = request.app[CONFIG].region
    out = []
    for raw in data["phones"]:
        e164 = phones.normalize(str(raw), region)
        if e164 is None:
            raise ApiError(422, "invalid", f"phones: {raw!r} is not a valid phone number")
        out.append(e164)
    return {**data, "phones": out}


def keep(_request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return data


class Resource:
    """List / create / read / update handlers for one record type."""

    def __init__(self, path: str, model: type[BaseModel], prepare: Prepare = keep) -> None:
        self.path, self.model, self.prepare = path, model, prepare

    def routes(self) -> list[web.RouteDef]:
        return [web.get(f"/api/{self.path}", self.list), web.post(f"/api/{self.path}", self.create),
                web.get(f"/api/{self.path}/{{id:\\d+}}", self.read),
                web.patch(f"/api/{self.path}/{{id:\\d+}}", self.patch)]

    async def body(self, request: web.Request) -> dict[str, Any]:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ApiError(400, "bad-json", "body must be a JSON object")
        if "id" in data:
            raise ApiError(422, "invalid", "id: set by the store, not by the client")
        return self.prepare(request, data)

    async def list(self, request: web.Request) -> web.Response:
        require_token(request)
        filters = {k: v for k, v in request.query.items() if k not in ("limit", "offset")}
        try:
            records = await request.app[CRM].select(
                self.model, filters, limit=query_int(request.query, "limit", 100),
                offset=query_int(request.query, "offset", 0, high=10**9))
        except ValueError as exc:
            raise ApiError(400, "bad-query", str(exc)) from None
        return dump(records)

    async def create(self, request: web.Request) -> web.Response:
        require_token(request)
        record = self.model.model_validate(await self.body(request))
        return dump(await request.app[RECORDS].create(record), status=201)

    async def read(self, request: web.Request) -> web.Response:
        require_token(request)
        return dump(await request.app[CRM].get(self.model, path_id(request)))

    async def patch(self, request: web.Request) -> web.Response:
        require_token(request)
        changes = await self.body(request)
        return dump(await request.app[RECORDS].update(self.model, path_id(request), changes))


async def list_contacts(request: web.Request) -> web.Response:
    """`GET /api/contacts?phone=ANY-FORMAT` or `?email=`; otherwise a plain listing."""
    phone, email = request.query.get("phone"), request.query.get("email")
    if phone is None and email is None:
        return await CONTACTS.list(request)
    require_token(request)
    e164 = phones.normalize(phone, request.app[CONFIG].region) if phone else None
    if phone and e164 is None:
        raise ApiError(422, "invalid", f"phone: {phone!r} is not a valid phone number")
    return dump(await request.app[CRM].find_contacts(phone=e164, email=email))


async def list_employees(request: web.Request) -> web.Response:
    require_token(request)
    return dump(await request.app[STORE].list_employees())


async def put_employee(request: web.Request) -> web.Response:
    require_token(request)
    employee = await parse(request, Employee)
    return dump(await request.app[STORE].upsert_employee(employee), status=201)


CONTACTS = Resource("contacts", Contact, normalize_phones)
RESOURCES = (CONTACTS, Resource("organizations", Organization), Resource("leads", Lead),
             Resource("deals", Deal), Resource("tasks", Task))


def routes() -> list[web.RouteDef]:
    table = [web.get("/api/contacts", list_contacts),
             web.get("/api/employees", list_employees), web.post("/api/employees", put_employee)]
    for resource in RESOURCES:
        table += [r for r in resource.routes() if r.path != "/api/contacts" or r.method != "GET"]
    return table
