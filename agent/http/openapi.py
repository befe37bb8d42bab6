"""`GET /openapi.json`: an OpenAPI 3.1 document built from the live route table.

Paths, methods and summaries (the handlers' docstrings) come from the router; request and
response schemas come from the pydantic models registered with `document()`.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

SCHEMAS = web.AppKey("openapi_schemas", dict[tuple[str, str], tuple[type[BaseModel] | None,
                                                                     type[BaseModel] | None]])
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/admin"}
PBX = {"/crm", "/route"}
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def document(app: web.Application, method: str, path: str, *,
             body: type[BaseModel] | None = None,
             response: type[BaseModel] | None = None) -> None:
    """Declare the request body / response model of one route for the document."""
    app.setdefault(SCHEMAS, {})[(method.upper(), path)] = (body, response)


def security(path: str) -> list[dict[str, list[str]]]:
    if path in PUBLIC:
        return []
    if path.startswith("/recordings/"):
        return [{"signedLink": []}]
    if path in PBX:
        return [{"pbxNetwork": []}, {"tokenQuery": []}, {"bearer": []}]
    if path in ("/events/call", "/leads", "/dispositions"):
        return [{"bearer": []}, {"signature": []}]
    return [{"bearer": []}]


def operation(method: str, path: str, handler: Any, schemas: dict[str, Any],
              models: tuple[type[BaseModel] | None, type[BaseModel] | None]) -> dict[str, Any]:
    doc = (handler.__doc__ or handler.__name__.replace("_", " ")).strip().splitlines()[0]
    op: dict[str, Any] = {"summary": doc, "security": security(path),
                          "responses": {"200": {"description": "OK"},
                                        "default": {"$ref": "#/components/responses/Error"}}}
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in _PARAM.findall(path)]
    if params:
        op["parameters"] = params
    body, response = models
    if body is not None:
        schemas[body.__name__] = body.model_json_schema(ref_template="#/components/schemas/{model}")
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
    if response is not None:
        schemas[response.__name__] = response.model_json_schema(
            ref_template="#/components/schemas/{model}")
        op["responses"]["200"]["content"] = {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{response.__name__}"}}}
    return op


def build(app: web.Application) -> dict[str, Any]:
    registered = app.get(SCHEMAS, {})
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = _PARAM.sub(r"{\1}", route.resource.canonical)
        models = registered.get((route.method, route.resource.canonical), (None, None))
        paths.setdefault(path, {})[route.method.lower()] = operation(
            route.method, path, route.handler, schemas, models)
    for defs in [s.pop("$defs", {}) for s in list(schemas.values())]:
        schemas.update(defs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "crm-routing-agent", "version": "0.1.0"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-Signature",
                              "description": "t=<unix>,v1=<hex HMAC-SHA256(secret, "
                                             "'<t>.<body>')>, at most 5 minutes old"},
                "signedLink": {"type": "apiKey", "in": "query", "name": "sig",
                               "description": "HMAC-signed, expiring link (exp=, sig=)"},
                "pbxNetwork": {"type": "apiKey", "in": "header", "name": "X-Forwarded-For",
                               "description": "no credential: the peer is in http.pbx_allow"},
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {
                "schema": {"type": "object", "required": ["error", "detail"], "properties": {
                    "error": {"type": "string"}, "detail": {"type": "string"}}}}}}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """This document."""
    return web.json_response(build(request.app))


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", openapi)]
