"""The durable delivery loop (§9): accepted events are stored, then applied exactly once.

`OutboxWorker` claims due rows (a lease: a claimer that died loses them when it expires;
PostgreSQL claims with `FOR UPDATE SKIP LOCKED`) and runs each row's handler inside ONE
store transaction together with `mark_applied(key)` and `complete(row)`. Either all of it
commits or nothing does, so a crash or `kill -9` at any point leaves the row to be claimed
again and applied from scratch; the `applied` key makes a second claimer that raced past
an expired lease roll back instead of applying twice. Failures are retried with capped
exponential backoff and jitter; after `max_attempts` the row is `dead` (logged, counted
in `/readyz` and the metrics) until an operator requeues it. The call journal
(`agent.journal.service`) is the handler of `journal` rows.

A remote CRM cannot join a store transaction. Its handler will persist the plan on the
first attempt (`mark_applied("plan:<key>", ...)`), then apply operation *i* only when
`applied("<key>#i")` is unset and record `mark_applied("<key>#i", created_id)` right after,
resolving `"new"` references from those results, so a retry resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.ops.metrics import Metrics
    from agent.store import OutboxItem, Store

log = logging.getLogger("agent.outbox")


class Handler(Protocol):
    """Applies one outbox row inside the store transaction `tx`; returns a short result."""

    async def __call__(self, tx: Store, item: OutboxItem) -> str: ...


class AlreadyApplied(Exception):
    """Another claimer committed this row first (its lease had expired)."""


def backoff_s(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": between half and all of the step."""
    step = min(max_s, base_s * 2 ** min(max(attempts - 1, 0), 32))
    return step / 2 + rng.random() * step / 2


class OutboxWorker:
    """Claims outbox rows and applies each with its kind's handler, exactly once in effect."""

    def __init__(self, store: Store, handlers: Mapping[str, Handler] | None = None, *,
                 batch: int = 20, lease_s: float = 60.0, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 300.0, max_attempts: int = 20, poll_s: float = 1.0,
                 before_batch: Callable[[], Awaitable[None]] | None = None,
                 metrics: Metrics | None = None, rng: random.Random | None = None,
                 agent_id: str = "") -> None:
        self.store, self.agent_id = store, agent_id
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.batch, self.lease_s, self.poll_s = batch, lease_s, poll_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.max_attempts = max_attempts
        self.before_batch, self.metrics = before_batch, metrics
        self.rng = rng or random.Random()
        self.delivered = self.failures = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """New work was queued: skip the rest of the poll wait."""
        self._wake.set()

    async def start(self) -> None:
        """Take back at once the rows this agent id held when it died, then run."""
        if self._task is None:
            if self.agent_id:
                held = await self.store.reclaim(self.agent_id)
                if held:
                    log.warning("outbox: %d rows this agent (%s) held when it stopped "
                                "uncleanly are due again", held, self.agent_id)
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in flight (drain), then stop; cancel it after `timeout_s`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:  # its transaction rolls back; the rows are claimed again after the lease
            log.warning("outbox worker still busy after %.1f s: cancelling", timeout_s)
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        while not self._stopping:
            try:
                handled = await self.run_once()
            except Exception as exc:  # the store is down: keep trying, never die
                self.last_error = f"outbox: {exc}"
                log.warning("%s; retrying in %.1f s", self.last_error, self.poll_s)
                handled = 0
            if handled < self.batch:
                await self._idle(self.poll_s)

    async def _idle(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch and handle every row of it; returns how many rows were claimed."""
        if self.before_batch is not None:
            await self.before_batch()
        items = await self.store.claim(self.batch, lease_s=self.lease_s,
                                       claimer=self.agent_id)
        for item in items:
            await self.handle(item)
        return len(items)

    async def drain(self, max_batches: int = 10_000) -> int:
        """Handle due rows until none are left (tests, benchmarks, the CLI)."""
        total = 0
        for _ in range(max_batches):
            handled = await self.run_once()
            total += handled
            if handled == 0:
                break
        return total

    async def handle(self, item: OutboxItem) -> None:
        """Apply one claimed row; a failure schedules a retry (or buries it), never raises."""
        try:
            await self._deliver(item)
        except AlreadyApplied:
            await self.store.complete(item.id)
        except Exception as exc:
            await self._failed(item, exc)
        else:
            self.delivered += 1

    async def _deliver(self, item: OutboxItem) -> None:
        handler = self.handlers.get(item.kind)
        if handler is None:
            raise LookupError(f"no handler for outbox rows of kind {item.kind!r}")
        async with self.store.transaction() as tx:
            result = await handler(tx, item)
            if await tx.mark_applied(f"outbox:{item.key}", result) is False:
                raise AlreadyApplied(item.key)
            await tx.complete(item.id)

    async def _failed(self, item: OutboxItem, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{item.key}: {type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.outbox_failures.inc()
        dead = item.attempts >= self.max_attempts
        delay = backoff_s(item.attempts, self.backoff_base_s, self.backoff_max_s, self.rng)
        if dead:
            log.error("outbox %s is dead after %d attempts: %s", item.key, item.attempts,
                      self.last_error, exc_info=exc)
        else:
            log.warning("outbox %s attempt %d failed (%s); retry in %.1f s", item.key,
                        item.attempts, self.last_error, delay)
        try:
            await self.store.retry(item.id, delay_s=delay, error=self.last_error, dead=dead)
        except Exception as store_exc:  # the lease expires and the row comes back anyway
            log.warning("outbox %s: cannot record the failure: %s", item.key, store_exc)

    async def check(self) -> tuple[bool, object]:
        """`/readyz` detail: depth, dead rows, failures; not ready when the loop died."""
        try:
            stats = await self.store.outbox_stats()
        except Exception as exc:
            return False, {"error": f"outbox unreadable: {exc}"}
        crashed = self._task is not None and self._task.done() and not self._stopping
        return not crashed, {
            "running": self.running, "pending": stats.get("pending", 0),
            "in_flight": stats.get("claimed", 0), "dead": stats.get("dead", 0),
            "delivered": self.delivered, "failures": self.failures,
            "last_error": self.last_error}
