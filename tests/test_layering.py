"""The Python layer's shape: no module of forge_flash imports, directly or inside a function, a
module that imports it back; and a call is described once (forge_flash.call)."""

from __future__ import annotations

import ast
from pathlib import Path

import forge_flash

PACKAGE = Path(forge_flash.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """forge_flash modules ``path`` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("forge_flash")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("forge_flash"):
                continue
            if node.module is not None:
                found.add(base)
            # `from . import x` imports module x (its package is already being imported).
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, name) & modules.keys() - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_sees_the_imports():
    # The checker itself: a function-level import counts.
    graph = _graph()
    assert "forge_flash.dispatch" in graph["forge_flash.api"]
    assert "forge_flash.call" in graph["forge_flash.validation"]


def test_no_import_loop_in_forge_flash():
    # Package __init__ files re-export their children by design; a child importing its own
    # package's __init__ would be the loop, so they stay in the graph.
    cycle = _cycle(_graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_the_bottom_layers_import_nothing_above_them():
    graph = _graph()
    assert graph["forge_flash.call"] == set()
    assert graph["forge_flash.validation"] <= {"forge_flash.call"}
    for backend in ("forge_flash.backends.naive", "forge_flash.backends.cuda"):
        assert graph[backend] <= {"forge_flash.call", "forge_flash.backends.base"}, backend
