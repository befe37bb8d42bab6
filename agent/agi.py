"""FastAGI: Asterisk asks over TCP how to route a call; we answer with channel variables (§3).

The top half is pure (bytes in, values out, no I/O); `AgiServer` below owns the sockets.
Asterisk behaviour this module relies on, observed on Asterisk 22 (`tests/fixtures/agi/`):

- The environment block is `agi_*: value\\n` lines ended by an empty line. An empty value
  keeps its separator (`agi_accountcode: `). Dialplan arguments arrive as `agi_arg_1..N`
  after `agi_threadid`, never inside `agi_request`.
- Asterisk reads a command into a 2048-byte buffer and takes the rest of a longer line as the
  *next* command, so an over-long command is an injection vector, not just an error:
  `encode_mset` refuses to build one.
- `EXEC MSet "A=1,B=2"` sets every variable in one round trip (`200 result=0`). AGI's parser
  eats one level of backslashes, then MSet splits on commas that are not escaped and not
  inside `( )` / `[ ]`, eating the second level. Hence commas and brackets in values go on
  the wire as `\\\\,` / `\\\\(`; `"` and `\\` are removed from values instead.
- On a dead channel every command is answered `511 ...`; Asterisk writes `HANGUP\\n` when the
  channel hangs up and again after the agent closes the socket: both are a quiet end.

Deadline: the clock starts when the connection is accepted. The script gets
`SCRIPT_SHARE` of `deadline_s`; the `EXEC MSet` round trip must complete by the end of the
whole deadline. A script that misses its share is cancelled and the fallback route is sent
with `CRM_ERROR=timeout`, so Asterisk always has its answer within `deadline_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from agent.phones import mask

log = logging.getLogger(__name__)

AGI_BUF_LEN = 2048  # res_agi.c: commands are read into a buffer of this size, NUL included
MAX_COMMAND_BYTES = AGI_BUF_LEN - 1  # newline included
MAX_MSET_PAIRS = 24  # older Asterisk releases parse only 24 MSet pairs (newer ones 99)
MAX_VALUE_CHARS = 256
SCRIPT_SHARE = 0.8  # of deadline_s for the script; the rest is for the MSet round trip


class AgiProtocolError(ValueError):
    """The peer sent something that is not FastAGI, or a command cannot be encoded."""


# --------------------------------------------------------------------------- pure parsers


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """One FastAGI call: the script name, its dialplan arguments and the raw `agi_*` env."""

    script: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # holds personal data

    @property
    def callerid(self) -> str:
        return self.env.get("agi_callerid", "")

    @property
    def calleridname(self) -> str:
        return self.env.get("agi_calleridname", "")

    @property
    def dnid(self) -> str:
        return self.env.get("agi_dnid", "")

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")

    @property
    def context(self) -> str:
        return self.env.get("agi_context", "")

    @property
    def extension(self) -> str:
        return self.env.get("agi_extension", "")


@dataclass(frozen=True, slots=True)
class AgiReply:
    """A reply to one command. `code` is 0 for the bare `HANGUP` line Asterisk sends."""

    code: int
    result: str | None = None
    data: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def dead(self) -> bool:
        """The channel is gone: `HANGUP`, or `511 Command Not Permitted on a dead channel`."""
        return self.code in (0, 511)


HANGUP = AgiReply(0, None, "HANGUP")


def parse_env(block: bytes) -> AgiRequest:
    """Parse the environment block Asterisk sends first (`agi_key: value` lines)."""
    env: dict[str, str] = {}
    lines = block.decode("utf-8", "replace").split("\n")
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep and key[:4] == "agi_":
            env[key] = value
        elif line:
            raise _env_error(lines.index(line) + 1, sep)
    return AgiRequest(_script_name(env), _args(env), env)


def _env_error(number: int, sep: str) -> AgiProtocolError:
    # values may be personal data (caller IDs, names): say where, never what
    if not sep:
        return AgiProtocolError(f"env line {number}: no ': ' separator")
    return AgiProtocolError(f"env line {number}: key does not start with 'agi_'")


def _script_name(env: Mapping[str, str]) -> str:
    script = env.get("agi_network_script")
    if script is not None:
        return script
    request = env.get("agi_request")
    if request is None:
        raise AgiProtocolError("env has neither agi_network_script nor agi_request")
    # agi://host:port/path -> path; Asterisk omits agi_network_script when the path is empty
    _, scheme, rest = request.partition("://")
    return rest.partition("/")[2] if scheme else request


def _args(env: Mapping[str, str]) -> tuple[str, ...]:
    args: list[str] = []
    while (value := env.get(f"agi_arg_{len(args) + 1}")) is not None:
        args.append(value)
    return tuple(args)


def parse_reply(raw: bytes) -> AgiReply:
    """Parse one reply: `200 result=0 (timeout)`, `510 ...`, `511 ...`, `HANGUP`, or a whole
    multi-line `520-...` usage reply up to and including `520 End of proper usage.`."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if text == "HANGUP":
        return HANGUP
    head, sep = text[:3], text[3:4]
    if len(head) != 3 or not head.isdigit() or sep not in (" ", "-", ""):
        raise AgiProtocolError(f"not an AGI reply: {text[:40]!r}")
    if sep == "-":
        return AgiReply(int(head), None, _multiline_data(head, text))
    if head != "200":
        return AgiReply(int(head), None, text[4:])
    rest = text[4:]
    if not rest.startswith("result="):
        raise AgiProtocolError(f"200 reply without result=: {text[:40]!r}")
    result, _, tail = rest[7:].partition(" ")
    if tail.startswith("("):
        close = tail.rfind(")")
        tail = tail[1:close] if close > 0 else tail[1:]
    return AgiReply(200, result, tail)


