"""The embedded CRM, the default backend of the port: records, caller lookup and bulk import
in the agent's own database (SQLite or PostgreSQL), next to the agent's tables.

`EmbeddedCrm` works on a `Database` or on a transaction handle of one: `joined(tx)` puts its
writes in the agent's transaction (a journal plan commits with its outbox row).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from agent.core.model import (
    CallerRecords,
    CallRecord,
    Contact,
    Deal,
    Lead,
    Organization,
    Task,
)
from agent.crm.port import CallActivity, NotFound
from agent.store.db import Database
from agent.store.tables import Store, column

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Table:
    name: str
    model: type[BaseModel]
    columns: tuple[str, ...]


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("organizations", Organization, ("name", "owner", "created_at")),
        Table("contacts", Contact, ("owner", "organization_id", "created_at", "updated_at")),
        Table("leads", Lead, ("contact_id", "organization_id", "status", "owner", "created_at",
                              "updated_at")),
        Table("deals", Deal, ("contact_id", "organization_id", "is_open", "owner", "created_at",
                              "closed_at")),
        Table("tasks", Task, ("assignee", "status", "due_at", "lead_id", "call_id",
                              "created_at")),
    )
}
TABLE_OF: dict[type[BaseModel], Table] = {t.model: t for t in TABLES.values()}
FILTERS: dict[str, frozenset[str]] = {
    name: frozenset((*t.columns, "id")) for name, t in TABLES.items()
}


def now_utc() -> datetime:
    return datetime.now(UTC)


def coerce(name: str, value: Any) -> Any:
    """Query-string filter values arrive as text; numeric columns need numbers."""
    numeric = name == "id" or name == "is_open" or (name.endswith("_id") and name != "call_id")
    if numeric and isinstance(value, str):
        try:
            number = int(value) if len(value) <= 24 else None
        except ValueError:
            number = None
        if number is None or not -(2**63) <= number < 2**63:  # what both engines store
            raise ValueError(f"{name} must be a 64-bit integer")
        return number
    if name == "is_open" and isinstance(value, bool):
        return int(value)
    return column(value)


def encode(record: BaseModel) -> str:
    return record.model_dump_json()


def decode(model: type[R], data: str) -> R:
    """Records keep their id inside `data` too, so decoding is one pydantic JSON parse."""
    return model.model_validate_json(data)


LEADS = TypeAdapter(list[Lead])
DEALS = TypeAdapter(list[Deal])
_CALLER_SQL = """
SELECT c.data, o.data,
  (SELECT {agg_leads} FROM leads l WHERE l.contact_id = c.id),
  (SELECT {agg_deals} FROM deals d WHERE d.contact_id = c.id
     OR (c.organization_id IS NOT NULL AND d.organization_id = c.organization_id))
