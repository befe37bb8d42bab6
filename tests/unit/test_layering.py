"""The dependency direction (docs/design.md): no module loads a network library or a
database driver except the adapters named here, so a new module is checked as it lands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "agent"
NETWORK = ("aiohttp", "panoramisk", "asyncpg", "sqlite3")
ADAPTERS = {
    "agent.__main__", "agent.app", "agent.services", "agent.commands",  # wiring, CLI commands
    "agent.http", "agent.ops.http", "agent.store.sqlite", "agent.store.postgres",
    "agent.store.broadcast", "agent.routing.http", "agent.routing.wire", "agent.journal.http",
    "agent.journal.wire", "agent.journal.ami", "agent.leads.http", "agent.leads.wire",
    "agent.crm.http",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_adapter(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ADAPTERS)


PURE = sorted(name for name in map(module_name, PACKAGE.rglob("*.py")) if not is_adapter(name))


def test_the_core_is_most_of_the_package() -> None:
    assert {"agent.core.rules.engine", "agent.routing.service", "agent.journal.matrix",
            "agent.leads.scoring", "agent.pbx.agi.protocol"} <= set(PURE)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_network_library(module: str) -> None:
    code = (f"import sys\nimport {module}\n"
            f"print(','.join(m for m in {NETWORK!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} loads {result.stdout.strip()}"
