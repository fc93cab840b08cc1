"""The layers of lace_engine, checked from its imports (docs/engine.md draws them).

pipeline/ is pure and imports no other layer, nor anything that starts processes or does I/O;
export/ (the pandoc and Typst subprocesses) builds on pipeline/ alone; storage/ and events/ never
import runs/; only storage/ and events/ speak SQL; nothing in the engine imports gRPC (the server's job).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "lace_engine"
SHARED = {"lace_engine", "lace_engine.domain", "lace_engine.errors", "lace_engine.ids", "lace_engine.tokens",
          "lace_engine.tenancy"}
SQL = ("sqlalchemy", "psycopg", "psycopg_pool", "alembic")
# What a pure module never imports: processes, files, sockets, the event loop, the renderers.
IO = ("os", "sys", "subprocess", "asyncio", "socket", "shutil", "tempfile", "pathlib", "pypandoc", "typst")


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from lace_engine.pipeline import apply` imports the module lace_engine.pipeline.apply.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imports(p) for p in sorted(ENGINE.rglob("*.py"))}


def layer(module: str) -> str:
    """The subpackage a module is in (pipeline, runs, storage, events, llm), or "top"."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and (ENGINE / parts[1]).is_dir() else "top"


def engine_imports(module: str) -> set[str]:
    return {m for m in MODULES[module] if m.startswith("lace_engine.") and m in MODULES}


def test_the_layout_is_the_one_checked_here() -> None:
    layers = {layer(m) for m in MODULES}
    assert {"pipeline", "runs", "storage", "events", "llm", "export"} <= layers, layers


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "pipeline"))
def test_the_pipeline_is_pure(module: str) -> None:
    outside = {m for m in engine_imports(module) if layer(m) not in ("pipeline", "top") or
               (layer(m) == "top" and m not in SHARED)}
    assert not outside, f"{module} imports {sorted(outside)}"
    assert not {m for m in MODULES[module] if m.split(".")[0] in (*SQL, *IO, "nats", "openai", "grpc", "httpx")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "export"))
def test_export_builds_on_the_pipeline_only(module: str) -> None:
    outside = {m for m in engine_imports(module) if layer(m) not in ("pipeline", "export", "top") or
               (layer(m) == "top" and m not in SHARED)}
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in ("storage", "events")))
def test_storage_and_events_never_import_runs(module: str) -> None:
    above = {m for m in engine_imports(module) if layer(m) == "runs" or m in ("lace_engine.service",
                                                                              "lace_engine.cluster")}
    assert not above, f"{module} imports {sorted(above)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_storage_and_events_speak_sql(module: str) -> None:
    drivers = {m for m in MODULES[module] if m.split(".")[0] in SQL}
    if layer(module) not in ("storage", "events"):
        assert not drivers, f"{module} imports {sorted(drivers)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_engine_never_imports_grpc(module: str) -> None:
    assert not {m for m in MODULES[module] if m.split(".")[0] in ("grpc", "grpc_status", "google")}
