"""The agent's database: its own tables (calls, outbox, decisions) and the engines; the
embedded CRM's records live in it too (`agent.crm.embedded`) (§6, §9, §10)."""

from __future__ import annotations

from agent.store.db import Database, StoreError
from agent.store.tables import OutboxItem, Store


def open_database(url: str, connect_timeout_s: float = 10.0) -> Database:
    """Pick the engine from the store URL: `sqlite:///path` or `postgresql://...` (each
    imported only when used: a SQLite agent never loads asyncpg)."""
    if url.startswith("sqlite:///"):
        from agent.store.sqlite import SqliteDatabase

        return SqliteDatabase(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from agent.store.postgres import PostgresDatabase

        return PostgresDatabase(url, connect_timeout_s=connect_timeout_s)
    scheme = url.partition(":")[0][:20] if ":" in url else "(none)"  # the rest may hold a password
    raise StoreError(f"unsupported store URL scheme {scheme!r}: use sqlite:///PATH or "
                     "postgresql://USER@HOST/DATABASE")


async def open_store(url: str, connect_timeout_s: float = 10.0) -> Store:
    """Open the store named by `url` and bring its schema up to date."""
    store = Store(open_database(url, connect_timeout_s))
    try:
        await store.migrate()
    except Exception:
        await store.close()
        raise
    return store


__all__ = ["Database", "OutboxItem", "Store", "StoreError",
           "open_database", "open_store"]
