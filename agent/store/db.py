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

