"""The core's packages import in one direction (docs/architecture.md, "Layers"): a module imports only from
its own package or a lower layer, lazy imports inside functions included, so no two packages need each other."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "feedback_rl"

# Lowest first. A unit is a top-level module or a package of feedback_rl/; "feedback_rl" is its __init__, the
# public API, which re-exports from every layer and so sits above them all, beside the public submodules
# (tokens, losses, models, data) that re-export helpers for plugins.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "types", "hookspecs", "user_code"),
    ("base", "plugins"),
    ("modeling",),
    ("episodes",),
    ("serving",),
    ("rows",),
    ("config",),
    ("run",),
    ("loop",),
    ("commands",),
    ("feedback_rl", "tokens", "losses", "models", "data", "environments", "server"),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(parts: tuple[str, ...]) -> str:
    """The unit a dotted module path (``("feedback_rl", "loop", "engine")``) belongs to."""
    return parts[1] if len(parts) > 1 else "feedback_rl"


def module_of(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A core file's dotted module path and the package its relative imports start from."""
    parts = ("feedback_rl",) + path.relative_to(CORE).with_suffix("").parts
    return (parts[:-1], parts[:-1]) if parts[-1] == "__init__" else (parts, parts[:-1])


def imported_units(node: ast.Import | ast.ImportFrom, package: tuple[str, ...]) -> list[tuple[str, str]]:
    """(unit, dotted name) for every core module one import statement reaches, from a module of ``package``."""
    if isinstance(node, ast.Import):
        names = [tuple(a.name.split(".")) for a in node.names]
    else:
        module = tuple(node.module.split(".")) if node.module else ()
        if node.level:  # relative: from the importer's package, one level up per extra dot
            module = package[: len(package) - (node.level - 1)] + module
        # `from feedback_rl import x` reaches the unit x when x is a module or package, else the public API
        names = [module + (a.name,) if module == ("feedback_rl",) and a.name in RANK else module for a in node.names]
    return sorted({(unit_of(n), ".".join(n)) for n in names if n[:1] == ("feedback_rl",)})


def imports(path: Path, text: str | None = None) -> list[tuple[str, int, str, str]]:
    """(importer unit, line, imported unit, imported name) for each import of a core module in one file."""
    module, package = module_of(path)
    unit = unit_of(module)
    tree = ast.parse(text if text is not None else path.read_text(), str(path))
    return sorted((unit, node.lineno, target, name)
                  for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))   # every depth: lazy too
                  for target, name in imported_units(node, package) if target != unit)


def offences(path: Path, text: str | None = None) -> list[str]:
    out = []
    for unit, line, target, name in imports(path, text):
        where = f"{path.relative_to(ROOT)}:{line}"
        if unit not in RANK:
            out.append(f"{where}: {unit} has no layer: add it to LAYERS here and to docs/architecture.md")
        elif target not in RANK:
            out.append(f"{where}: imports {name}, whose {target} has no layer")
        elif RANK[target] >= RANK[unit]:
            how = "in the same layer" if RANK[target] == RANK[unit] else "above it"
            out.append(f"{where}: {unit} imports {name}, which is {how}")
    return out


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The cycles a depth-first search closes (one per back edge), each as the units around it: none found
    means the graph has no cycle."""
    found, state = [], {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = "open"
        for v in sorted(edges.get(u, {})):
            if state.get(v) == "open":
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u, [u])
    return found


def core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 40
    return files


def test_every_core_import_goes_down_the_layers():
    assert [o for f in core_files() for o in offences(f)] == []


def test_no_cycle_between_core_packages():
    edges: dict[str, dict[str, str]] = {}
    for f in core_files():
        for unit, line, target, name in imports(f):
            edges.setdefault(unit, {}).setdefault(target, f"{f.relative_to(ROOT)}:{line} imports {name}")
    described = [" -> ".join(c) + ": " + "; ".join(edges[a][b] for a, b in zip(c, c[1:])) for c in cycles(edges)]
    assert described == []


def test_every_unit_of_the_core_has_a_layer():
    units = {unit_of(module_of(f)[0]) for f in core_files()}
    assert sorted(units - set(RANK)) == []


def test_the_drawing_in_the_architecture_doc_is_these_layers():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    drawing = re.search(r"```text\nlayers, lowest first:\n(.*?)```", doc, re.S)
    assert drawing, "docs/architecture.md lost its layer drawing"
    drawn = [tuple(u.strip() for u in row.split("|")[0].split(",")) for row in drawing.group(1).strip().splitlines()]
    assert tuple(drawn) == LAYERS


def test_the_checker_catches_each_kind_of_offence():
    probe = CORE / "modeling" / "probe.py"
    text = ("from feedback_rl.config.recipe import ModelSpec\n"          # up a layer
            "def f():\n    from feedback_rl.loop import feedback\n"      # lazily, up
            "from ..rows import dataset\n"                                # relative, up
            "from feedback_rl import hookimpl\n"                          # the public API, from inside the core
            "import feedback_rl.run.folder\n"                              # up, as a plain import
            "from feedback_rl import errors, modeling\n"                  # down, and its own package: fine
            "from .batching import pack\n"                                # its own package: fine
            "from ..types import Rollout\n")                              # down, relative: fine
    found = offences(probe, text)
    assert [o.split(":")[1] for o in found] == ["1", "3", "4", "5", "6"], found
    assert offences(CORE / "base.py", "from feedback_rl.plugins import Registry\n") == [
        "feedback_rl/base.py:1: base imports feedback_rl.plugins, which is in the same layer"]
    assert cycles({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}) == [["a", "b", "c", "a"]]
