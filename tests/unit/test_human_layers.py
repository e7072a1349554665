"""The human source's modules import each other in one direction: no circle, not even inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import frl_plugins.rewards.human as human

PACKAGE = Path(human.__file__).parent


def relative_imports(path: Path) -> set[str]:
    """Sibling modules a module imports, anywhere in it (a function-level import is still an edge)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module} if node.module else {a.name for a in node.names}
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle in ``graph`` (a path back to its start), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            if found := visit(nxt, path + [node]):
                return found
        done.add(node)
        return None
    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return None


def test_cycle_finder_finds_a_circle():
    assert cycle({"refit": {"source"}, "source": {"refit", "store"}}) == ["refit", "source", "refit"]
    assert cycle({"source": {"refit", "items"}, "refit": {"items"}, "items": {"store"}}) is None


def test_human_modules_import_in_one_direction():
    graph = {p.stem: relative_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert "store" in graph and "source" in graph
    assert cycle(graph) is None, f"import circle: {' -> '.join(cycle(graph))}"
