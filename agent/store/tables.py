"""The agent's own tables: journaled calls, the durable outbox, applied operation keys and
the routing decision log. `Store` works on a `Database` or on a transaction handle of one
(`async with store.transaction() as tx:` gives a `Store` whose writes commit together).

The embedded CRM's records live in the same database (`crm.embedded`), so that a journal
plan applied to it commits with its outbox row."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from agent.core.model import CallRecord, Employee
from agent.store.db import Database
from agent.store.schema import DECISION_COLUMNS, migrate


def column(value: Any) -> Any:
    """A value as stored in a searchable column (times as UNIX seconds, booleans as 0/1)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool):
        return int(value)
    return value


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    attempts: int


DECISION_FIELDS = tuple(name for name, _type in DECISION_COLUMNS[:8])  # at via … error


def encode_rows(rows: Sequence[Sequence[Any]]) -> str:
    """A batch of decisions as one JSON array of arrays. Encoded on the event loop once a
    second, so with orjson (see bench/README.md); named tuples are encoded as arrays."""
    return orjson.dumps(rows, default=tuple).decode()


class Store:
    """Calls, outbox, applied keys, decisions; the schema of the whole database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rulesets: set[str] = set()  # rule set keys known to be in `rulesets`

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def migrate(self) -> int:
        return await migrate(self.db)

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        async with self.db.transaction() as tx:
            yield Store(tx)

    # -- calls -------------------------------------------------------------------------------

    async def save_call(self, call: CallRecord, *, contact_id: int | None = None,
                        lead_id: int | None = None) -> bool:
        """Insert or update a call by its id; True when it was new."""
        rows = await self.db.execute(
            "INSERT INTO calls (call_id, caller, started_at, contact_id, lead_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
            (call.call_id, call.caller, column(call.started_at), contact_id, lead_id,
             call.model_dump_json()))
        if rows:
            return True
        await self.db.execute(
            "UPDATE calls SET caller = ?, started_at = ?, data = ?, "
            "contact_id = COALESCE(?, contact_id), lead_id = COALESCE(?, lead_id) "
            "WHERE call_id = ?",
            (call.caller, column(call.started_at), call.model_dump_json(), contact_id,
             lead_id, call.call_id))
        return False

    async def lock_call(self, call_id: str) -> None:
        """Hold other writers of this call until the transaction ends, so that two sources
        accepting the same new call at once merge instead of overwriting each other. Needed on
        PostgreSQL (read committed: both would read "no such call"); SQLite runs one write
        transaction at a time already."""
        if self.dialect == "postgres":  # key space 4574: calls (4573 is the migrations' lock)
            await self.db.execute("SELECT pg_advisory_xact_lock(4574, hashtext(?))", (call_id,))

    async def get_call(self, call_id: str) -> CallRecord | None:
        rows = await self.db.fetch("SELECT data FROM calls WHERE call_id = ?", (call_id,))
        return CallRecord.model_validate_json(rows[0][0]) if rows else None

    async def list_calls(self, *, caller: str | None = None, limit: int = 100
                         ) -> list[dict[str, Any]]:
        where, args = (" WHERE caller = ?", [caller]) if caller else ("", [])
        rows = await self.db.fetch(
            f"SELECT data, contact_id, lead_id FROM calls{where} "
            "ORDER BY started_at DESC LIMIT ?", [*args, limit])
        return [{**json.loads(r[0]), "contact_id": r[1], "lead_id": r[2]} for r in rows]

    async def last_agent(self, caller: str) -> str | None:
        """Extension of the last employee who talked to this caller."""
        rows = await self.db.fetch(
            "SELECT data FROM calls WHERE caller = ? ORDER BY started_at DESC LIMIT 20",
            (caller,))
        for row in rows:
            answered_by = json.loads(row[0]).get("answered_by")
            if answered_by:
                return str(answered_by)
        return None

    # -- employees: the people behind the extensions (journal.yaml, API, CSV import) ----

    async def upsert_employee(self, employee: Employee) -> Employee:
        await self.db.execute(
            "INSERT INTO employees (extension, role, data) VALUES (?, ?, ?) ON CONFLICT "
            "(extension) DO UPDATE SET role = excluded.role, data = excluded.data",
            (employee.extension, employee.role.value, employee.model_dump_json()))
        return employee

    async def list_employees(self) -> list[Employee]:
        rows = await self.db.fetch("SELECT data FROM employees ORDER BY extension")
        return [Employee.model_validate_json(r[0]) for r in rows]

    # -- outbox ------------------------------------------------------------------------------

    async def enqueue(self, key: str, kind: str, payload: Mapping[str, Any]) -> bool:
        """Store an operation durably; False when that key was already accepted."""
        stamp = time.time()
        rows = await self.db.execute(
            "INSERT INTO outbox (key, kind, payload, status, attempts, next_at, created_at) "
            "VALUES (?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING id",
            (key, kind, json.dumps(payload, default=str), stamp, stamp))
        return bool(rows)

    async def claim(self, limit: int, *, lease_s: float = 60.0,
                    claimer: str = "") -> list[OutboxItem]:
        """Take due rows (and rows whose claim expired: the claimer died) for `lease_s`,
        in the name of `claimer` (the agent id)."""
        stamp = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgres" else ""
        rows = await self.db.execute(
            "UPDATE outbox SET status = 'claimed', next_at = ?, attempts = attempts + 1, "
            "claimed_by = ? "
            "WHERE id IN (SELECT id FROM outbox WHERE status IN ('pending', 'claimed') "
            f"AND next_at <= ? ORDER BY id LIMIT ?{lock}) "
            "RETURNING id, key, kind, payload, attempts",
            (stamp + lease_s, claimer, stamp, limit))
        items = [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]
        return sorted(items, key=lambda item: item.id)

    async def reclaim(self, claimer: str) -> int:
        """Make the rows `claimer` holds due now: at start, what it held when it died (an
        agent id names one running agent). Returns how many."""
        rows = await self.db.execute(
            "UPDATE outbox SET next_at = ? WHERE status = 'claimed' AND claimed_by = ? "
            "RETURNING id", (time.time(), claimer))
        return len(rows)

    async def complete(self, item_id: int) -> None:
        await self.db.execute("UPDATE outbox SET status = 'done', last_error = NULL "
                              "WHERE id = ?", (item_id,))

    async def retry(self, item_id: int, *, delay_s: float, error: str, dead: bool) -> None:
        await self.db.execute(
            "UPDATE outbox SET status = ?, next_at = ?, last_error = ? WHERE id = ?",
            ("dead" if dead else "pending", time.time() + delay_s, error[:500], item_id))

    async def outbox_stats(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    async def applied(self, key: str) -> str | None:
        rows = await self.db.fetch("SELECT result FROM applied WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    async def mark_applied(self, key: str, result: str) -> bool:
        """Record that `key` was applied; False when it already was (by anyone)."""
        rows = await self.db.execute(
            "INSERT INTO applied (key, result, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING "
            "RETURNING key", (key, result, time.time()))
        return bool(rows)

    # -- decision log ----------------------------------------------------------------------

    async def log_decisions(self, rows: Sequence[Sequence[Any]],
                            rulesets: Mapping[str, Sequence[str]], *, keep: int) -> None:
        """Append decision rows (`DECISION_FIELDS`, then the key of the rule set they were
        decided with and how many of its rules were tried) as one batch, record the rule
        names of each key not seen yet, and trim the log to the batches that hold the last
        `keep` decisions."""
        if not rows:
            return
        new = [(key, json.dumps(list(names)), time.time()) for key, names in rulesets.items()
               if key not in self._rulesets]
        async with self.db.transaction() as tx:
            if new:
                await tx.executemany("INSERT INTO rulesets (key, names, first_used) "
                                     "VALUES (?, ?, ?) ON CONFLICT DO NOTHING", new)
            await tx.execute(
                "INSERT INTO decision_batches (seq, first_at, last_at, count, rows)"
                " SELECT COALESCE(MAX(seq), 0) + ?, ?, ?, ?, ? FROM decision_batches",
                (len(rows), rows[0][0], rows[-1][0], len(rows), encode_rows(rows)))
            await tx.execute("DELETE FROM decision_batches"
                             " WHERE seq <= (SELECT MAX(seq) FROM decision_batches) - ?", (keep,))
        self._rulesets.update(key for key, _names, _at in new)

    async def recent_decisions(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` persisted decisions, newest first, with the verdict of each rule
        tried (`[name, matched]`)."""
        rows = await self.db.fetch(
            "SELECT d.at, d.via, d.caller, d.rule, d.destination, d.took_ms, d.lookup_ms,"
            " d.error, r.names, d.tried FROM decisions d"
            " LEFT JOIN rulesets r ON r.key = d.ruleset"
            " WHERE d.seq > (SELECT MAX(seq) FROM decision_batches) - ?"
            " ORDER BY d.batch DESC, d.n DESC LIMIT ?", (limit, limit))
        out = []
        for *fields, names, tried in rows:
            entry = dict(zip(DECISION_FIELDS, fields, strict=True))
            rule = entry["rule"]
            entry["trace"] = [[name, name == rule] for name in json.loads(names or "[]")[:tried]]
            out.append(entry)
        return out

