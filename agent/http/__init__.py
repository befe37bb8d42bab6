"""The HTTP interface (§4): one aiohttp application, one route module per feature."""

from __future__ import annotations

from aiohttp import web

from agent.config import Config
from agent.crm import http as api
from agent.crm.records import Records
from agent.http import openapi
from agent.http.core import (
    CONFIG,
    CRM,
    METRICS,
    PBX_PEER,
    RECORDS,
    STORE,
    TOKEN,
    add_routes,
    finish_routes,
    peer_check,
)
from agent.http.webhook import SEEN, SeenSignatures
from agent.ops import http as ops
from agent.ops.http import READY_CHECKS
from agent.ops.metrics import Metrics
from agent.store import Store

__all__ = ["add_routes", "build_app", "finish_routes"]


def build_app(config: Config, store: Store, records: Records, metrics: Metrics,
              token: str) -> web.Application:
    """The base application; feature modules add their routes and keys before start."""
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[CONFIG] = config
    app[STORE] = store
    app[CRM] = records.crm
    app[RECORDS] = records
    app[METRICS] = metrics
    app[TOKEN] = token
    app[PBX_PEER] = peer_check(config.http.pbx_allow)
    app[READY_CHECKS] = {}
    app[SEEN] = SeenSignatures()
    add_routes(app, ops.routes())
    add_routes(app, api.routes())
    add_routes(app, openapi.routes())
    for resource in api.RESOURCES:
        openapi.document(app, "POST", f"/api/{resource.path}", body=resource.model,
                         response=resource.model)
    return app
