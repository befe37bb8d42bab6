"""A fake Asterisk for FastAGI tests: it dials the agent and speaks like Asterisk 22 does.

`call()` connects, writes an environment block byte for byte (the fixtures are real captures),
answers every command line with `200 result=0` (or the replies it is given), writes `HANGUP\\n`
once the agent has closed, as Asterisk does, and returns a `Call` recording every command line.

`channel_variables()` decodes an `EXEC MSet` command the way Asterisk would: `agi_args` is
res_agi.c's `parse_args`, `separate_args` is app.c's `__ast_app_separate_args` (with
`remove_chars`), `mset` is pbx_variables.c's `pbx_builtin_setvar_multiple`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.conftest import FIXTURES

AGI_FIXTURES = FIXTURES / "agi"
ROUTE_ENV = "asterisk-22-route.env.txt"
DTMF_ENV = "asterisk-22-dtmf-args.env.txt"
OK = b"200 result=0\n"
DEAD = b"511 Command Not Permitted on a dead channel or intercepted\n"


def load_env(name: str = ROUTE_ENV) -> bytes:
    return (AGI_FIXTURES / name).read_bytes()


def retarget(env: bytes, script: str) -> bytes:
    """The same block as if the dialplan had called `agi://127.0.0.1:4573/<script>`."""
    lines = []
    for line in env.split(b"\n"):
        if line.startswith(b"agi_network_script: "):
            line = b"agi_network_script: " + script.encode()
        elif line.startswith(b"agi_request: "):
            line = line.rsplit(b"/", 1)[0] + b"/" + script.encode()
        lines.append(line)
    return b"\n".join(lines)


@dataclass
class Call:
    """What the fake Asterisk saw during one FastAGI session."""

    commands: list[bytes] = field(default_factory=list)
    closed_by_agent: bool = False
    reset: bool = False
    connected_at: float = 0.0
    first_command_at: float | None = None
    closed_at: float = 0.0

    @property
    def variables(self) -> dict[str, str]:
        """Every channel variable set by the MSet commands, as Asterisk would store them."""
        variables: dict[str, str] = {}
        for command in self.commands:
            variables.update(channel_variables(command))
        return variables

    @property
    def answer_s(self) -> float:
        """Connect -> first command received (what the PBX waits for)."""
        assert self.first_command_at is not None, "the agent sent no command"
        return self.first_command_at - self.connected_at


async def call(
    port: int,
    env: bytes | None = None,
    *,
    host: str = "127.0.0.1",
    replies: Sequence[bytes] = (),
    default_reply: bytes = OK,
    hangup_first: bool = False,
    write_eof: bool = False,
    disconnect: asyncio.Future[None] | None = None,
    timeout_s: float = 5.0,
) -> Call:
    """One FastAGI session against `host:port`.

    `replies` answer the first commands, `default_reply` the rest. `hangup_first` writes
    `HANGUP\\n` right after the env block and then answers `511`, like a channel that hung up
    before the agent spoke. `write_eof` half-closes after the env (a truncated header).
    `disconnect` closes the socket as soon as that future is done (a crashed PBX)."""
    record = Call(connected_at=time.perf_counter())
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(load_env() if env is None else env)
            if write_eof:
                writer.write_eof()
            if hangup_first:
                writer.write(b"HANGUP\n")
                replies, default_reply = (), DEAD
            if disconnect is not None:
                await disconnect
                return record
            await _converse(reader, writer, record, list(replies), default_reply)
            if not write_eof and not writer.is_closing():
                writer.write(b"HANGUP\n")  # what Asterisk writes once the agent has closed
    finally:
        record.closed_at = time.perf_counter()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return record


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: Call,
    replies: list[bytes],
    default_reply: bytes,
) -> None:
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, f"agent sent a command without newline: {exc.partial!r}"
            break
        except ConnectionResetError:
            record.reset = True
            break
        if record.first_command_at is None:
            record.first_command_at = time.perf_counter()
        record.commands.append(line)
        writer.write(replies.pop(0) if replies else default_reply)
    record.closed_by_agent = True


# --------------------------------------------------------------- Asterisk's parsers, in Python


def agi_args(line: str) -> list[str]:
    """Split an AGI command line like res_agi.c `parse_args`."""
    args: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                args.append([])
                whitespace = False
        elif char in " \t" and not quoted and not escaped:
            whitespace = True
        elif char == "\\" and not escaped:
            escaped = True
        else:
            if whitespace:
                args.append([])
                whitespace = False
            args[-1].append(char)
            escaped = False
    return ["".join(arg) for arg in args]


def separate_args(text: str, delim: str, max_args: int) -> list[str]:
    """app.c `__ast_app_separate_args(..., remove_chars=1, ...)`: split on `delim` outside
    quotes, `( )` and `[ ]`; drop quotes; a backslash makes the next character literal. The
    last slot gets the unparsed remainder."""
    out: list[str] = []
    paren = bracket = 0
    quote = ended_on_delim = False
    i = 0
    while i < len(text) and len(out) < max_args - 1:
        current: list[str] = []
        ended_on_delim = False
        while i < len(text):
            char = text[i]
            i += 1
            if char == delim and not (paren or quote or bracket):
                ended_on_delim = True
                break
            if char == '"' and delim != '"':
                quote = not quote
                continue
            if char == "\\":
                current.append(text[i : i + 1])
                i += 1
                continue
            paren += (char == "(") - (char == ")" and paren > 0)
            bracket += (char == "[") - (char == "]" and bracket > 0)
            current.append(char)
        out.append("".join(current))
    if i < len(text) or ended_on_delim:
        out.append(text[i:])
    return out


def mset(argument: str) -> dict[str, str]:
    """pbx_builtin_setvar_multiple: the variables one `MSet(argument)` sets."""
    variables = {}
    for pair in separate_args(argument, ",", 99):
        parts = separate_args(pair, "=", 2)
        if len(parts) == 2:
            variables[parts[0]] = parts[1]
    return variables


def channel_variables(command: bytes) -> dict[str, str]:
    """The variables an `EXEC MSet ...` line sets on the channel (empty for other commands).
    EXEC passes only its second argument to the application."""
    args = agi_args(command.decode().rstrip("\n"))
    if len(args) < 3 or args[0].upper() != "EXEC" or args[1].lower() != "mset":
        return {}
    return mset(args[2])
