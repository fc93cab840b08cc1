"""The event-delivery package stays below the runs layer: it never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import lace_engine.events

RUNS_LAYER = {"lace_engine.orchestrator", "lace_engine.jobs", "lace_engine.llm_limit"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, `from package import name` counted as package.name too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_event_modules_never_import_the_runs_layer() -> None:
    package = Path(lace_engine.events.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) > 1
    for path in files:
        imported = imported_modules(path)
        bad = {m for m in imported if any(m == r or m.startswith(f"{r}.") for r in RUNS_LAYER)}
        assert not bad, f"{path.name} imports the runs layer: {sorted(bad)}"
