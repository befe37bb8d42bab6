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


CHECK_TIMEOUT_S = 2.0
"""Each readiness check answers within this, or counts as failed: a hung store must not
hang `/readyz` (the probe that would restart the agent)."""


async def store_check(request: web.Request) -> tuple[bool, object]:
    store = request.app[STORE]
    try:
        await store.ping()
        stats = await store.outbox_stats()
    except StoreError as exc:
        return False, f"store unreachable: {exc}"
    for status, count in stats.items():
        request.app[METRICS].outbox.labels(status).set(count)
    return True, {"outbox": stats}


async def timed(check: ReadyCheck) -> tuple[bool, object]:
    """`check()`, failed with a reason when it raises or takes over `CHECK_TIMEOUT_S`."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return False, {"error": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # a check that breaks is a failed check, not a 500
        return False, {"error": f"check failed: {type(exc).__name__}"}


async def readyz(request: web.Request) -> web.Response:
    """200 when the store answers and every registered component is ready, else 503. The
    checks run at once, each under `CHECK_TIMEOUT_S`, so the answer comes within it."""
    registered: dict[str, ReadyCheck] = request.app[READY_CHECKS]
    checks: dict[str, ReadyCheck] = {"store": lambda: store_check(request), **registered}
    results = await asyncio.gather(*(timed(check) for check in checks.values()))
    report = {name: detail for name, (_ok, detail) in zip(checks, results, strict=True)}
    ready = all(ok for ok, _detail in results)
    return web.json_response({"ready": ready, **report}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    await timed(lambda: store_check(request))
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
