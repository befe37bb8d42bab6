"""`Deadlines`: many session deadlines on one loop timer per 10 ms slot."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.pbx.agi.deadlines import Deadlines


class Session:
    def __init__(self, loop: asyncio.AbstractEventLoop, fail: bool = False) -> None:
        self.loop, self.fail = loop, fail
        self.fired: list[float] = []

    def expired(self) -> None:
        self.fired.append(self.loop.time())
        if self.fail:
            raise RuntimeError("broken")


async def test_deadlines_fire_on_time_once_and_not_after_removal(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, tick_s=0.01)
    start = loop.time()
    due = {Session(loop): start + 0.05 + i * 0.003 for i in range(10)}
    broken, gone = Session(loop, fail=True), Session(loop)
    slots = {session: deadlines.add(session, when) for session, when in due.items()}
    deadlines.add(broken, start + 0.05)
    deadlines.remove(gone, deadlines.add(gone, start + 0.05))  # a session that ended
    assert len(set(slots.values())) < len(slots)  # sessions share slots: fewer loop timers
    with caplog.at_level(logging.ERROR, logger="agent.agi"):
        await asyncio.sleep(0.15)
    for session, when in due.items():
        (fired,) = session.fired  # every deadline fired, once, despite the broken neighbour
        assert when - 0.01 - 0.002 <= fired <= when + 0.02  # up to one slot early, not late
    assert gone.fired == [] and broken.fired and "deadline handler failed" in caplog.text
    assert len(deadlines) == 0