FROM contact_phones p JOIN contacts c ON c.id = p.contact_id
LEFT JOIN organizations o ON o.id = c.organization_id
WHERE p.e164 = ? ORDER BY c.id"""
CALLER_SQL = {
    "sqlite": _CALLER_SQL.format(agg_leads="json_group_array(json(l.data))",
                                 agg_deals="json_group_array(json(d.data))"),
    "postgres": _CALLER_SQL.format(agg_leads="json_agg(l.data::json)::text",
                                   agg_deals="json_agg(d.data::json)::text"),
}


@dataclass(frozen=True, slots=True)
class ContactRow:
    """A contact ready for bulk import: its JSON is made (and validated) by the caller,
    possibly in another process; ids, organization and times are filled in at write time."""

    key: str
    data: str
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    owner: str | None
    organization: str | None

    @classmethod
    def of(cls, key: str, contact: Contact, organization: str | None = None) -> ContactRow:
        blank = contact.model_copy(update={"id": None, "organization_id": None,
                                           "created_at": None, "updated_at": None})
        return cls(key, blank.model_dump_json(), tuple(dict.fromkeys(contact.phones)),
                   tuple(dict.fromkeys(e.lower() for e in contact.emails)), contact.owner,
                   organization)

    def complete(self, row_id: int, org_id: int | None, created: datetime,
                 updated: datetime) -> str:
        org = "null" if org_id is None else str(org_id)
        return (self.data.replace('"id":null', f'"id":{row_id}', 1)
                .replace('"organization_id":null', f'"organization_id":{org}', 1)
                .replace('"created_at":null', f'"created_at":"{iso(created)}"', 1)
                .replace('"updated_at":null', f'"updated_at":"{iso(updated)}"', 1))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class EmbeddedCrm:
    """The `Crm` port on the agent's database (schema: `store/schema.py`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def joined(self, tx: Store) -> EmbeddedCrm:
        return EmbeddedCrm(tx.db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EmbeddedCrm]:
        async with self.db.transaction() as tx:
            yield EmbeddedCrm(tx)

    # -- records -------------------------------------------------------------------------

    async def create(self, record: R) -> R:
        table = TABLE_OF[type(record)]
        stamp = now_utc()
        record = self._stamped(record, stamp, created=True)
        cols = ["id", *table.columns, "data"]
        sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
               f"({', '.join('?' * len(cols))})")
        async with self.transaction() as tx:
            (record_id,) = await tx._allocate_ids(table.name, 1)
            record = record.model_copy(update={"id": record_id})
            values = [record_id, *(column(getattr(record, c)) for c in table.columns),
                      encode(record)]
            await tx.db.execute(sql, values)
            if isinstance(record, Contact):
                await tx._index_contact(record)
        return record

    async def _save(self, record: R) -> R:
        """Write back a record that has an id (full replace of its data)."""
        table = TABLE_OF[type(record)]
        record_id = getattr(record, "id", None)
        if record_id is None:
            raise NotFound(f"{table.name}: record has no id")
        record = self._stamped(record, now_utc(), created=False)
        sets = ", ".join(f"{c} = ?" for c in (*table.columns, "data"))
        values = [column(getattr(record, c)) for c in table.columns]
        async with self.transaction() as tx:
            rows = await tx.db.execute(
                f"UPDATE {table.name} SET {sets} WHERE id = ? RETURNING id",
                [*values, encode(record), record_id])
            if not rows:
                raise NotFound(f"{table.name} {record_id} not found")
            if isinstance(record, Contact):
                await tx._index_contact(record)
        return record

    async def update(self, model: type[R], record_id: int, changes: Mapping[str, Any]) -> R:
        """Merge `changes` into a record (`fields` is merged key by key) and save it."""
        current = await self.get(model, record_id)
        merged = current.model_dump()
        for key, value in changes.items():
            if key == "fields" and isinstance(value, Mapping):
                merged["fields"] = {**merged.get("fields", {}), **value}
            else:
                merged[key] = value
        return await self._save(model.model_validate(merged))

    async def get(self, model: type[R], record_id: int) -> R:
        table = TABLE_OF[model]
        rows = await self.db.fetch(f"SELECT id, data FROM {table.name} WHERE id = ?",
                                   (record_id,))
        if not rows:
            raise NotFound(f"{table.name.rstrip('s')} {record_id} not found")
        return decode(model, rows[0][1])

    async def select(self, model: type[R], filters: Mapping[str, Any] | None = None, *,
                     limit: int = 100, offset: int = 0) -> list[R]:
        table = TABLE_OF[model]
        where, args = self._where(table, filters or {})
        rows = await self.db.fetch(
            f"SELECT id, data FROM {table.name}{where} ORDER BY id LIMIT ? OFFSET ?",
            [*args, limit, offset])
        return [decode(model, r[1]) for r in rows]

    @staticmethod
    def _where(table: Table, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        unknown = set(filters) - FILTERS[table.name]
        if unknown:
            raise ValueError(f"cannot filter {table.name} by {', '.join(sorted(unknown))}")
        if not filters:
            return "", []
        clause = " AND ".join(f"{k} = ?" for k in filters)
        return f" WHERE {clause}", [coerce(k, v) for k, v in filters.items()]

    @staticmethod
    def _stamped(record: R, stamp: datetime, *, created: bool) -> R:
        update: dict[str, Any] = {}
        if created and "created_at" in type(record).model_fields and not getattr(
                record, "created_at", None):
            update["created_at"] = stamp
        if "updated_at" in type(record).model_fields:
            update["updated_at"] = stamp
        return record.model_copy(update=update) if update else record

    async def _index_contact(self, contact: Contact) -> None:
        await self.db.execute("DELETE FROM contact_phones WHERE contact_id = ?", (contact.id,))
        await self.db.execute("DELETE FROM contact_emails WHERE contact_id = ?", (contact.id,))
        await self.db.executemany(
            "INSERT INTO contact_phones (e164, contact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(p, contact.id) for p in dict.fromkeys(contact.phones)])
        await self.db.executemany(
            "INSERT INTO contact_emails (email, contact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(e.lower(), contact.id) for e in dict.fromkeys(contact.emails)])

    async def upsert_contacts(self, rows: Sequence[ContactRow]) -> tuple[int, int]:
        """Bulk import keyed by an external key, with organizations found or created by name.

        Returns (created, updated); the whole batch is one transaction.
        """
        stamp = now_utc()
        latest = {row.key: row for row in rows}
        async with self.transaction() as tx:
            orgs = await tx._organizations_named({r.organization for r in rows if r.organization})
            existing = await tx._existing_keys(list(latest))
            fresh = [key for key in latest if key not in existing]
            ids = dict(zip(fresh, await tx._allocate_ids("contacts", len(fresh)), strict=True))
            inserts, updates, phones, emails = [], [], [], []
            for key, row in latest.items():
                row_id, created = existing.get(key) or (ids[key], stamp.timestamp())
                org_id = orgs[row.organization] if row.organization else None
                data = row.complete(row_id, org_id, datetime.fromtimestamp(created, UTC), stamp)
                values = [row.owner, org_id, created, stamp.timestamp(), data]
                if key in existing:
                    updates.append([*values, row_id])
                else:
                    inserts.append([row_id, key, *values])
                phones += [(p, row_id) for p in row.phones]
                emails += [(e, row_id) for e in row.emails]
            await tx._write_contact_rows(inserts, updates, phones, emails)
        return len(inserts), len(updates)

    async def _existing_keys(self, keys: list[str]) -> dict[str, tuple[int, float]]:
        existing: dict[str, tuple[int, float]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = await self.db.fetch(f"SELECT ext_key, id, created_at FROM contacts WHERE "
                                       f"ext_key IN ({', '.join('?' * len(chunk))})", chunk)
            existing.update({r[0]: (r[1], r[2]) for r in rows})
        return existing

    async def _write_contact_rows(self, inserts: list[list[Any]], updates: list[list[Any]],
                                  phones: list[tuple[str, int]],
                                  emails: list[tuple[str, int]]) -> None:
        cols = "owner, organization_id, created_at, updated_at, data"
        await self.db.executemany(f"INSERT INTO contacts (id, ext_key, {cols}) VALUES "
                                  "(?, ?, ?, ?, ?, ?, ?)", inserts)
        await self.db.executemany("UPDATE contacts SET owner = ?, organization_id = ?, "
                                  "created_at = ?, updated_at = ?, data = ? WHERE id = ?",
                                  updates)
        for index in ("contact_phones", "contact_emails"):
            await self.db.executemany(f"DELETE FROM {index} WHERE contact_id = ?",
                                      [(u[-1],) for u in updates])
        await self.db.executemany("INSERT INTO contact_phones (e164, contact_id) VALUES (?, ?)"
                                  " ON CONFLICT DO NOTHING", phones)
        await self.db.executemany("INSERT INTO contact_emails (email, contact_id) VALUES (?, ?)"
                                  " ON CONFLICT DO NOTHING", emails)

    async def _allocate_ids(self, table: str, count: int) -> list[int]:
        if count == 0:
            return []
        if self.dialect == "postgres":
            rows = await self.db.fetch(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                "FROM generate_series(1, ?)", (count,))
            return [r[0] for r in rows]
        rows = await self.db.fetch(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
        return list(range(rows[0][0] + 1, rows[0][0] + 1 + count))

    async def _organizations_named(self, names: set[str]) -> dict[str, int]:
        """Ids of the organizations with these names, creating the missing ones."""
        found: dict[str, int] = {}
        wanted = sorted(names)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = await self.db.fetch(f"SELECT name, MIN(id) FROM organizations WHERE name IN "
                                       f"({', '.join('?' * len(chunk))}) GROUP BY name", chunk)
            found.update({r[0]: r[1] for r in rows})
        missing = [n for n in wanted if n not in found]
        ids = await self._allocate_ids("organizations", len(missing))
        stamp = now_utc()
        rows_new = []
        for name, org_id in zip(missing, ids, strict=True):
            org = Organization(id=org_id, name=name, created_at=stamp)
            rows_new.append((org_id, name, None, column(stamp), encode(org)))
            found[name] = org_id
        await self.db.executemany("INSERT INTO organizations (id, name, owner, created_at, data)"
                                  " VALUES (?, ?, ?, ?, ?)", rows_new)
        return found

    async def find_contacts(self, *, phone: str | None = None,
                            email: str | None = None) -> list[Contact]:
        queries = []
        if phone:
            queries.append(("SELECT c.id, c.data FROM contact_phones p JOIN contacts c "
                            "ON c.id = p.contact_id WHERE p.e164 = ?", (phone,)))
        if email:
            queries.append(("SELECT c.id, c.data FROM contact_emails e JOIN contacts c "
                            "ON c.id = e.contact_id WHERE e.email = ?", (email.lower(),)))
        found: dict[int, Contact] = {}
        for rows in await self.db.fetch_many(queries):
            for row in rows:
                found.setdefault(row[0], decode(Contact, row[1]))
        return list(found.values())

    async def find_caller(self, e164: str) -> CallerRecords:
        """Everything known about a number, in ONE indexed query (contact_phones by E.164):
        each matching contact with its organization, its leads and its own or its
        organization's deals, aggregated as JSON arrays by the engine."""
        rows = await self.db.fetch(CALLER_SQL[self.dialect], (e164,))
        records = CallerRecords()
        seen: set[int] = set()
        for contact, org, leads, deals in rows:
            records.contacts.append(decode(Contact, contact))
            if org is not None:
                organization = decode(Organization, org)
                records.organizations[organization.id or 0] = organization
            records.leads.extend(LEADS.validate_json(leads or "[]"))
            for deal in DEALS.validate_json(deals or "[]"):
                if deal.id not in seen:
                    seen.add(deal.id or 0)
                    records.deals.append(deal)
        records.leads.sort(key=lambda lead: lead.id or 0)
        records.deals.sort(key=lambda deal: deal.id or 0)
        return records

    async def log_call(self, call: CallRecord, activity: CallActivity) -> int | None:
        """The call itself is the agent's `calls` row (linked to contact and lead by the
        journal); a call on a deal is also kept as a completed task on the deal, so that it
        shows in the deal's history."""
        assignee = activity.owner or call.answered_by or call.placed_by
        if activity.deal_id is None or not assignee:
            return None
        task = await self.create(Task(
            assignee=assignee, title=f"Call logged: {activity.summary}", status="done",
            due_at=call.ended_at, deal_id=activity.deal_id, call_id=call.call_id,
            contact_id=activity.contact_id, recording_url=activity.recording_url))
        return task.id
