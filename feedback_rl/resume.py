"""Finding the checkpoint to resume from, and refusing a recipe that changed incompatibly."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from . import checkpoint as ckpt
from .errors import UserError
from .recipe import Recipe
from .runs import Run

# keys whose change makes a checkpoint meaningless for the recipe
_FIXED = ("model.path", "model.tiny", "model.dtype", "model.lora")


def find_resumable(recipe: Recipe, say: Callable[[str], None]) -> tuple[Run | None, Path | None]:
    run_dir = Path(recipe.output_dir) / recipe.name
    latest = ckpt.latest(run_dir) if run_dir.is_dir() else None
    if latest is None:
        say(f"no checkpoint in {run_dir}: starting fresh")
        return None, None
    lock = run_dir / "recipe.lock.yaml"
    if lock.exists():
        check_compatible(yaml.safe_load(lock.read_text())["recipe"], recipe.model_dump(mode="json"), run_dir)
    return Run(run_dir.name, run_dir), latest


def check_compatible(old: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    for key in _FIXED:
        a, b = _get(old, key), _get(new, key)
        if a != b:
            raise UserError(f"cannot resume {run_dir}: {key} was {a!r}, the recipe now says {b!r}")
    old_stages = [(s["name"], s["optimizer"]["type"]) for s in old["stages"]]
    new_stages = [(s["name"], s["optimizer"]["type"]) for s in new["stages"]]
    for k, (a, b) in enumerate(zip(old_stages, new_stages)):
        if a[0] != b[0]:
            raise UserError(f"cannot resume {run_dir}: stages[{k}].name was '{a[0]}', the recipe now says '{b[0]}'")
        if a[1] != b[1]:
            raise UserError(f"cannot resume {run_dir}: stages[{k}].optimizer.type was '{a[1]}', "
                            f"the recipe now says '{b[1]}'")
    if len(old_stages) != len(new_stages):
        raise UserError(f"cannot resume {run_dir}: the run had {len(old_stages)} stages, the recipe now has "
                        f"{len(new_stages)}")


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d
