"""The FastAGI server: accepts Asterisk's connections, runs a script per call under the
deadline, answers with one `EXEC MSet` (see `agent.pbx.agi.protocol` for the wire rules).

Each connection is an `AgiSession` (`agent.pbx.agi.session`), an `asyncio.Protocol` created by
`loop.create_server`: no stream objects, no task per call unless the script needs one.
A connection from outside `allow` is closed before a byte is read."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from agent.ops.logs import Throttle
from agent.pbx.agi.deadlines import Deadlines
from agent.pbx.agi.host import LiveSession, Script, SessionLimits
from agent.pbx.agi.protocol import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    SCRIPT_SHARE,
    AgiRequest,
    encode_mset,
    encode_msets,
)
from agent.pbx.agi.session import AgiSession

log = logging.getLogger("agent.agi")

Fallback = Callable[[AgiRequest, str], Mapping[str, str]]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[IpNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
REFUSALS_QUIET_S = 60.0
WARNING_INTERVAL_S = 0.1
"""After a refusal is logged as a warning, further ones are logged at debug for this long."""
VERDICTS = 1024  # peer addresses whose verdict is remembered (Asterisk connects from a few)


def no_route(request: AgiRequest, reason: str) -> Mapping[str, str]:
    """Default fallback: no route variables, only `CRM_ERROR` (the app passes the real one)."""
    return {}


def permitted(host: str, networks: Sequence[IpNetwork]) -> bool:
    """Whether the peer address `host` (as the socket reports it) is in one of `networks`;
    an IPv4 peer on a dual-stack socket (`::ffff:10.1.2.3`) is matched as IPv4."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class AgiServer:
    """FastAGI server: one short session per call, dispatched on the script name.

    Each session reads the env block, runs the script under the deadline (or the fallback),
    sends every variable in one `EXEC MSet`, reads the reply and closes. Counters for metrics:
    `sessions`, `active`, `outcomes` (ok / crm-error / fallback / hangup / probe / failed)
    and `errors` (by reason: timeout, internal-error, unknown-script, overload, header-*, malformed,
    bad-reply, reply-too-long, forbidden...). `max_line` bounds the whole env block and each
    reply line, `max_reply_lines` and `max_reply_bytes` a whole (multi-line) reply. Only
    peers in `allow` (default: loopback) are served; others are closed unread.
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
        max_reply_lines: int = MAX_REPLY_LINES,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        limit_clients: int = 2000,
        allow: Sequence[IpNetwork] = LOOPBACK,
    ) -> None:
        self.scripts: Mapping[str, Script] = dict(scripts)
        budget_s = deadline_s * SCRIPT_SHARE
        self.limits = SessionLimits(deadline_s, budget_s, header_timeout_s,
                                    min(header_timeout_s, budget_s), max_line, max_reply_lines,
                                    max_reply_bytes, limit_clients)
        self._host = host
        self._port = port
        self._fallback = fallback
        self._allow = tuple(allow)
        self._verdicts: dict[str, bool] = {}
        self._quiet_until = 0.0
        self._warnings = Throttle(WARNING_INTERVAL_S)
        self._server: asyncio.Server | None = None
        self._sessions: set[LiveSession] = set()
        self.deadlines: Deadlines
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
        self.deadlines = Deadlines(loop)
        self._server = await loop.create_server(
            functools.partial(AgiSession, self, loop), self._host, self._port,
            backlog=min(self.limits.limit_clients, 4096),
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
                session.abort()
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

    # ------------------------------------------------- the SessionHost an AgiSession sees

    def admits(self, peer: object) -> bool:
        """Whether to serve a connection from `peer` (the socket's `peername`, None when the
        peer vanished before the accept). A refusal is counted (`forbidden`) and logged with
        the address only: one warning, then debug lines for `REFUSALS_QUIET_S` seconds."""
        host = peer[0] if isinstance(peer, tuple) else "unknown"
        allowed = self._verdicts.get(host)
        if allowed is None:
            if len(self._verdicts) >= VERDICTS:
                self._verdicts.clear()
            allowed = self._verdicts[host] = permitted(host, self._allow)
        if not allowed:
            self.fail("forbidden")
            now = time.monotonic()
            if now < self._quiet_until:
                log.debug("agi: refused a connection from %s (not in agi.allow)", host)
            else:
                self._quiet_until = now + REFUSALS_QUIET_S
                log.warning("agi: refused a connection from %s: not in agi.allow (further "
                            "refusals logged at debug level for %.0fs)", host, REFUSALS_QUIET_S)
        return allowed

    def warn(self, message: str, *args: object) -> None:
        """A session's warning, at most one per `WARNING_INTERVAL_S` (the next one says how
        many were held back; those go to debug): a flood of bad peers is not a log flood."""
        allowed, held = self._warnings.allow()
        if not allowed:
            log.debug(message, *args)
        elif held:
            log.warning(message + " (%d similar warnings held back)", *args, held)
        else:
            log.warning(message, *args)

    def opened(self, session: LiveSession) -> None:
        self.sessions += 1
        self._sessions.add(session)

    def closed(self, session: LiveSession) -> None:
        self._sessions.discard(session)
        if self._idle is not None and not self._sessions and not self._idle.done():
            self._idle.set_result(None)

    def fallback_commands(self, request: AgiRequest, reason: str) -> tuple[list[bytes], str]:
        self.errors[reason] += 1
        try:
            variables = {**self._fallback(request, reason), "CRM_ERROR": reason}
            return encode_msets(variables), reason
        except Exception:
            log.exception("agi: fallback failed (reason %s)", reason)
            return [encode_mset({"CRM_ERROR": reason})], reason

    def crowded(self) -> bool:
        """More sessions running than `limit_clients`: answer with the fallback at once."""
        return len(self._sessions) > self.limits.limit_clients

    def fail(self, reason: str) -> None:
        self.errors[reason] += 1
        self.outcomes["failed"] += 1
