"""Operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent.http.core import METRICS, STORE
from agent.store import StoreError

ReadyCheck = Callable[[], Awaitable[tuple[bool, object]]]
READY_CHECKS = web.AppKey("ready_checks", dict[str, ReadyCheck])


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def store_check(request: web.Request) -> tuple[bool, object]:
    try:
        async with asyncio.timeout(2):
            await request.app[STORE].ping()
            stats = await request.app[STORE].outbox_stats()
    except (StoreError, TimeoutError) as exc:
        return False, f"store unreachable: {exc or 'timeout'}"
    for status, count in stats.items():
        request.app[METRICS].outbox.labels(status).set(count)
    return True, {"outbox": stats}


async def readyz(request: web.Request) -> web.Response:
    """200 when the store answers and every registered component is ready, else 503."""
    ok, detail = await store_check(request)
    report: dict[str, object] = {"store": detail}
    for name, check in request.app[READY_CHECKS].items():
        part_ok, part = await check()
        ok = ok and part_ok
        report[name] = part
    return web.json_response({"ready": ok, **report}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    await store_check(request)
    return web.Response(body=request.app[METRICS].render(),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Format": "prometheus-0.0.4"})


ADMIN_PAGE = Path(__file__).parent / "static" / "admin.html"


async def admin_page(_request: web.Request) -> web.FileResponse:
    """The admin page (tasks per manager, recent calls, rule tester); data needs the token."""
    return web.FileResponse(ADMIN_PAGE, headers={"Content-Security-Policy": CSP,
                                                 "Cache-Control": "no-store"})


CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'")


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz),
            web.get("/metrics", metrics), web.get("/admin", admin_page)]
