"""CSV import of contacts and employees (`crm-agent import contacts FILE.csv`).

Messy numbers are normalised; a row without a usable phone or e-mail is reported with
its line number and skipped, the good rows are kept. Re-importing the same file updates
the same contacts (key: the `external_id`/`id` column, else the first phone, else e-mail).
"""

from __future__ import annotations

import asyncio
import csv
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core import phones
from agent.core.model import Contact, Employee, Role
from agent.crm.embedded import ContactRow, EmbeddedCrm
from agent.store import Store

BATCH = 5000
ALIASES = {
    "first_name": ("first_name", "firstname", "prenom", "prénom", "first name"),
    "last_name": ("last_name", "lastname", "nom", "last name", "name"),
    "job_title": ("job_title", "title", "fonction", "job title"),
    "owner": ("owner", "manager", "responsible"),
    "organization": ("organization", "company", "organisation", "societe", "société",
                     "account"),
    "external_id": ("external_id", "id", "crm_id"),
}
PHONE_COLUMNS = ("phone", "phones", "mobile", "telephone", "téléphone", "tel", "tel_mobile",
                 "tel_fixe", "work_phone", "home_phone")
EMAIL_COLUMNS = ("email", "emails", "e-mail", "mail")


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.created + self.updated


@dataclass(frozen=True)
class Columns:
    """Which CSV column holds what, worked out once from the header row."""

    single: dict[str, int]
    phones: tuple[int, ...]
    emails: tuple[int, ...]
    extra: tuple[tuple[str, int], ...]
    named: tuple[tuple[str, int], ...]

    @classmethod
    def from_header(cls, header: list[str]) -> Columns:
        names = [(h or "").strip().lower() for h in header]
        single: dict[str, int] = {}
        for role, aliases in ALIASES.items():
            found = [names.index(a) for a in aliases if a in names]
            if found:
                single[role] = found[0]
        known = {c for aliases in ALIASES.values() for c in aliases}
        known |= set(PHONE_COLUMNS) | set(EMAIL_COLUMNS)
        return cls(single, tuple(i for i, n in enumerate(names) if n in PHONE_COLUMNS),
                   tuple(i for i, n in enumerate(names) if n in EMAIL_COLUMNS),
                    tuple((n, i) for i, n in enumerate(names) if n and n not in known),
                    tuple((n, i) for i, n in enumerate(names) if n))

    def get(self, row: list[str], role: str) -> str:
        index = self.single.get(role)
        return row[index].strip() if index is not None and index < len(row) else ""


def split(value: str) -> list[str]:
    if not any(sep in value for sep in ",;|"):
        return [value.strip()] if value.strip() else []
    return [p.strip() for p in value.replace(",", ";").replace("|", ";").split(";") if p.strip()]


def cells(row: list[str], indexes: tuple[int, ...]) -> list[str]:
    return [part for i in indexes if i < len(row) for part in split(row[i])]




def parse_row(row: list[str], columns: Columns, region: str) -> ContactRow:
    """The row as a contact ready to store, or ValueError saying what is wrong with it."""
    raw_phones = cells(row, columns.phones)
    numbers = list(dict.fromkeys(n for n in (phones.normalize(p, region) for p in raw_phones)
                                 if n))
    emails = [e for e in cells(row, columns.emails) if "@" in e]
    if raw_phones and not numbers and not emails:
        raise ValueError(f"no valid phone number in {', '.join(map(repr, raw_phones))}")
    if not numbers and not emails:
        raise ValueError("no phone number or e-mail")
    extra = {name: row[i] for name, i in columns.extra if i < len(row) and row[i]}
    contact = Contact(first_name=columns.get(row, "first_name"),
                      last_name=columns.get(row, "last_name"),
                      job_title=columns.get(row, "job_title"),
                      owner=columns.get(row, "owner") or None,
                      phones=numbers, emails=emails, fields=extra)
    key = columns.get(row, "external_id")
    key = f"ext:{key}" if key else (f"tel:{numbers[0]}" if numbers else f"mail:{emails[0]}")
    return ContactRow.of(key, contact, columns.get(row, "organization") or None)


Chunk = list[tuple[int, list[str]]]


def parse_chunk(chunk: Chunk, columns: Columns, region: str
                ) -> tuple[list[ContactRow], list[tuple[int, str]]]:
    """Parse rows in a worker process: (good rows, (line, problem) of the bad ones)."""
    good: list[ContactRow] = []
    bad: list[tuple[int, str]] = []
    for line, row in chunk:
        try:
            good.append(parse_row(row, columns, region))
        except ValueError as exc:
            bad.append((line, str(exc)))
    return good, bad


def read_rows(path: Path) -> Iterator[tuple[int, list[str], Columns]]:
    """(line number, cells, columns) for every data row; the delimiter is sniffed."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(handle, dialect=dialect)
        header = next(reader, [])
        columns = Columns.from_header(header)
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row, columns


def chunks(path: Path) -> Iterator[tuple[Chunk, Columns]]:
    chunk: Chunk = []
    columns: Columns | None = None
    for line, row, columns in read_rows(path):
        chunk.append((line, row))
        if len(chunk) >= BATCH:
            yield chunk, columns
            chunk = []
    if chunk and columns is not None:
        yield chunk, columns


async def import_contacts(crm: EmbeddedCrm, path: Path, region: str,
                          progress: Callable[[int], None] = lambda n: None,
                          workers: int | None = None) -> ImportReport:
    """Parse in worker processes (phone parsing is the costly part), write in order.

    Reading the file runs in a thread; at most `workers + 1` chunks are in flight.
    """
    report = ImportReport()
    loop = asyncio.get_running_loop()
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reader = chunks(path)
        pending: deque[asyncio.Future[tuple[list[ContactRow], list[tuple[int, str]]]]] = deque()
        while True:
            while len(pending) <= workers:
                item = await asyncio.to_thread(next, reader, None)
                if item is None:
                    break
                pending.append(loop.run_in_executor(pool, parse_chunk, item[0], item[1],
                                                    region))
            if not pending:
                return report
            good, bad = await pending.popleft()
            report.errors.extend(bad)
            await _write(crm, good, report)
            progress(len(good) + len(bad))


async def _write(crm: EmbeddedCrm, rows: list[ContactRow], report: ImportReport) -> None:
    if not rows:
        return
    created, updated = await crm.upsert_contacts(rows)
    report.created += created
    report.updated += updated


async def import_employees(store: Store, path: Path) -> ImportReport:
    """Employees CSV: extension, name, role (manager|senior|top), optional email."""
    report = ImportReport()
    for line, row, columns in read_rows(path):
        values = {name: row[i].strip() for name, i in columns.named if i < len(row)}
        try:
            if not values.get("extension"):
                raise ValueError("extension is empty")
            employee = Employee(extension=values["extension"], name=values.get("name", ""),
                                role=Role(values.get("role") or "manager"),
                                email=values.get("email") or None)
        except ValueError as exc:
            report.errors.append((line, str(exc).splitlines()[0]))
            continue
        await store.upsert_employee(employee)
        report.created += 1
    return report
