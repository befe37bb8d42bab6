"""The FastAGI server and its sessions meet through `agent.pbx.agi.host` and public methods
only: no module of the package reads a private member (`x._name`) of anything but itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGI = Path(__file__).parents[2] / "agent" / "pbx" / "agi"


def private_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not (node.attr.startswith("__") and node.attr.endswith("__"))
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_package_is_checked() -> None:
    assert {"host.py", "server.py", "session.py"} <= {path.name for path in AGI.glob("*.py")}


@pytest.mark.parametrize("module", sorted(path.name for path in AGI.glob("*.py")))
def test_no_private_member_crosses_the_boundary(module: str) -> None:
    assert private_reads(AGI / module) == []


def test_the_check_sees_a_private_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(session, server):\n    session._abort()\n    self._ok = 1\n"
                      "    server.__limits\n    type(server).__name__\n")
    assert sorted(private_reads(sample)) == ["sample.py:2: session._abort",
                                             "sample.py:4: server.__limits"]
