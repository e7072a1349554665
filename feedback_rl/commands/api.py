"""``feedback_rl.train``: a recipe trained in this process, with plugins registered in-process (a script,
a notebook, a test) beside the installed ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def train(recipe: str | Path, *, plugins: list[Any] = (), overrides: list[str] = (), resume: bool | str | Path = False,
          progress: bool = True) -> dict[str, Any]:
    """Train ``recipe`` (a YAML file) as ``frl train`` would, and return the run's summary (``status``,
    ``run_dir``, each stage's eval before and after).

    ``plugins``: modules or objects with ``@feedback_rl.hookimpl`` functions (``frl_register_optimizers``
    and the rest), registered for this run only, beside every installed plugin. ``overrides``: ``--set``
    strings (``"stages[0].train.steps=5"``). ``resume``: as ``frl train --resume``.
    """
    from feedback_rl.plugins import get_plugin_manager
    from feedback_rl.commands.train import train_recipe
    pm = get_plugin_manager()
    for k, plugin in enumerate(plugins):
        pm.register(plugin, name=f"script-plugin-{k}-{getattr(plugin, '__name__', type(plugin).__name__)}")
    run, summary = train_recipe(recipe, list(overrides), pm=pm, progress=progress, resume=resume)
    return {**summary, "run_dir": str(run.dir.resolve())}
