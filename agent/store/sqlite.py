"""SQLite engine: one writer connection and one reader connection, each on its own thread.

Every call is one hop to a thread, so the event loop never blocks on disk. WAL mode lets
reads (the routing lookups) run while a write transaction is open.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from agent.store.db import Database, Query, Row, StoreError

T = TypeVar("T")
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000",
           "PRAGMA cache_size=-65536", "PRAGMA temp_store=MEMORY")


class _Connection:
    """A sqlite3 connection confined to one thread.

    Requests made during one event-loop iteration are handed to the thread as one batch
    and answered with one wake-up of the loop, so the cost of a thread hop is shared by
    every concurrent lookup instead of paid by each (FIFO order is kept).
    """

    def __init__(self, path: str, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            conn.execute(pragma)
        self.conn = conn
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._submit, loop)
        self._queue.append((fn, future))
        return await future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        self.executor.submit(self._drain, loop, batch)

    def _drain(self, loop: asyncio.AbstractEventLoop,
               batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]]
               ) -> None:
        results: list[tuple[asyncio.Future[Any], Any, Exception | None]] = []
        try:
            conn = self.conn or self._open()
        except (OSError, sqlite3.Error) as exc:  # a missing or read-only folder, a bad file
            error = StoreError(f"sqlite: cannot open {self.path}: {exc}")
            results = [(future, None, error) for _, future in batch]
            loop.call_soon_threadsafe(_resolve, results)
            return
        for fn, future in batch:
            try:
                results.append((future, fn(conn), None))
            except sqlite3.Error as exc:
                results.append((future, None, StoreError(f"sqlite: {exc}")))
            except Exception as exc:
                results.append((future, None, exc))
        loop.call_soon_threadsafe(_resolve, results)

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self.conn is not None:
            await self.run(_close)
        self.executor.shutdown(wait=True)


def _resolve(results: list[tuple[asyncio.Future[Any], Any, Exception | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _fetch(sql: str, args: Sequence[Any]) -> Callable[[sqlite3.Connection], list[Row]]:
    return lambda conn: conn.execute(sql, args).fetchall()


def _fetch_many(queries: Sequence[Query]) -> Callable[[sqlite3.Connection], list[list[Row]]]:
    return lambda conn: [conn.execute(sql, args).fetchall() for sql, args in queries]


def _executemany(sql: str, rows: Sequence[Sequence[Any]]) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.executemany(sql, rows)

    return run


class _Tx:
    """Statements of one open transaction on the writer connection."""

    dialect = "sqlite"

    def __init__(self, writer: _Connection) -> None:
        self.writer = writer

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self.writer.run(_fetch(sql, args))

    async def fetch_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        return await self.writer.run(_fetch_many(queries))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self.writer.run(_fetch(sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.writer.run(_executemany(sql, rows))

    def transaction(self) -> Any:
        return _nested(self)

    async def close(self) -> None:
        return None


@asynccontextmanager
async def _nested(tx: _Tx) -> AsyncIterator[Database]:
    yield tx


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = _Connection(path, "writer")
        self._reader = _Connection(path, "reader") if path != ":memory:" else self._writer
        self._lock = asyncio.Lock()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self._reader.run(_fetch(sql, args))

    async def fetch_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        return await self._reader.run(_fetch_many(queries))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            return await self._writer.run(_fetch(sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self._lock:
            await self._writer.run(lambda conn: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _Tx(self._writer)
            except (Exception, asyncio.CancelledError):
                await asyncio.shield(self._writer.run(lambda conn: conn.execute("ROLLBACK")))
                raise
            await self._writer.run(lambda conn: conn.execute("COMMIT"))

    async def close(self) -> None:
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()
