"""What both halves of the plugin ask reasoning-gym: is it installed, is a task and its config valid, a dataset."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from feedback_rl import did_you_mean

INSTALL = "pip install 'feedback_rl[reasoning-gym]'"
# reasoning-gym seeds item i of a dataset with `seed + i`, so seeds 0 and 1 share all but one item: the
# recipe's seed S starts at S * STRIDE instead, and sizes stay under STRIDE (no two seeds' items overlap).
STRIDE = 2 ** 20


def registry() -> dict[str, tuple[type, type]]:
    """reasoning-gym's tasks: name -> (dataset class, config dataclass). ValueError when it is not installed."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise ValueError(f"needs the reasoning-gym package: {INSTALL}") from None
    return DATASETS


def check_task(task: str) -> None:
    """A ValueError naming the problem when ``task`` is not a reasoning-gym task (or it is not installed)."""
    tasks = registry()
    if task not in tasks:
        raise ValueError(f"unknown reasoning-gym task '{task}'{did_you_mean(task, tasks)} "
                         f"({len(tasks)} tasks; e.g. {', '.join(sorted(tasks)[:6])})")


def check_config(task: str, config: dict[str, Any]) -> None:
    """A ValueError naming the problem when ``config`` does not fit the task's config class."""
    tasks = registry()
    fields = [f.name for f in dataclasses.fields(tasks[task][1]) if f.init]
    for key in config:
        if key in ("size", "seed"):
            raise ValueError(f"set '{key}' beside config, not inside it")
        if key not in fields:
            # repr: a key holding a newline (YAML allows it) must not break the error's one line
            raise ValueError(f"unknown key {key!r} for task '{task}'{did_you_mean(key, fields)}; "
                             f"expected one of: {', '.join(f for f in fields if f not in ('size', 'seed'))}")
    try:
        made = tasks[task][1](**config)
        if hasattr(made, "validate"):  # two tasks' configs have none
            made.validate()
    except Exception as e:  # noqa: BLE001 - reasoning-gym validates with asserts and ValueErrors
        raise ValueError(f"invalid for task '{task}': {type(e).__name__}: {e}") from None


def dataset(task: str, config: dict[str, Any], size: int = 1, seed: int = 0) -> Any:
    dataset_cls, config_cls = registry()[task]
    return dataset_cls(config=config_cls(**config, size=size, seed=seed * STRIDE))


_SCORERS: dict[str, Any] = {}


def scorer(task: str, config: dict[str, Any]) -> Any:
    """A dataset of ``task`` with ``config`` whose ``score_answer`` grades an answer (cached)."""
    key = f"{task}:{json.dumps(config, sort_keys=True, default=str)}"
    if key not in _SCORERS:
        _SCORERS[key] = dataset(task, config)
    return _SCORERS[key]
