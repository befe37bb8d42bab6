"""News for the other agents sharing one PostgreSQL store (§10), over LISTEN/NOTIFY.

A caller written by one agent (journal, intake, API) is dropped from every agent's lookup
cache; a rules reload on one agent (file save, SIGHUP, `/admin/rules/reload`) makes the
others reload too. Each message carries the sender's id so that an agent ignores its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from agent.store.db import StoreError
from agent.store.postgres import PostgresDatabase

log = logging.getLogger("agent.broadcast")
CALLERS = "crm_agent_caller"
RULES = "crm_agent_rules"


class Broadcast:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.sender = uuid.uuid4().hex[:12]
        self._tasks: set[asyncio.Task[None]] = set()

    async def subscribe(self, channel: str, handle: Callable[[str], None]) -> None:
        """`handle(payload)` for each message on `channel` sent by another agent."""

        def receive(message: str) -> None:
            sender, _, payload = message.partition(":")
            if sender != self.sender:
                handle(payload)

        await self.db.listen(channel, receive)

    def send(self, channel: str, payload: str = "") -> None:
        """Fire and forget (a lost message only means a cache entry lives to its TTL)."""
        task = asyncio.create_task(self._send(channel, f"{self.sender}:{payload}"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, channel: str, message: str) -> None:
        try:
            await self.db.notify(channel, message)
        except StoreError as exc:
            log.warning("could not tell the other agents (%s): %s", channel, exc)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
