"""Deadlines of many short-lived sessions on one event loop, grouped in slots of `tick_s`.

A routed FastAGI call lasts about a millisecond, yet it needs a deadline (header timeout,
script budget, reply deadline). One loop timer per session means a `TimerHandle` and a
`Context` allocated, a heap push, a cancel, and a dead handle left in the loop's heap for every
call. Here a session joins the set of its slot and leaves it when it ends; a slot arms one loop
timer when its first member joins, so at thousands of calls per second the loop sees about
`1 / tick_s` timers a second, whatever the call rate.

A deadline fires at the start of its slot: up to `tick_s` early, never late.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("agent.agi")


class Expiring(Protocol):
    def expired(self) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = 0.01) -> None:
        self._loop = loop
        self._tick_s = tick_s
        self._slots: dict[int, set[Expiring]] = {}

    def add(self, item: Expiring, when: float) -> int:
        """Call `item.expired()` at `when` (loop time) or up to `tick_s` before; returns the
        slot to give back to `remove`."""
        slot = int(when / self._tick_s)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            self._loop.call_at(slot * self._tick_s, self._fire, slot)
        members.add(item)
        return slot

    def remove(self, item: Expiring, slot: int) -> None:
        members = self._slots.get(slot)
        if members is not None:
            members.discard(item)

    def __len__(self) -> int:
        return sum(len(members) for members in self._slots.values())

    def _fire(self, slot: int) -> None:
        for item in self._slots.pop(slot, ()):
            try:
                item.expired()
            except Exception:  # one broken session must not spare the others their deadline
                log.exception("agi: deadline handler failed")
