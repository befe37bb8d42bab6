"""`POST /leads`, `POST /dispositions`, `GET /api/leads/{id}/callcenter` (§8.1, §8.2): the
handlers authenticate, read the body, call the `LeadDesk` and answer."""

from __future__ import annotations

from aiohttp import web

from agent.http.core import ApiError, path_id, read_form_or_json, require_token
from agent.http.webhook import webhook
from agent.leads import dispositions as outcomes
from agent.leads.service import EmptyLead, LeadDesk

LEAD_DESK = web.AppKey("lead_desk", LeadDesk)


@webhook
async def post_lead(request: web.Request) -> web.Response:
    try:
        status, body = await request.app[LEAD_DESK].submit(await read_form_or_json(request))
    except EmptyLead as exc:
        raise ApiError(400, "empty-lead", str(exc)) from None
    return web.json_response(body, status=status)

@webhook
async def post_disposition(request: web.Request) -> web.Response:
    body = await read_form_or_json(request)
    try:
        return web.json_response(await request.app[LEAD_DESK].dispose(body))
    except outcomes.DispositionError as exc:
        raise ApiError(422, exc.code, str(exc)) from None


async def get_callcenter(request: web.Request) -> web.Response:
    require_token(request)
    return web.json_response(await request.app[LEAD_DESK].export(path_id(request)))


def routes() -> list[web.RouteDef]:
    return [web.post("/leads", post_lead), web.post("/dispositions", post_disposition),
            web.get(r"/api/leads/{id:\d+}/callcenter", get_callcenter)]
