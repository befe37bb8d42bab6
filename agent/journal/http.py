"""Call events in (`POST /events/call`), association out (`GET /api/associate`), and the
signed recording links (`GET /recordings/{id}`) handed to the CRM (§4, §6, §7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from agent.core import phones
from agent.core.model import (
    CallerRecords,
    CallRecord,
    Contact,
    Deal,
    Direction,
    Lead,
    Organization,
    Outcome,
)
from agent.crm.port import Crm, NotFound
from agent.http import openapi
from agent.http.core import (
    CONFIG,
    CRM,
    STORE,
    ApiError,
    add_routes,
    dump,
    parse,
    query_int,
    require_token,
)
from agent.http.webhook import webhook
from agent.journal.association import Association, associate
from agent.journal.outbox import OutboxWorker
from agent.journal.recordings import RecordingLinks
from agent.journal.service import Acceptance, CallJournal

JOURNAL = web.AppKey("journal", CallJournal)
OUTBOX = web.AppKey("outbox", OutboxWorker)
RECORDINGS = web.AppKey("recordings", RecordingLinks)


class CallEvent(BaseModel):
    """A call as a PBX reports it over HTTP (§7.1). Naive times are UTC; numbers in any
    format; extensions may be JSON numbers."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    call_id: str = Field(min_length=1, max_length=128)
    direction: Direction = "inbound"
    caller: str | None = Field(default=None, max_length=64)
    did: str | None = Field(default=None, max_length=64)
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    answered: bool | None = None
    answered_by: str | None = Field(default=None, max_length=32)
    placed_by: str | None = Field(default=None, max_length=32)
    queue: str | None = Field(default=None, max_length=128)
    outcome: Outcome | None = None
    recording_url: str | None = Field(default=None, max_length=2048)
    utm: dict[str, str] = Field(default_factory=dict, max_length=20)

    def to_call(self, region: str) -> CallRecord:
        """The call record, with only the fields this event carries (see `merge_calls`)."""
        given = self.model_fields_set
        data: dict[str, Any] = {k: getattr(self, k) for k in given
                                if k not in ("caller", "did", "recording_url", "answered")}
        for name in ("started_at", "answered_at", "ended_at"):
            if data.get(name) is not None and data[name].tzinfo is None:
                data[name] = data[name].replace(tzinfo=UTC)
        if self.caller is not None:
            data["caller_raw"], data["caller"] = self.caller, phones.normalize(self.caller,
                                                                               region)
        if "caller" in given and self.direction == "inbound":  # not "an invalid number"
            data["anonymous"] = phones.is_withheld(self.caller)
        if self.did is not None:
            data["did_raw"], data["did"] = self.did, phones.normalize(self.did, region)
        if self.recording_url is not None:
            data["recording"] = self.recording_url
        answered = self.answered if self.answered is not None else bool(
            self.answered_at or self.answered_by or self.outcome == "answered")
        if answered or "answered" in given:
            data["answered"] = answered
        return CallRecord(**_outbound_parties(data, answered))


def _outbound_parties(data: dict[str, Any], answered: bool) -> dict[str, Any]:
    """An answered outbound call was answered by the extension that placed it."""
    if data.get("direction") == "outbound":
        if answered and not data.get("answered_by") and data.get("placed_by"):
            data["answered_by"] = data["placed_by"]
        if not data.get("placed_by") and data.get("answered_by"):
            data["placed_by"] = data["answered_by"]
    if answered and "outcome" not in data:
        data["outcome"] = "answered"
    return data


class CallAccepted(BaseModel):
    call_id: str
    accepted: bool
    """False when the call was already accepted (a duplicate or replayed event)."""
    status: Acceptance


@webhook
async def post_call(request: web.Request) -> web.Response:
    """Accept a finished (or updated) call for the journal; idempotent on `call_id`."""
    event = await parse(request, CallEvent)
    result = await request.app[JOURNAL].accept(event.to_call(request.app[CONFIG].region))
    return dump(CallAccepted(call_id=event.call_id, status=result,
                             accepted=result is not Acceptance.DUPLICATE), status=202)


# -- association ----------------------------------------------------------------------------

