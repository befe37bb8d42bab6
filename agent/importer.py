"""CSV import of contacts and employees (`crm-agent import contacts FILE.csv`).

Messy numbers are normalised; a row without a usable phone or e-mail is reported with
its line number and skipped, the good rows are kept. Re-importing the same file updates
the same contacts (key: the `external_id`/`id` column, else the first phone, else e-mail).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import phones
from agent.model import Contact, Employee, Role
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


def parse_row(row: list[str], columns: Columns, region: str) -> tuple[str, Contact, str | None]:
    """(key, contact, organization name), or ValueError saying what is wrong with the row."""
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
    return key, contact, columns.get(row, "organization") or None


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


async def import_contacts(store: Store, path: Path, region: str,
                          progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    report = ImportReport()
    batch: list[tuple[str, Contact, str | None]] = []
    for line, row, columns in read_rows(path):
        try:
            batch.append(parse_row(row, columns, region))
        except ValueError as exc:
            report.errors.append((line, str(exc)))
            progress(1)
            continue
        if len(batch) >= BATCH:
            await _flush(store, batch, report, progress)
    await _flush(store, batch, report, progress)
    return report


async def _flush(store: Store, batch: list[tuple[str, Contact, str | None]],
                 report: ImportReport, progress: Callable[[int], None]) -> None:
    if not batch:
        return
    created, updated = await store.upsert_contacts(batch)
    report.created += created
    report.updated += updated
    progress(len(batch))
    batch.clear()


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
