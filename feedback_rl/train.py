"""Running a recipe in this process: load it, open (or find, to resume) its run folder, train.

``frl train`` calls :func:`train_recipe`; so do tests and notebooks. Under several processes rank 0
opens the folder and every rank trains in it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .distributed import Dist
from .engine import Engine
from .preflight import StageData, check as preflight
from .errors import UserError
from .recipe import Recipe
from .runs import Run


def train_recipe(recipe: Recipe | str | Path, overrides: list[str] = (), pm: Any = None,
                 progress: bool = False, resume: bool = False, say: Any = None,
                 data: list[StageData] | None = None) -> tuple[Run, dict[str, Any]]:
    """Run a recipe in this process (``frl train``; also for tests and notebooks).

    With ``resume``, continue ``<output_dir>/<name>`` from its latest complete checkpoint; a recipe
    changed in a way that breaks resume is refused with the difference.
    """
    from . import recipe as recipes
    from .plugins import build_registry, default
    if pm is None:
        pm, reg = default()
    else:
        reg = build_registry(pm)
    rec = recipe if isinstance(recipe, Recipe) else recipes.load(recipe, list(overrides), reg)
    if data is None:  # every stage's mistakes, before a run folder opens or a model loads
        data = preflight(rec, reg)
    dist = Dist()
    run, checkpoint = open_run(rec, resume, say or (lambda msg: None), dist)
    return run, Engine(rec, pm, reg, run, progress=progress, resume=checkpoint, dist=dist, data=data).train()


def open_run(rec: Recipe, resume: bool, say: Any, dist: Dist) -> tuple[Run, Path | None]:
    """Rank 0 creates (or finds, to resume) the run folder; every rank gets the same folder."""
    from .resume import find_resumable
    found: tuple[Any, Any, str | None] = (None, None, None)
    if dist.main:
        try:
            checkpoint = None
            if resume:
                run, checkpoint = find_resumable(rec, say)
            if checkpoint is None:
                run = Run.create(Path(rec.output_dir), rec.name)
            say(f"run: {run.dir}" + (f" (resuming from {checkpoint.name})" if checkpoint else ""))
            found = (run.dir, checkpoint, None)
        except UserError as e:
            found = (None, None, str(e))
    run_dir, checkpoint, error = dist.broadcast(found)
    if error:
        raise UserError(error)
    return Run(run_dir.name, run_dir), checkpoint
