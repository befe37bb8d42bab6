"""No import cycles between the agent's modules (issue #13): every `import` counts, those
inside functions too, except the ones under `if TYPE_CHECKING:` (annotations only)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "agent"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes that sit under `if TYPE_CHECKING:`."""
    return {id(node) for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body for node in ast.walk(stmt)}


def imported(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*head, *([node.module] if node.module else [])])
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                         for a in node.names)
    return {m for m in found if m in MODULES and m != name}


def test_the_graph_is_read() -> None:
    assert imported("agent.app", MODULES["agent.app"]) >= {"agent.config", "agent.store"}


def test_no_module_imports_itself_back() -> None:
    graph = {name: imported(name, path) for name, path in MODULES.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


BUILDS_THE_CRM = {"agent.services", "agent.commands", "agent.crm.importer"}


def test_use_cases_reach_the_crm_only_through_the_port() -> None:
    """Routing, the journal, leads and the HTTP adapters know `agent.crm.port`, never a
    backend: only the start-up (and the embedded CRM's own CSV importer) picks one."""
    knowing = {name for name, path in MODULES.items()
               if "agent.crm.embedded" in imported(name, path)}
    assert knowing == BUILDS_THE_CRM
