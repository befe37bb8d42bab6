"""`crm-agent import` as a user runs it: a real process, a real CSV, a real SQLite file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from agent.crm.embedded import EmbeddedCrm
from agent.store import open_store

CSV = """first_name;last_name;Company;phone;email;job_title;segment
Jean;Dupont;ACME;06 12 34 56 78;jean@acme.fr;CEO;gold
Marie;Curie;ACME;+33 (0)6 98 76 54 32;;;
Bad;Row;;12;;;
Only;Mail;;;only@mail.fr;;
Paul;Martin;Globex;0033611223344, 01 40 00 00 00;;;silver
No;Contact;;;;;
"""


def run_import(tmp_path: Path, kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    env_config = tmp_path / "agent.yaml"
    env_config.write_text(f"store: {{url: 'sqlite:///{tmp_path / 'crm.db'}'}}\n")
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(env_config), "import", kind, str(path),
         "--no-progress"], capture_output=True, text=True, timeout=60, check=False)


def lookup(tmp_path: Path, phone: str) -> list[str]:
    async def run() -> list[str]:
        store = await open_store(f"sqlite:///{tmp_path / 'crm.db'}")
        try:
            found = await EmbeddedCrm(store.db).find_caller(phone)
            return [f"{c.first_name} {c.fields.get('segment', '')}".strip()
                    for c in found.contacts] + [o.name for o in found.organizations.values()]
        finally:
            await store.close()

    return asyncio.run(run())


def test_import_keeps_good_rows_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CSV, encoding="utf-8")
    result = run_import(tmp_path, "contacts", path)
    assert result.returncode == 1, result.stderr
    assert "4 created, 0 updated, 2 rejected" in result.stdout
    assert f"{path}:4: skipped: no valid phone number in '12'" in result.stderr
    assert f"{path}:7: skipped: no phone number or e-mail" in result.stderr
    assert lookup(tmp_path, "+33612345678") == ["Jean gold", "ACME"]
    assert lookup(tmp_path, "+33140000000") == ["Paul silver", "Globex"]


def test_reimport_updates_instead_of_duplicating(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(CSV, encoding="utf-8")
    run_import(tmp_path, "contacts", path)
    path.write_text(CSV.replace("gold", "platinum"), encoding="utf-8")
    result = run_import(tmp_path, "contacts", path)
    assert "0 created, 4 updated" in result.stdout
    assert lookup(tmp_path, "+33612345678") == ["Jean platinum", "ACME"]


def test_import_employees(tmp_path: Path) -> None:
    path = tmp_path / "employees.csv"
    path.write_text("extension,name,role\n201,Alice,manager\n203,Carol,senior\n,Nobody,top\n"
                    "205,Eve,boss\n")
    result = run_import(tmp_path, "employees", path)
    assert "2 created" in result.stdout
    assert f"{path}:4: skipped: extension is empty" in result.stderr
    assert f"{path}:5: skipped:" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_import(tmp_path, "contacts", tmp_path / "nope.csv")
    assert result.returncode == 2
    assert "nope.csv: no such file" in result.stderr
