"""The domain core must not import network libraries (docs/design.md: dependency direction)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = ["agent.model", "agent.phones", "agent.rules", "agent.routing", "agent.decisions",
        "agent.rules.reload", "agent.journal", "agent.calljournal", "agent.outbox",
        "agent.association", "agent.calltrack", "agent.callstate", "agent.intake",
        "agent.dispositions", "agent.scoring", "agent.workflows", "agent.workflow_runner",
        "agent.agi.protocol", "agent.intake_records"]
NETWORK = ("aiohttp", "panoramisk", "asyncpg", "sqlite3")


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_network_library(module: str) -> None:
    code = (f"import importlib.util, sys\n"
            f"if importlib.util.find_spec({module!r}) is None: sys.exit(3)\n"
            f"import {module}\n"
            f"print(','.join(m for m in {NETWORK!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    if result.returncode == 3:
        pytest.skip(f"{module} does not exist yet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
