"""``--set key.path=value``: a recipe's YAML changed before it is validated, each mistake named by its --set."""
from __future__ import annotations

import re
from typing import Any

import yaml

from feedback_rl.config.recipe_errors import _kind
from feedback_rl.errors import UserError, did_you_mean


def apply_override(data: dict, item: str, lines: dict | None = None) -> None:
    """``key.path=value``: the value is parsed as YAML; a stage may be named instead of indexed.

    ``lines`` (each key's recipe line) then names the ``--set`` for the key it set and everything under it,
    so a mistake in the value points at the command line, not at the recipe's line it replaced."""
    if "=" not in item:
        raise UserError(f"--set {item}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {item}: empty key path")
    node: Any = data
    loc: tuple = ()
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        here = ".".join(parts[: n + 1])
        if isinstance(node, list):
            idx = _list_index(node, part, here) % len(node)
            loc += (idx,)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            loc += (part,)
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise UserError(f"--set {item}: '{'.'.join(parts[:n])}' is a {_kind(node)}, not a mapping or list")
    if lines is not None:
        for k in [k for k in lines if k[:len(loc)] == loc]:
            del lines[k]
        lines[loc] = f"--set {item}"


def _list_index(node: list, part: str, here: str) -> int:
    if re.fullmatch(r"-?\d+", part):
        idx = int(part)
        if not -len(node) <= idx < len(node):
            raise UserError(f"--set {here}: index out of range (the list has {len(node)} items)")
        return idx
    names = [x.get("name") for x in node if isinstance(x, dict)]
    if part in names:
        return names.index(part)
    raise UserError(f"--set {here}: no item named '{part}'{did_you_mean(part, [n for n in names if n])}")
