"""Every hook of feedback_rl. Plugins implement them with ``@feedback_rl.hookimpl``.

Registration hooks receive a ``register`` callback and call it with plugin classes.
Lifecycle hooks observe a run; they may gain arguments later, never lose them
(pluggy passes only the arguments an implementation names).
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("feedback_rl")
# Plugins write @feedback_rl.hookimpl (re-exported there); it lives here, beside the spec marker, so the core marks
# its own observers without importing the public API, which sits above every layer of the core.
hookimpl = pluggy.HookimplMarker("feedback_rl")


@hookspec
def frl_register_reward_sources(register: Callable[[type], None]) -> None:
    """Register :class:`~feedback_rl.RewardSource` classes by their ``name``.

    :param register: call it with each class.
    """


@hookspec
def frl_register_optimizers(register: Callable[[type], None]) -> None:
    """Register :class:`~feedback_rl.Optimizer` classes by their ``name``.

    :param register: call it with each class.
    """


@hookspec
def frl_register_backends(register: Callable[[type], None]) -> None:
    """Register generation :class:`~feedback_rl.Backend` classes by their ``name``.

    :param register: call it with each class.
    """


@hookspec
def frl_register_loggers(register: Callable[[type], None]) -> None:
    """Register metric :class:`~feedback_rl.Logger` classes by their ``name``.

    :param register: call it with each class.
    """


@hookspec
def frl_register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`~feedback_rl.DataSource` classes by their ``name``: a recipe's
    ``data.train: {<name>: VALUE, ...}`` takes its rows from that source.

    :param register: call it with each class.
    """


@hookspec
def frl_register_environments(register: Callable[[type], None]) -> None:
    """Register :class:`~feedback_rl.Environment` classes by their ``name``: a stage's
    ``environment: {type: NAME, ...}`` plays its episodes against that environment.

    :param register: call it with each class.
    """


@hookspec
def frl_register_commands(cli: Any) -> None:
    """Add subcommands to the ``frl`` command line.

    :param cli: the root :class:`click.Group`; use ``@cli.command()``.
    """


@hookspec
def frl_run_start(run: Any, recipe: Any) -> None:
    """A run starts, after its folder and lock are written.

    :param run: the :class:`~feedback_rl.run.folder.Run` (``run.dir``, ``run.name``).
    :param recipe: the validated :class:`~feedback_rl.config.recipe.Recipe`.
    """


@hookspec
def frl_rollouts_generated(stage: str, step: int, rollouts: list) -> None:
    """The policy generated a batch of rollouts, before they are scored.

    :param stage: the stage name.
    :param step: the training step (starting at 1).
    :param rollouts: the :class:`~feedback_rl.Rollout` list.
    """


@hookspec
def frl_scores_mixed(stage: str, step: int, scored: list) -> None:
    """Every source scored the batch and the mixer combined the scores.

    :param stage: the stage name.
    :param step: the training step.
    :param scored: the :class:`~feedback_rl.types.Scored` list (each source's score and the mix).
    """


@hookspec
def frl_step_end(stage: str, step: int, metrics: dict) -> None:
    """An optimizer step finished.

    :param stage: the stage name.
    :param step: the training step.
    :param metrics: the metrics logged for this step.
    """


@hookspec
def frl_checkpoint_saved(stage: str, step: int, path: Any) -> None:
    """A checkpoint was written completely.

    :param stage: the stage name.
    :param step: the training step.
    :param path: the checkpoint folder (:class:`pathlib.Path`).
    """


@hookspec
def frl_run_end(run: Any, summary: dict) -> None:
    """A run ended, successfully or not.

    :param run: the :class:`~feedback_rl.run.folder.Run`.
    :param summary: ``{"status": ..., "stages": {stage: {"eval_before": ..., "eval_after": ...}}}``.
    """
