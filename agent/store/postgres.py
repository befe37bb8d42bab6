"""PostgreSQL engine (asyncpg pool), for several agents sharing one store (§10)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from agent.store.db import Database, Query, Row, StoreError

_PLACEHOLDER = re.compile(r"\?")


@lru_cache(maxsize=512)
def to_pg(sql: str) -> str:
    """Rewrite `?` placeholders as `$1, $2, ...` (our SQL never has `?` in literals)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class _Conn:
    """Statements on one acquired connection (inside a transaction)."""

    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self.conn.fetch(to_pg(sql), *args))
        except asyncpg.PostgresError as exc:
            raise StoreError(f"postgres: {exc}") from exc

    async def fetch_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        return [await self.fetch(sql, args) for sql, args in queries]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self.fetch(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self.conn.executemany(to_pg(sql), rows)
        except asyncpg.PostgresError as exc:
            raise StoreError(f"postgres: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self.conn.transaction():
            yield self

    async def close(self) -> None:
        return None


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10,
                 connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._pool: Any = None
        self._listener: Any = None
        self._sizes = (min_size, max_size)

    async def _get_pool(self) -> Any:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=self._sizes[0], max_size=self._sizes[1],
                    timeout=self.connect_timeout_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StoreError(f"postgres: cannot connect: {self._why(exc)}") from exc
        return self._pool

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return (f"no answer within {self.connect_timeout_s:g} s "
                    "(store.connect_timeout_s)")
        return str(exc) or type(exc).__name__

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await _Conn(conn).fetch(sql, args)

    async def fetch_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await _Conn(conn).fetch_many(queries)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self.fetch(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            yield _Conn(conn)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` for each NOTIFY on `channel` (other agents' news), on a
        connection of its own, until `close()`."""
        if self._listener is None:
            try:
                self._listener = await asyncpg.connect(self.url, timeout=self.connect_timeout_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StoreError(f"postgres: cannot listen: {self._why(exc)}") from exc
        await self._listener.add_listener(
            channel, lambda _conn, _pid, _channel, payload: callback(payload))

    async def notify(self, channel: str, payload: str) -> None:
        await self.execute("SELECT pg_notify(?, ?)", (channel, payload))

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        if self._pool is not None:
            await self._pool.close()
