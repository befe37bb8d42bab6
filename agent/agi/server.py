"""The FastAGI server: accepts Asterisk's connections, runs a script per call under the
deadline, answers with one `EXEC MSet` (see `agent.agi.protocol` for the wire rules)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from agent.agi.protocol import (
    SCRIPT_SHARE,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    encode_mset,
    encode_msets,
    parse_env,
    parse_reply,
)
from agent.phones import mask

log = logging.getLogger("agent.agi")

Script = Callable[[AgiRequest], Awaitable[Mapping[str, str]]]
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
    `max_line` is the StreamReader limit: it bounds the whole env block and each reply line.
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
        self._fallback = fallback
        self._max_line = max_line
        self._limit_clients = limit_clients
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions = 0
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with `port=0`)."""
        return self._port

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=self._max_line,
            backlog=min(self._limit_clients, 4096),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("agi: listening on %s:%d", self._host, self._port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight sessions finish within `grace_s`, cancel the rest."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("agi: cancelled %d sessions still running after %.1fs",
                            len(pending), grace_s)
                await asyncio.wait(pending, timeout=grace_s)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.sessions += 1
        try:
            await self._session(reader, writer)
        except Exception:
            self._fail("internal-error")
            log.exception("agi: session crashed")
        finally:
            self._tasks.discard(task)
            writer.close()
            # OSError: the peer reset, e.g. Asterisk's trailing HANGUP hit our closed socket
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = asyncio.get_running_loop().time()
        request = await self._read_request(reader, writer)
        if request is None:
            return
        commands, reason = await self._decide(request, start + self._script_budget_s)
        if await self._send(request, reader, writer, commands, start + self._deadline_s):
            self.outcomes["ok" if reason is None else "fallback"] += 1
            log.debug("agi: %s %s answered", request.script, request.uniqueid)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> AgiRequest | None:
        try:
            async with asyncio.timeout(self._header_timeout_s):
                block = await reader.readuntil(b"\n\n")
            return parse_env(block)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self._drop("header-eof", writer, f"closed after {len(exc.partial)} header bytes")
            else:  # a TCP health check: connect and close; not an error
                self.outcomes["probe"] += 1
                log.debug("agi: %s connected and closed without a header", _peer(writer))
        except asyncio.LimitOverrunError:
            self._drop("header-too-long", writer, f"header over {self._max_line} bytes")
        except TimeoutError:
            self._drop("header-timeout", writer, f"no header within {self._header_timeout_s}s")
        except AgiProtocolError as exc:
            self._drop("malformed", writer, f"malformed env: {exc}")
        except ConnectionError:
            self._fail("peer-gone")
        return None

    async def _decide(
        self, request: AgiRequest, script_deadline: float
    ) -> tuple[list[bytes], str | None]:
        """Run the script under its share of the deadline. Returns the encoded commands and
        the fallback reason (None when the script answered)."""
        if len(self._tasks) > self._limit_clients:
            return self._fallback_commands(request, "overload")
        script = self._scripts.get(request.script)
        if script is None:
            log.warning("agi: unknown script %r (uniqueid %s, caller %s)",
                        request.script[:64], request.uniqueid, mask(request.callerid))
            return self._fallback_commands(request, "unknown-script")
        try:
            async with asyncio.timeout_at(script_deadline):
                variables = await script(request)
            return encode_msets(variables), None
        except TimeoutError:
            log.warning("agi: script %r missed its %.0f ms budget (uniqueid %s)",
                        request.script, self._script_budget_s * 1000, request.uniqueid)
            return self._fallback_commands(request, "timeout")
        except Exception as exc:
            # the exception text may carry CRM data: type at warning, traceback at debug only
            log.warning("agi: script %r failed with %s (uniqueid %s)", request.script,
                        type(exc).__name__, request.uniqueid,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return self._fallback_commands(request, "internal-error")

    def _fallback_commands(self, request: AgiRequest, reason: str) -> tuple[list[bytes], str]:
        self.errors[reason] += 1
        try:
            variables = {**self._fallback(request, reason), "CRM_ERROR": reason}
            return encode_msets(variables), reason
        except Exception:
            log.exception("agi: fallback failed (reason %s)", reason)
            return [encode_mset({"CRM_ERROR": reason})], reason

    async def _send(
        self,
        request: AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commands: list[bytes],
        deadline: float,
    ) -> bool:
        """One round trip per command (normally exactly one). True when all were accepted.

        No `drain()`: a command is under 2 KB and goes straight to the socket; the reply read
        below is what waits."""
        try:
            async with asyncio.timeout_at(deadline):
                for command in commands:
                    writer.write(command)
                    reply = await _read_reply(reader)
                    if not reply.ok:
                        return self._refused(request, reply)
            return True
        except TimeoutError:
            self._fail("reply-timeout")
            log.warning("agi: no reply within the deadline (uniqueid %s)", request.uniqueid)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.outcomes["hangup"] += 1
            log.debug("agi: peer closed before replying (uniqueid %s)", request.uniqueid)
        except (asyncio.LimitOverrunError, AgiProtocolError) as exc:
            self._fail("bad-reply")
            log.warning("agi: bad reply (uniqueid %s): %s", request.uniqueid, exc)
        return False

    def _refused(self, request: AgiRequest, reply: AgiReply) -> bool:
        if reply.dead:
            self.outcomes["hangup"] += 1
            log.debug("agi: channel hung up (uniqueid %s)", request.uniqueid)
        else:
            self._fail("command-refused")
            log.warning("agi: Asterisk answered %d %s (uniqueid %s)", reply.code,
                        reply.data.split("\n", 1)[0][:80], request.uniqueid)
        return False

    def _fail(self, reason: str) -> None:
        self.errors[reason] += 1
        self.outcomes["failed"] += 1

    def _drop(self, reason: str, writer: asyncio.StreamWriter, message: str) -> None:
        self._fail(reason)
        log.warning("agi: %s from %s; closing", message, _peer(writer))


async def _read_reply(reader: asyncio.StreamReader) -> AgiReply:
    line = await reader.readuntil(b"\n")
    if line[3:4] == b"-":  # `520-Invalid command syntax...` until `520 End of proper usage.`
        last, lines = line[:3] + b" ", [line]
        while not line.startswith(last):
            line = await reader.readuntil(b"\n")
            lines.append(line)
        line = b"".join(lines)
    return parse_reply(line)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
