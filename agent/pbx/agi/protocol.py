"""FastAGI: Asterisk asks over TCP how to route a call; we answer with channel variables (§3).

This module is the pure half (bytes in, values out, no I/O); `agent.pbx.agi.server` owns the
sockets.
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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

AGI_BUF_LEN = 2048  # res_agi.c: commands are read into a buffer of this size, NUL included
MAX_COMMAND_BYTES = AGI_BUF_LEN - 1  # newline included
MAX_MSET_PAIRS = 24  # older Asterisk releases parse only 24 MSet pairs (newer ones 99)
MAX_VALUE_CHARS = 256
SCRIPT_SHARE = 0.8  # of deadline_s for the script; the rest is for the MSet round trip
MAX_REPLY_LINES = 64  # a `520-` usage reply is a few lines; an endless one is a hostile peer
MAX_REPLY_BYTES = 16_384  # a whole reply, all its lines


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
    try:
        return [_cached_pair(name, value) for name, value in variables.items()]
    except TypeError:  # an unhashable value
        return [_pair(name, value) for name, value in variables.items()]


def _pair(name: str, value: object) -> str:
    """`NAME=value` as it goes on the wire: `sanitize` and the MSet escapes in one translate."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid channel variable name: {name[:40]!r}")
    return name + "=" + _text(value)[:MAX_VALUE_CHARS].translate(_WIRE).strip(" ")


# most pairs (`CRM_ROUTE_TYPE=queue`, `CRM_KNOWN=1`...) repeat call after call; typed: 1 and
# True are different values on the wire
_cached_pair = lru_cache(maxsize=4096, typed=True)(_pair)


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