def query_time(raw: str | None) -> datetime:
    if not raw:
        return datetime.now(UTC)
    moment = None
    for text in (raw, raw.replace(" ", "+")):  # an unescaped `+01:00` arrives as ` 01:00`
        try:
            moment = datetime.fromisoformat(text)
            break
        except ValueError:
            continue
    if moment is None:
        raise ApiError(400, "bad-query", f"at: {raw!r} is not an ISO-8601 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def records_by_email(crm: Crm, email: str) -> CallerRecords:
    contacts = await crm.find_contacts(email=email)
    orgs: dict[int, Organization] = {}
    leads: list[Lead] = []
    deals: list[Deal] = []
    for contact in contacts:
        leads += await crm.select(Lead, {"contact_id": contact.id}, limit=1000)
        deals += await crm.select(Deal, {"contact_id": contact.id}, limit=1000)
        if contact.organization_id is not None and contact.organization_id not in orgs:
            try:
                orgs[contact.organization_id] = await crm.get(Organization,
                                                              contact.organization_id)
            except NotFound:
                continue
            deals += await crm.select(Deal, {"organization_id": contact.organization_id},
                                      limit=1000)
    return CallerRecords(contacts=contacts, organizations=orgs, leads=leads, deals=deals)


class AssociationView(BaseModel):
    """Which records a call from this phone / e-mail at this time belongs to (§6)."""

    phone: str | None
    email: str | None
    at: datetime
    known: bool
    contact: Contact | None
    contacts: list[int | None]
    account: Organization | None
    deal: Deal | None
    lead: Lead | None
    owner: str | None
    owner_source: str | None

    @classmethod
    def of(cls, assoc: Association, phone: str | None, email: str | None,
           at: datetime) -> AssociationView:
        return cls(phone=phone, email=email, at=at, known=assoc.known, contact=assoc.contact,
                   contacts=[c.id for c in assoc.contacts], account=assoc.account,
                   deal=assoc.deal, lead=assoc.lead, owner=assoc.owner,
                   owner_source=assoc.owner_source)


async def get_association(request: web.Request) -> web.Response:
    """`GET /api/associate?phone=N[&email=E][&at=ISO]`: which records a call belongs to."""
    require_token(request)
    phone, email = request.query.get("phone"), request.query.get("email")
    if not phone and not email:
        raise ApiError(400, "bad-query", "pass phone= (any format) and/or email=")
    e164 = phones.normalize(phone, request.app[CONFIG].region) if phone else None
    if phone and e164 is None:
        raise ApiError(422, "invalid", f"phone: {phone!r} is not a valid phone number")
    at, crm = query_time(request.query.get("at")), request.app[CRM]
    records = await crm.find_caller(e164) if e164 else CallerRecords()
    by_email = await records_by_email(crm, email) if email else None
    assoc = associate(records, at, email_matches=by_email)
    return dump(AssociationView.of(assoc, e164, email, at))


# -- recordings -----------------------------------------------------------------------------

async def get_recording(request: web.Request) -> web.StreamResponse:
    """Stream a recording for a valid, unexpired link; 403 otherwise, 404 when missing."""
    links, rid = request.app[RECORDINGS], request.match_info["id"]
    exp, sig = request.query.get("exp", ""), request.query.get("sig", "")
    if not (sig.isascii() and _encodable(rid) and links.verify(rid, exp, sig)):
        raise ApiError(403, "bad-signature", "this recording link is invalid or expired")
    path = links.path(rid)
    if path is None:
        raise ApiError(404, "not-found", "no such recording")
    return web.FileResponse(path, headers={"Cache-Control": "private, max-age=300"})


def _encodable(text: str) -> bool:
    """False for a path holding the surrogates aiohttp decodes undecodable bytes to."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def setup(app: web.Application) -> None:
    """Add the routes and their schemas (for `/openapi.json`)."""
    add_routes(app, routes())
    openapi.document(app, "POST", "/events/call", body=CallEvent, response=CallAccepted)
    openapi.document(app, "GET", "/api/associate", response=AssociationView)


async def list_calls(request: web.Request) -> web.Response:
    """`GET /api/calls[?caller=N][&limit=L]`: the journaled calls, newest first."""
    require_token(request)
    caller = request.query.get("caller")
    e164 = phones.normalize(caller, request.app[CONFIG].region) if caller else None
    calls = await request.app[STORE].list_calls(caller=e164,
                                                limit=query_int(request.query, "limit", 100))
    return web.json_response(calls)


def routes() -> list[web.RouteDef]:
    return [web.post("/events/call", post_call),
            web.get("/api/associate", get_association),
            web.get("/api/calls", list_calls),
            web.get(r"/recordings/{id:.+}", get_recording)]
