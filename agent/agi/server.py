"""The FastAGI server: accepts Asterisk's connections, runs a script per call under the
deadline, answers with one `EXEC MSet` (see `agent.agi.protocol` for the wire rules).

Each connection is an `AgiSession` (`agent.agi.session`), an `asyncio.Protocol` created by
`loop.create_server`: no stream objects, no task per call unless the script needs one."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from agent.agi.deadlines import Deadlines
from agent.agi.protocol import SCRIPT_SHARE, AgiRequest, encode_mset, encode_msets
from agent.agi.session import AgiSession

log = logging.getLogger("agent.agi")

Script = Callable[[AgiRequest], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""What a script name maps to. It returns the channel variables to set, either directly (the
fast path: the answer goes out from the callback that read the env block, with no task) or as
an awaitable (an `async def` script; it runs as a task, cancelled when it exceeds its share of
the deadline). A script that can often answer from memory returns the Mapping then, and a
coroutine only when it must wait (a CRM lookup)."""
Fallback = Callable[[AgiRequest, str], Mapping[str, str]]


def no_route(request: AgiRequest, reason: str) -> Mapping[str, str]:
    """Default fallback: no route variables, only `CRM_ERROR` (the app passes the real one)."""
    return {}


class AgiServer:
    """FastAGI server: one short session per call, dispatched on the script name.

    Each session reads the env block, runs the script under the deadline (or the fallback),
    sends every variable in one `EXEC MSet`, reads the reply and closes. Counters for metrics:
    `sessions`, `active`, `outcomes` (ok / fallback / hangup / probe / failed) and `errors`
    (by reason: timeout, internal-error, unknown-script, overload, header-*, malformed...).
    `max_line` bounds the whole env block and each reply line.
    """

    def __init__(
        self,
        scripts: Mapping[str, Script],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        deadline_s: float = 0.3,
        header_timeout_s: float = 2.0,
        fallback: Fallback = no_route,
        max_line: int = 4096,
        limit_clients: int = 2000,
    ) -> None:
        self._scripts = dict(scripts)
        self._host = host
        self._port = port
        self._deadline_s = deadline_s
        self._script_budget_s = deadline_s * SCRIPT_SHARE
        self._header_timeout_s = header_timeout_s
        self._first_timer_s = min(header_timeout_s, self._script_budget_s)
        self._fallback = fallback
        self._max_line = max_line
        self._limit_clients = limit_clients
        self._server: asyncio.Server | None = None
        self._sessions: set[AgiSession] = set()
        self._deadlines: Deadlines
        self._idle: asyncio.Future[None] | None = None
        self.sessions = 0
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with `port=0`)."""
        return self._port

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(loop)
        self._server = await loop.create_server(
            functools.partial(AgiSession, self, loop), self._host, self._port,
            backlog=min(self._limit_clients, 4096),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("agi: listening on %s:%d", self._host, self._port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight sessions finish within `grace_s`, abort the rest
        (their scripts are cancelled and their connections closed)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if not await self._drained(grace_s):
            sessions = list(self._sessions)
            log.warning("agi: cancelled %d sessions still running after %.1fs",
                        len(sessions), grace_s)
            for session in sessions:
                session._abort()
            await self._drained(grace_s)
        await server.wait_closed()

    async def _drained(self, timeout_s: float) -> bool:
        if self._sessions:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait([self._idle], timeout=timeout_s)
            finally:
                self._idle = None
        return not self._sessions

    # ------------------------------------------------------------ called by AgiSession

    def _opened(self, session: AgiSession) -> None:
        self.sessions += 1
        self._sessions.add(session)

    def _closed(self, session: AgiSession) -> None:
        self._sessions.discard(session)
        if self._idle is not None and not self._sessions and not self._idle.done():
            self._idle.set_result(None)

    def _fallback_commands(self, request: AgiRequest, reason: str) -> tuple[list[bytes], str]:
        self.errors[reason] += 1
        try:
            variables = {**self._fallback(request, reason), "CRM_ERROR": reason}
            return encode_msets(variables), reason
        except Exception:
            log.exception("agi: fallback failed (reason %s)", reason)
            return [encode_mset({"CRM_ERROR": reason})], reason

    def _fail(self, reason: str) -> None:
        self.errors[reason] += 1
        self.outcomes["failed"] += 1
