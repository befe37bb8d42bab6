"""The embedded store: the agent's own CRM and its journal/outbox tables (§6, §9, §10)."""

from __future__ import annotations

from agent.store.db import Database, StoreError, open_database
from agent.store.journal import OutboxItem
from agent.store.records import ContactRow, NotFound, Store


async def open_store(url: str, connect_timeout_s: float = 10.0) -> Store:
    """Open the store named by `url` and bring its schema up to date."""
    store = Store(open_database(url, connect_timeout_s))
    try:
        await store.migrate()
    except Exception:
        await store.close()
        raise
    return store


__all__ = ["ContactRow", "Database", "NotFound", "OutboxItem", "Store", "StoreError", "open_store"]
