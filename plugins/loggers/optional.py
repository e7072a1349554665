"""W&B and trackio loggers: each activates only when its package is installed.

Without the package, choosing the logger in a recipe fails at the start of the run with the pip
command to run, instead of an ImportError deep in training.
"""
from __future__ import annotations

import importlib

from feedback_rl import Logger, PluginOptions, UserError, hookimpl


class _ModuleLogger(Logger):
    """trackio copies wandb's API (init, log, finish), so one class serves both."""

    package = ""

    class Options(PluginOptions):
        project: str = "feedback_rl"
        run_name: str | None = None

    def __init__(self, options, context):
        super().__init__(options, context)
        try:
            self._mod = importlib.import_module(self.package)
        except ImportError:
            raise UserError(f"logger '{self.name}' needs the {self.package} package: pip install {self.package}") from None
        self._run = self._mod.init(project=options.project, name=options.run_name or context.run_dir.name)

    def log(self, metrics, step):
        stage = metrics.get("stage", "")
        clean = {(f"{stage}/{k}" if stage else k): v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._mod.log(clean, step=step)

    def close(self):
        self._mod.finish()


class WandbLogger(_ModuleLogger):
    name = "wandb"
    package = "wandb"


class TrackioLogger(_ModuleLogger):
    name = "trackio"
    package = "trackio"


@hookimpl
def frl_register_loggers(register):
    register(WandbLogger)
    register(TrackioLogger)
