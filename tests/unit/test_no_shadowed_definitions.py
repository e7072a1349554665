"""No class or module in the core or the built-in plugins defines one name twice: the second definition
silently wins (RewardSource.preflight was written twice, with two docstrings that disagreed)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shadowed(tree: ast.AST, where: str) -> list[str]:
    out = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
        seen: dict[str, int] = {}
        for node in scope.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                decorators = {getattr(d, "attr", getattr(d, "id", "")) for d in node.decorator_list}
                if decorators & {"setter", "deleter", "overload", "register"}:
                    continue
                if node.name in seen:
                    out.append(f"{where}:{node.lineno}: {node.name} already defined at line {seen[node.name]}")
                seen[node.name] = node.lineno
    return out


def test_no_name_is_defined_twice_in_one_scope():
    files = sorted((ROOT / "feedback_rl").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))
    found = [o for f in files for o in shadowed(ast.parse(f.read_text()), str(f.relative_to(ROOT)))]
    assert found == []


def test_the_check_finds_a_method_written_twice():
    text = "class A:\n    def f(self):\n        pass\n\n    def f(self):\n        return 1\n"
    assert shadowed(ast.parse(text), "a.py") == ["a.py:5: f already defined at line 2"]
