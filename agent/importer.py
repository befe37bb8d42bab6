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


def pick(row: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name)
        if value:
            return value.strip()
    return ""


def split(value: str) -> list[str]:
    return [p.strip() for p in value.replace(",", ";").replace("|", ";").split(";") if p.strip()]


def parse_row(row: dict[str, str], region: str) -> tuple[str, Contact, str | None]:
    """(key, contact, organization name) or ValueError saying what is wrong."""
    row = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
    raw_phones = [p for col in PHONE_COLUMNS for p in split(row.get(col, ""))]
    numbers = [n for n in (phones.normalize(p, region) for p in raw_phones) if n]
    emails = [e for col in EMAIL_COLUMNS for e in split(row.get(col, "")) if "@" in e]
    if raw_phones and not numbers and not emails:
        raise ValueError(f"no valid phone number in {', '.join(map(repr, raw_phones))}")
    if not numbers and not emails:
        raise ValueError("no phone number or e-mail")
    known = {c for names in ALIASES.values() for c in names} | set(PHONE_COLUMNS) | set(
        EMAIL_COLUMNS)
    extra: dict[str, Any] = {k: v for k, v in row.items() if k not in known and v}
    contact = Contact(first_name=pick(row, ALIASES["first_name"]),
                      last_name=pick(row, ALIASES["last_name"]),
                      job_title=pick(row, ALIASES["job_title"]),
                      owner=pick(row, ALIASES["owner"]) or None,
                      phones=list(dict.fromkeys(numbers)), emails=emails, fields=extra)
    key = pick(row, ALIASES["external_id"])
    key = f"ext:{key}" if key else (f"tel:{numbers[0]}" if numbers else f"mail:{emails[0]}")
    return key, contact, pick(row, ALIASES["organization"]) or None


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(handle, dialect=dialect)
        for row in reader:
            yield reader.line_num, row


async def import_contacts(store: Store, path: Path, region: str,
                          progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    report = ImportReport()
    batch: list[tuple[str, Contact]] = []
    organizations: dict[str, int] = {}
    for line, row in read_rows(path):
        try:
            key, contact, org_name = parse_row(row, region)
        except ValueError as exc:
            report.errors.append((line, str(exc)))
            progress(1)
            continue
        if org_name:
            if org_name not in organizations:
                organizations[org_name] = (await store.organization_named(org_name)).id or 0
            contact.organization_id = organizations[org_name]
        batch.append((key, contact))
        if len(batch) >= BATCH:
            await _flush(store, batch, report, progress)
    await _flush(store, batch, report, progress)
    return report


async def _flush(store: Store, batch: list[tuple[str, Contact]], report: ImportReport,
                 progress: Callable[[int], None]) -> None:
    if not batch:
        return
    created, updated = await store.upsert_contacts(batch)
    report.created += created
    report.updated += updated
    progress(len(batch))
    batch.clear()


async def import_employees(store: Store, path: Path) -> ImportReport:
    report = ImportReport()
    for line, row in read_rows(path):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        try:
            employee = Employee(extension=row.get("extension", ""), name=row.get("name", ""),
                                role=Role(row.get("role") or "manager"),
                                email=row.get("email") or None)
            if not employee.extension:
                raise ValueError("extension is empty")
        except ValueError as exc:
            report.errors.append((line, str(exc).splitlines()[0]))
            continue
        await store.upsert_employee(employee)
        report.created += 1
    return report
