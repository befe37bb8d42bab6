"""One FastAGI call as an `asyncio.Protocol`: env block, script, `EXEC MSet` round trips, close.

A session is a small state machine driven by the transport's callbacks, with no task of its own:
HEADER (buffer until the blank line) -> SCRIPT (only while an awaitable script runs) -> REPLY
(one command, one reply, until every command is accepted) -> DONE (transport closing).
A script that returns its Mapping directly is answered inside `data_received`, with no task
and no extra turn of the event loop.

One deadline per session, kept by the server's `Deadlines` (slots of 10 ms, one loop timer per
slot): it is set at accept for the earliest deadline (header timeout or script budget) and is
only moved when it fires for a phase that has a later deadline, or when a phase needs an earlier
one. A normal call joins one slot at accept and leaves it at close.

Asterisk behaviour this module relies on (Asterisk 22, `tests/fixtures/agi/`):
- Asterisk writes `HANGUP\\n` on its own whenever the channel hangs up, so it can arrive
  glued to the env block, while the script runs, or instead of a reply. It is kept in the
  buffer and read as the reply to the next command: a quiet end, like `511` or EOF.
- A usage error is a multi-line reply, `520-Invalid command syntax...` up to
  `520 End of proper usage.`; it is read whole before it is judged. A reply of more than
  `max_reply_lines` lines or `max_reply_bytes` bytes is a hostile peer's (`reply-too-long`),
  like any line over `max_line`: the session is closed then, not at its deadline. The buffer
  is scanned on from where the last chunk left it, never again from the start.
- Asterisk answers every command in order and never before it was sent, so the buffer is only
  read for replies after a command went out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import cast

from agent.core.phones import mask
from agent.pbx.agi.host import SessionHost
from agent.pbx.agi.protocol import (
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    encode_msets,
    parse_env,
    parse_reply,
)

log = logging.getLogger("agent.agi")

HEADER, SCRIPT, REPLY, DONE = range(4)
DEGRADED = "CRM_ERROR"
"""A script's answer holding this variable routed without the CRM's help (timeout, breaker
open): counted as outcome `crm-error`, not `ok`."""
ACCEPTED = AgiReply(200, "0")  # any `200 result=...`: what MSet answers, not worth parsing


class AgiSession(asyncio.Protocol):
    """The protocol instance `AgiServer` creates for each accepted connection."""

    __slots__ = (
        "_buffer", "_commands", "_degraded", "_gone", "_host", "_line_at", "_lines", "_loop",
        "_lost", "_phase", "_reason", "_request", "_scanned", "_slot", "_start", "_task",
        "_timer_at", "_transport"
    )

    def __init__(self, host: SessionHost, loop: asyncio.AbstractEventLoop) -> None:
        self._host = host
        self._loop = loop
        self._buffer = b""
        self._scanned = 0  # the buffer holds no line end (header: no blank line) before it
        self._line_at = self._lines = 0  # the reply's unfinished line, its finished lines
        self._phase = HEADER
        self._start = self._timer_at = 0.0
        self._slot: int | None = None  # in the server's `Deadlines`
        self._task: asyncio.Future[Mapping[str, str]] | None = None
        self._request: AgiRequest | None = None
        self._commands: list[bytes] = []
        self._reason: str | None = None
        self._degraded = False
        self._gone = self._lost = False  # peer sent EOF or vanished / transport lost

    # ----------------------------------------------------------------- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        host = self._host
        if not host.admits(transport.get_extra_info("peername")):
            self._phase = DONE  # closed before reading a byte; nothing else to count
            transport.close()
            return
        host.opened(self)
        self._start = self._loop.time()
        self._arm(self._start + host.limits.first_timer_s)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        try:
            if phase == HEADER:
                self._read_header(self._buffer + data if self._buffer else data)
            elif phase == REPLY:
                self._buffer += data
                self._read_replies()
            elif phase == SCRIPT:  # chatter while the script runs: read when it has answered
                self._buffer += data
                if len(self._buffer) > self._host.limits.max_line:
                    self._transport.pause_reading()
        except Exception:
            self._crash()

    def eof_received(self) -> bool:
        if self._phase == HEADER:
            if self._buffer:
                self._drop("header-eof", f"closed after {len(self._buffer)} header bytes")
            else:  # a TCP health check: connect and close; not an error
                self._host.outcomes["probe"] += 1
                log.debug("agi: %s connected and closed without a header", self._peer())
                self._close()
        elif self._phase == SCRIPT:
            self._gone = True
            return True  # keep the transport: the script's task is ended by its own rules
        elif self._phase == REPLY:
            self._hung_up("peer closed before replying")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._gone = True
        phase = self._phase
        if phase == HEADER:
            self._host.fail("peer-gone")
            self._close()
        elif phase == REPLY:
            self._hung_up("peer closed before replying")
        elif phase == DONE:
            self._host.closed(self)

    # ----------------------------------------------------------------- phases

    def _read_header(self, buffer: bytes) -> None:
        scanned, limit = self._scanned, self._host.limits.max_line
        # from the last byte already scanned: the blank line may straddle two chunks
        end = buffer.find(b"\n\n", scanned and scanned - 1)
        if end > limit or (end < 0 and len(buffer) > limit):
            self._drop("header-too-long", f"header over {limit} bytes")
        elif end < 0:
            self._buffer, self._scanned = buffer, len(buffer)
        else:
            self._buffer, self._scanned = buffer[end + 2 :], 0  # may hold an early `HANGUP`
            try:
                request = parse_env(buffer[: end + 2])
            except AgiProtocolError as exc:
                self._drop("malformed", f"malformed env: {exc}")
                return
            self._request = request
            self._dispatch(request)

    def _dispatch(self, request: AgiRequest) -> None:
        host = self._host
        if host.crowded():
            self._answer(*host.fallback_commands(request, "overload"))
            return
        script = host.scripts.get(request.script)
        if script is None:
            # the name comes from the dialplan and may carry a number or a name: masked
            host.warn("agi: unknown script (%d chars: %s; uniqueid %s, caller %s)",
                      len(request.script), mask(request.script[:64]), request.uniqueid,
                      mask(request.callerid))
            self._answer(*host.fallback_commands(request, "unknown-script"))
            return
        try:
            result = script(request)
            if type(result) is dict or isinstance(result, Mapping):
                commands = encode_msets(result)  # the fast path: no task at all
                self._degraded = DEGRADED in result
            else:
                self._await(result)
                return
        except Exception as exc:
            self._answer(*self._script_failed(request, exc))
            return
        self._answer(commands, None)

    def _await(self, awaitable: Awaitable[Mapping[str, str]]) -> None:
        self._phase = SCRIPT
        self._task = task = asyncio.ensure_future(awaitable, loop=self._loop)
        task.add_done_callback(self._script_done)
        deadline = self._start + self._host.limits.script_budget_s
        if self._timer_at > deadline:
            self._arm(deadline)

    def _script_done(self, task: asyncio.Future[Mapping[str, str]]) -> None:
        if task is not self._task:  # timed out or aborted: the session has moved on
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it at GC
            return
        self._task = None
        assert self._request is not None
        if task.cancelled():  # by someone else than the session: end it, like a cancelled task
            self._close()
            return
        try:
            exc = task.exception()
            if exc is None:
                variables = task.result()
                commands = encode_msets(variables)
                self._degraded = DEGRADED in variables
            else:
                self._answer(*self._script_failed(self._request, exc))
                return
        except Exception as error:
            self._answer(*self._script_failed(self._request, error))
            return
        self._answer(commands, None)

    def _script_failed(self, request: AgiRequest, exc: BaseException) -> tuple[list[bytes], str]:
        # the exception text may carry CRM data: type at warning, traceback at debug only
        log.warning("agi: script %r failed with %s (uniqueid %s)", request.script,
                    type(exc).__name__, request.uniqueid,
                    exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
        return self._host.fallback_commands(request, "internal-error")

    def _answer(self, commands: list[bytes], reason: str | None) -> None:
        """Send the commands one round trip at a time; the whole deadline runs from accept."""
        self._phase, self._commands, self._reason = REPLY, commands, reason
        deadline = self._start + self._host.limits.deadline_s
        if self._slot is None or self._timer_at > deadline:
            self._arm(deadline)
        if len(self._buffer) > self._host.limits.max_line:
            self._transport.resume_reading()  # paused by chatter during the script
        self._send_next()

    def _send_next(self) -> None:
        if not self._commands:
            host, request = self._host, self._request
            assert request is not None
            outcome = "fallback" if self._reason else "crm-error" if self._degraded else "ok"
            host.outcomes[outcome] += 1
            script = request.script if request.script in host.scripts else "(unknown)"
            log.debug("agi: %s %s answered", script, request.uniqueid)
            self._close()
            return
        command = self._commands.pop(0)
        if not self._lost:
            self._transport.write(command)
        if self._buffer:
            self._read_replies()
        if self._gone and self._phase == REPLY:  # EOF came while the script ran
            self._hung_up("peer closed before replying")

    def _read_replies(self) -> None:
        while self._phase == REPLY and self._buffer:
            reply = self._take_reply()
            if reply is None:
                return
            if reply.ok:
                self._send_next()
            else:
                self._refused(reply)

    def _take_reply(self) -> AgiReply | None:
        """The next whole reply in the buffer (None: incomplete, or bad and dropped).

        Each call goes on where the last one stopped: a reply that comes in pieces is
        scanned once, and its lines and bytes are counted as they come."""
        buffer, host = self._buffer, self._host
        start, limit = self._line_at, host.limits.max_line
        while (end := buffer.find(b"\n", self._scanned)) >= 0:
            if end - start > limit:
                self._bad_reply(f"reply line over {limit} bytes")
                return None
            # one line, or `520-...` up to `520 End of proper usage.`
            if buffer[3:4] != b"-" or (start and buffer.startswith(buffer[:3] + b" ", start)):
                return self._cut(end)
            self._lines += 1
            start = self._line_at = self._scanned = end + 1
            if self._lines >= host.limits.max_reply_lines or start > host.limits.max_reply_bytes:
                self._too_long()
                return None
        self._scanned = len(buffer)
        if len(buffer) - start > limit:
            self._bad_reply(f"reply line over {limit} bytes")
        elif len(buffer) > host.limits.max_reply_bytes:
            self._too_long()
        return None

    def _cut(self, end: int) -> AgiReply | None:
        """The reply that ends at `end`, taken off the buffer (None: bad and dropped)."""
        buffer = self._buffer
        line, self._buffer = buffer[: end + 1], buffer[end + 1 :]
        self._scanned = self._line_at = self._lines = 0
        if line.startswith(b"200 result="):
            return ACCEPTED
        try:
            return parse_reply(line)
        except AgiProtocolError as exc:
            self._bad_reply(str(exc))
            return None

    def _refused(self, reply: AgiReply) -> None:
        assert self._request is not None
        if reply.dead:
            self._hung_up("channel hung up")
            return
        host = self._host
        host.fail("command-refused")
        host.warn("agi: Asterisk answered %d %s (uniqueid %s)", reply.code,
                  reply.data.split("\n", 1)[0][:80], self._request.uniqueid)
        self._close()

    # ----------------------------------------------------------------- timer

    def _arm(self, when: float) -> None:
        deadlines = self._host.deadlines
        if self._slot is not None:
            deadlines.remove(self, self._slot)
        self._timer_at = when
        self._slot = deadlines.add(self, when)

    def expired(self) -> None:
        """The deadline set by `_arm` has come (`Deadlines` calls this)."""
        self._slot = None
        host, phase = self._host, self._phase
        limit_s = (host.limits.header_timeout_s if phase == HEADER else
                   host.limits.script_budget_s if phase == SCRIPT else host.limits.deadline_s)
        if self._timer_at < self._start + limit_s:  # armed for an earlier deadline
            self._arm(self._start + limit_s)
        elif phase == HEADER:
            self._drop("header-timeout", f"no header within {host.limits.header_timeout_s}s")
        elif phase == SCRIPT:
            self._script_timeout()
        elif phase == REPLY:
            host.fail("reply-timeout")
            host.warn("agi: no reply within the deadline (uniqueid %s)", self._uniqueid())
            self._close()

    def _script_timeout(self) -> None:
        task, request = self._task, self._request
        assert task is not None and request is not None
        if task.done():  # finished in this very turn of the loop; its callback is queued
            self._script_done(task)
            return
        self._task = None
        task.cancel()
        host = self._host
        host.warn("agi: script %r missed its %.0f ms budget (uniqueid %s)",
                  request.script, host.limits.script_budget_s * 1000, request.uniqueid)
        self._answer(*host.fallback_commands(request, "timeout"))

    # ----------------------------------------------------------------- endings

    def abort(self) -> None:
        """`AgiServer.stop` after the grace period: cancel the script, close, count nothing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if self._phase != DONE:
            self._close()

    def _close(self) -> None:
        self._phase, self._buffer = DONE, b""
        if self._slot is not None:
            self._host.deadlines.remove(self, self._slot)
            self._slot = None
        if self._lost:
            self._host.closed(self)
        else:
            self._transport.close()  # connection_lost follows: then the session is over

    def _hung_up(self, message: str) -> None:
        self._host.outcomes["hangup"] += 1
        log.debug("agi: %s (uniqueid %s)", message, self._uniqueid())
        self._close()

    def _bad_reply(self, message: str, reason: str = "bad-reply") -> None:
        self._host.fail(reason)
        self._host.warn("agi: bad reply (uniqueid %s): %s", self._uniqueid(), message)
        self._close()

    def _too_long(self) -> None:
        host = self._host  # the data is the peer's, maybe anything: never logged
        self._bad_reply(f"reply over {host.limits.max_reply_lines} lines or "
                        f"{host.limits.max_reply_bytes} bytes", "reply-too-long")

    def _drop(self, reason: str, message: str) -> None:
        self._host.fail(reason)
        self._host.warn("agi: %s from %s; closing", message, self._peer())
        self._close()

    def _crash(self) -> None:
        self._host.fail("internal-error")
        log.exception("agi: session crashed")
        if self._phase != DONE:
            self._close()

    def _uniqueid(self) -> str:
        return "" if self._request is None else self._request.uniqueid

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
