"""The modules of ``streams/`` import each other without a circle, counting imports made inside
functions too (a function-level import is how a circle hides)."""

from __future__ import annotations

import ast
from pathlib import Path

STREAMS = Path(__file__).resolve().parents[2] / "streams"


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "streams":
                found |= {f"streams.{alias.name}" for alias in node.names}
            elif node.module.startswith("streams."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("streams.")}
    return found


def test_streams_has_no_import_circle() -> None:
    graph = {
        f"streams.{path.stem}": imports_of(path)
        for path in STREAMS.glob("*.py")
        if path.stem != "__init__"
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path[path.index(module) :], module])
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert graph["streams.audit"] >= {"streams.eventstore", "streams.definitions"}
