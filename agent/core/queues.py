"""Live queue counters (`queue.NAME.available`, `queue.NAME.waiting` in routing rules),
from Asterisk's `QueueParams` / `QueueMember*` / `QueueCaller*` AMI events. Pure: the AMI
listener feeds it, routing reads `snapshot()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

_AVAILABLE_STATES = frozenset({"0", "1"})  # AST_DEVICE_UNKNOWN, AST_DEVICE_NOT_INUSE


@dataclass
class _Queue:
    members: dict[str, bool] = field(default_factory=dict)  # interface -> available
    waiting: int = 0


class QueueBoard:
    """Live queue counters from `QueueParams`/`QueueMember*`/`QueueCaller*` events."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._snapshot: dict[str, dict[str, int]] | None = None

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The counters of every queue: read on every routed call, so built once per change
        and shared (read it, do not modify it)."""
        if self._snapshot is None:
            self._snapshot = {
                name: {"available": sum(q.members.values()), "waiting": q.waiting}
                for name, q in self._queues.items()}
        return self._snapshot

    def reset(self, messages: list[Mapping[str, str]]) -> None:
        self._queues.clear()
        self._snapshot = None
        for message in messages:
            self.feed(message)

    def feed(self, event: Mapping[str, str]) -> None:
        name, queue = event.get("Event", ""), event.get("Queue", "")
        if not queue or not name.startswith("Queue"):
            return
        self._snapshot = None
        state = self._queues.setdefault(queue, _Queue())
        if name == "QueueParams":
            state.waiting = _int(event.get("Calls"), state.waiting)
        elif name in ("QueueCallerJoin", "QueueCallerLeave"):
            state.waiting = _int(event.get("Count"), state.waiting)
        elif name == "QueueMemberRemoved":
            state.members.pop(_member(event), None)
        elif name.startswith("QueueMember"):
            state.members[_member(event)] = (event.get("Paused", "0") == "0"
                                             and event.get("Status", "") in _AVAILABLE_STATES)


def _member(event: Mapping[str, str]) -> str:
    for key in ("Interface", "Location", "StateInterface", "MemberName", "Name"):
        if value := event.get(key):
            return value
    return ""


def _int(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() else default