def _multiline_data(head: str, text: str) -> str:
    lines = text.split("\n")
    if not lines[-1].startswith(head + " "):
        raise AgiProtocolError(f"{head} reply does not end with a '{head} ' line")
    return "\n".join([lines[0][4:], *lines[1:-1], lines[-1][4:]])


_UNSAFE = {**{code: " " for code in (*range(32), 127)}, '"': "'", "\\": None}
_SAFE = str.maketrans(_UNSAFE)
# On the wire, MSet separators are escaped too: commas split pairs and brackets nest (an
# unbalanced "(" would swallow every following pair). One backslash is for AGI's parser, the
# other for MSet's.
_WIRE = str.maketrans({**_UNSAFE, **{char: "\\\\" + char for char in ",()[]"}})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\([A-Za-z0-9_-]{0,32}\))?")


def sanitize(value: object, max_chars: int = MAX_VALUE_CHARS) -> str:
    """Make a CRM-provided value safe and short: capped at `max_chars` characters, control
    characters (CR, LF, NUL, TAB...) become spaces, `"` becomes `'`, `\\` is dropped, outer
    spaces are stripped. None is empty; booleans are `1` / `0`."""
    return _text(value)[:max_chars].translate(_SAFE).strip(" ")


def _text(value: object) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def encode_mset(variables: Mapping[str, str]) -> bytes:
    """ONE `EXEC MSet "A=1,B=two\\\\, three"\\n` command setting every variable.

    Values are `sanitize`d, then commas and brackets escaped; `${...}` stays literal
    (EXEC does not expand it). Raises `AgiProtocolError` when the command would not fit in
    Asterisk's buffer or MSet's pair limit, `ValueError` for an invalid variable name."""
    return _command(_pairs(variables))


def encode_msets(variables: Mapping[str, str]) -> list[bytes]:
    """`encode_mset` split over as few commands as needed (one unless values are huge)."""
    pairs = _pairs(variables)
    try:
        return [_command(pairs)] if pairs else []
    except AgiProtocolError:
        return [_command(chunk) for chunk in _chunks(pairs)]


def _pairs(variables: Mapping[str, str]) -> list[str]:
    # `sanitize` and the MSet escapes in one translate: this runs ~10 times per call
    return [
        _checked_name(name) + "=" + _text(value)[:MAX_VALUE_CHARS].translate(_WIRE).strip(" ")
        for name, value in variables.items()
    ]


@lru_cache(maxsize=512)
def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid channel variable name: {name[:40]!r}")
    return name


def _command(pairs: list[str]) -> bytes:
    if not pairs:
        raise AgiProtocolError("MSet needs at least one variable")
    line = ('EXEC MSet "' + ",".join(pairs) + '"\n').encode("utf-8", "replace")
    if len(line) > MAX_COMMAND_BYTES or len(pairs) > MAX_MSET_PAIRS:
        raise AgiProtocolError(f"MSet of {len(pairs)} pairs is {len(line)} bytes: too long")
    return line


def _chunks(pairs: list[str]) -> list[list[str]]:
    budget = MAX_COMMAND_BYTES - len(b'EXEC MSet ""\n')
    chunks: list[list[str]] = [[]]
    used = 0
    for pair in pairs:
        size = len(pair.encode("utf-8", "replace")) + 1
        if chunks[-1] and (used + size > budget or len(chunks[-1]) == MAX_MSET_PAIRS):
            chunks.append([])
            used = 0
        chunks[-1].append(pair)
        used += size
    return chunks


# --------------------------------------------------------------------------- server

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
