"""Plugins use the public API only: a built-in plugin imports names from ``feedback_rl`` or one of its
public submodules (listed in their ``__all__`` and documented in docs/plugins.md), never an internal core
module, and never another plugin. The top-level surface stays small: what a plugin author needs."""
from __future__ import annotations

import ast
from pathlib import Path

import importlib

import feedback_rl

PUBLIC = ("feedback_rl", "feedback_rl.tokens", "feedback_rl.losses", "feedback_rl.models", "feedback_rl.data",
          "feedback_rl.environments", "feedback_rl.server")

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"


KINDS = {"rewards", "optimizers", "backends", "loggers", "environments", "data"}


def plugin_unit(path: Path) -> tuple[str, ...]:
    """What one plugin is: a module (plugins/kind/name.py), a package (plugins/kind/name/...), or a
    package of its own kind (plugins/serve/...)."""
    parts = path.relative_to(PLUGINS).with_suffix("").parts
    return parts[:2] if parts[0] in KINDS else parts[:1]


def offences(path: Path) -> list[str]:
    out = []
    unit = plugin_unit(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only inside one plugin package, to its own modules
                here = path.relative_to(PLUGINS).with_suffix("").parts[:-1]   # the file's package
                target = here[: len(here) - (node.level - 1)] if node.level - 1 <= len(here) else ()
                if len(here) < len(unit) or target[: len(unit)] != unit:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: relative import leaves the plugin")
                continue
            names = [node.module or ""]
            if node.module in PUBLIC:
                public = importlib.import_module(node.module).__all__
                out += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name} is not public API"
                        for a in node.names if a.name not in public]
                continue
        else:
            continue
        for name in names:
            if name.startswith("feedback_rl."):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports the core submodule {name}")
            if name.startswith("frl_plugins") and tuple(name.split(".")[1:1 + len(unit)]) != unit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports another plugin, {name}")
    return out


def test_built_in_plugins_import_only_the_public_api_and_no_other_plugin():
    files = sorted(PLUGINS.rglob("*.py"))
    assert len(files) > 20
    assert [o for f in files for o in offences(f)] == []


def test_the_checker_catches_each_kind_of_offence(tmp_path, monkeypatch):
    bad = PLUGINS / "rewards" / "_probe_offender.py"
    bad.write_text("from feedback_rl.loop.engine import Engine\nfrom feedback_rl import Dataset, Engine\n"
                   "import frl_plugins.backends.hf\nfrom .rule import RuleSource\n"
                   "from feedback_rl.tokens import masked_mean, not_there\n")
    try:
        found = offences(bad)
    finally:
        bad.unlink()
    assert len(found) == 6, found


def test_every_public_name_exists_and_is_documented():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for name in PUBLIC:
        module = importlib.import_module(name)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        undocumented = [n for n in module.__all__ if f"`{n}`" not in doc and f"`{n}(" not in doc]
        assert (name, missing, undocumented) == (name, [], [])
        assert name == "feedback_rl" or f"`{name}`" in doc


def test_the_top_level_surface_is_what_a_plugin_author_needs():
    assert len(feedback_rl.__all__) <= 30, feedback_rl.__all__
