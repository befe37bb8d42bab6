"""Wiring only: build the shared services, then each feature on them, start them in
order, stop in reverse.

Start: store and rules files (`agent.services`) → routing, journal (outbox worker), leads →
HTTP → FastAGI → AMI. Stop: the reverse, each under the grace timeout, so in-flight calls
and accepted events are drained (§9).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import secrets
import signal
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from agent.config import Config, ConfigError, IpNetwork, cannot_listen
from agent.crm.port import Crm
from agent.http import finish_routes
from agent.http.connections import ConnectionGate, default_cap
from agent.journal import wire as journal
from agent.journal.service import CallJournal
from agent.leads import wire as leads
from agent.ops.logs import ServerLog
from agent.ops.metrics import Metrics
from agent.pbx.agi import AgiServer
from agent.routing import wire as routing
from agent.routing.service import Router
from agent.services import Services
from agent.services import build as build_services
from agent.store import Store

log = logging.getLogger("agent")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(config: Config) -> str:
    """The API token: configured, or (loopback only) generated once under `var/`."""
    if config.http.token is not None:
        return config.http.token.get_secret_value()
    if not is_loopback(config.http.host):
        raise ConfigError(f"http.host is {config.http.host}: set http.token (or "
                          "CRM_AGENT_TOKEN) before listening beyond loopback")
    path = config.path(config.http.token_file)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    log.warning("no http.token configured: generated one in %s (loopback only)", path)
    return token


def agi_allow(config: Config) -> list[IpNetwork]:
    """The peers FastAGI answers. Its answers hold contact names, owners and scores, so beyond
    loopback they must be chosen, not defaulted (like `http.token`)."""
    agi = config.agi
    if agi.enabled and "allow" not in agi.model_fields_set and not is_loopback(agi.host):
        raise ConfigError(f"agi.host is {agi.host}: set agi.allow (or CRM_AGENT_AGI__ALLOW, "
                          "e.g. [10.0.0.0/8]) to the PBX networks before listening beyond "
                          "loopback")
    return agi.allow


class Agent:
    """The running service: builds the shared services, then each feature on them; owns
    every component and background task (stopped in reverse, `stack`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.token = resolve_token(config)
        agi_allow(config)
        self.stack = AsyncExitStack()
        self.services: Services | None = None
        self.router: Router | None = None
        self.journal: CallJournal | None = None
        self.agi: AgiServer | None = None
        self.http_port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def store(self) -> Store | None:
        return None if self.services is None else self.services.store

    @property
    def crm(self) -> Crm | None:
        return None if self.services is None else self.services.crm

    @property
    def app(self) -> web.Application | None:
        return None if self.services is None else self.services.app

    async def start(self) -> None:
        try:
            await self._start()
        except (Exception, asyncio.CancelledError):
            await self.stack.aclose()
            raise

    async def _start(self) -> None:
        self.stack.push_async_callback(self._cancel_spawned)
        services = self.services = await build_services(self.config, self.metrics, self.token,
                                                        self.stack, self.spawn)
        self.router = await routing.wire(services)
        self.journal = await journal.wire(services)
        await leads.wire(services)
        if self.config.http.enabled:
            await self._start_http(services.app)
        self.agi = await routing.listen(services, self.router)
        await journal.listen(services, self.journal)
        # everything built so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall calls under load
        gc.freeze()

    async def _start_http(self, app: web.Application) -> None:
        http = self.config.http
        finish_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0, keepalive_timeout=http.idle_timeout_s,
                               logger=ServerLog(logging.getLogger("agent.http")))
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        assert runner.server is not None
        gate = ConnectionGate(runner.server, http.max_connections or default_cap())
        try:
            server = await asyncio.get_running_loop().create_server(
                gate, http.host, http.port, backlog=128, reuse_address=True)
        except OSError as exc:
            raise cannot_listen(exc, "HTTP", http.host, http.port, "http.port") from None
        self.stack.callback(server.close)  # before runner.cleanup, which drains connections
        self.http_port = server.sockets[0].getsockname()[1]
        log.info("HTTP listening on %s:%s (at most %d connections)", http.host,
                 self.http_port, gate.cap)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background, owned by the agent: awaited (or cancelled) at stop."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_spawned(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.stack.aclose()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info("agent ready (store %s, event loop %s)",
                 self.store.dialect if self.store else "?", type(loop).__module__.split(".")[0])
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()

