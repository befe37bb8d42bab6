"""Where a FastAGI session meets its server: `SessionHost` is what a session may use of the
server that accepted it, `LiveSession` what the server may do to a running session. Neither
side touches the other's private members (`tests/unit/test_agi_boundaries.py`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from agent.pbx.agi.deadlines import Deadlines
from agent.pbx.agi.protocol import AgiRequest

Script = Callable[[AgiRequest], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""What a script name maps to. It returns the channel variables to set, either directly (the
fast path: the answer goes out from the callback that read the env block, with no task) or as
an awaitable (an `async def` script; it runs as a task, cancelled when it exceeds its share of
the deadline). A script that can often answer from memory returns the Mapping then, and a
coroutine only when it must wait (a CRM lookup)."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What bounds a session: the call's deadline and the script's share of it, the header's
    timeout (`first_timer_s`: the earlier of the two), the longest env block or reply line,
    the longest (multi-line) reply, and how many sessions may run at once."""

    deadline_s: float
    script_budget_s: float
    header_timeout_s: float
    first_timer_s: float
    max_line: int
    max_reply_lines: int
    max_reply_bytes: int
    limit_clients: int


class LiveSession(Protocol):
    """A running session as its host sees it: `Deadlines` expires it, `stop` aborts it."""

    def expired(self) -> None: ...

    def abort(self) -> None: ...


class SessionHost(Protocol):
    """What a session needs from the server that accepted it (`AgiServer`)."""

    @property
    def limits(self) -> SessionLimits: ...

    @property
    def scripts(self) -> Mapping[str, Script]: ...

    @property
    def outcomes(self) -> Counter[str]: ...

    @property
    def deadlines(self) -> Deadlines: ...

    def admits(self, peer: object) -> bool: ...

    def opened(self, session: LiveSession) -> None: ...

    def closed(self, session: LiveSession) -> None: ...

    def crowded(self) -> bool: ...

    def fallback_commands(self, request: AgiRequest, reason: str) -> tuple[list[bytes], str]:
        ...

    def fail(self, reason: str) -> None: ...

    def warn(self, message: str, *args: object) -> None: ...
