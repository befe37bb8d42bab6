"""The small SQL surface the store needs, implemented by SQLite and PostgreSQL engines.

SQL is written once with `?` placeholders; the PostgreSQL engine rewrites them to `$n`.
Only column types differ between engines (see `schema.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = Sequence[Any]
Query = tuple[str, Sequence[Any]]


class Database(Protocol):
    dialect: str

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    async def fetch_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        """Run several reads in one round trip to the engine (one thread hop on SQLite)."""
        ...

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; returns its rows (for `RETURNING`)."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Database]:
        """A handle whose statements run in one transaction, committed on clean exit."""
        ...

    async def close(self) -> None: ...


class StoreError(Exception):
    """The store could not be reached or refused an operation."""


def open_database(url: str, connect_timeout_s: float = 10.0) -> Database:
    """Pick the engine from the store URL: `sqlite:///path` or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        from agent.store.sqlite import SqliteDatabase

        return SqliteDatabase(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from agent.store.postgres import PostgresDatabase

        return PostgresDatabase(url, connect_timeout_s=connect_timeout_s)
    scheme = url.partition(":")[0][:20] if ":" in url else "(none)"  # the rest may hold a password
    raise StoreError(f"unsupported store URL scheme {scheme!r}: use sqlite:///PATH or "
                     "postgresql://USER@HOST/DATABASE")
