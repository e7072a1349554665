"""Data sources: plugins that make a dataset's rows (a task generator, a benchmark suite, a database).

A recipe names one by its key: ``data: {train: {reasoning_gym: leg_counting, size: 500, seed: 1}}`` takes
the rows of the data source registered as ``reasoning_gym``; the whole mapping, that key included, is
validated by the source's ``Options`` (so ``Options`` has a field named like the source).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from feedback_rl.base import PluginOptions
from feedback_rl.errors import UserError, did_you_mean
from feedback_rl.rows.refs import DATA_KINDS


class DataSource:
    """Makes rows (dicts: ``prompt`` and whatever the stage's optimizer and reward sources read).

    Registered through ``frl_register_datasets``. :meth:`rows` must give the same rows for the same
    options on every call: a resumed run, ``frl check`` and the planner read them again.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, options: PluginOptions, base_dir: Path):
        self.options = options
        self.base_dir = base_dir  # the recipe's folder: relative paths in options resolve here

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def check_eval(cls, train: PluginOptions, eval: PluginOptions) -> str | None:
        """Called at recipe load when a stage's train and eval both come from this source: a message when the
        eval would repeat the train rows, else None."""
        return None

    def origin(self) -> str:
        """Where the rows came from, for error messages (``<origin>:<row>``)."""
        value = getattr(self.options, self.name, "")
        return f"{self.name} '{value}'"


def kind_of(entries: dict[str, Any], registry: Any) -> type[DataSource]:
    """The registered data source a ``{<name>: VALUE, ...}`` mapping names; else a one-line UserError."""
    core_kinds = tuple(DATA_KINDS)
    table = registry.classes["datasets"]
    named = [k for k in entries if k in table]
    if len(named) == 1:
        return table[named[0]]
    if named:
        raise UserError(f"names {len(named)} data sources ({', '.join(named)}); use one")
    known = sorted(table) + list(core_kinds)
    hint = next((h for k in entries if (h := did_you_mean(k, known))), "")
    sources = ', '.join(sorted(table)) or 'none'
    if hint:
        raise UserError(f"no data source named by the keys {', '.join(map(str, entries))}{hint}; installed data "
                        f"sources: {sources}")
    raise UserError(f"expected a data file path, or a mapping with one of the keys {', '.join(core_kinds)}, or the "
                    f"key of an installed data source ({sources}); got {', '.join(map(str, entries))}")


def generate(entries: dict[str, Any], base_dir: Path, registry: Any) -> tuple[list[dict], str]:
    """The rows and their origin for a validated ``{<name>: VALUE, ...}`` mapping (cached per process:
    a stage's eval reads its train rows again to drop repeats)."""
    cls = kind_of(entries, registry)
    key = (cls.name, json.dumps(entries, sort_keys=True, default=str), str(base_dir))
    if key not in _CACHE:
        from pydantic import ValidationError
        try:
            options = cls.Options.model_validate(entries)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or cls.name
            raise UserError(f"data source {cls.name}: {where}: {first['msg']}") from None
        source = cls(options, base_dir)
        rows = source.rows()
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (rows, source.origin())
    rows, origin = _CACHE[key]
    return [dict(r) for r in rows], origin


_CACHE: dict[tuple, tuple[list[dict], str]] = {}


def prompt_key(row: dict[str, Any]) -> str:
    """A row's prompt as one comparable string (a prompt may be text or turns)."""
    return json.dumps(row.get("prompt"), sort_keys=True, default=str)
