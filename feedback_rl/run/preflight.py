"""Every check that needs no model, for every stage, before the first model loads.

``frl validate``, ``frl check``, ``frl plan`` and ``frl train`` start here, so a mistake in the last
stage fails in seconds instead of after the first stage trained. :func:`check` looks at the model
path, reads every stage's data once (the engine trains on these rows; it does not read the files
again), checks the columns the stage's optimizer reads, and asks every reward source to check its
options against the rows it will score (``RewardSource.preflight``). No weights load, no network.
:func:`probe` is the one check that uses the network: ``frl train`` asks every source whether what it
calls answers (a judge's server), so a server that is down is found before the model loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from feedback_rl.rows import dataset as datasets
from feedback_rl.config.shapes import row_columns
from feedback_rl.modeling.model_files import check_model_path
from feedback_rl.modeling.template_files import has_chat_template
from feedback_rl.errors import UserError
from feedback_rl.plugins import Registry
from feedback_rl.config.recipe import Recipe

@dataclass
class StageData:
    """One stage's rows, read and checked: ``train`` and ``eval`` (None where the recipe sets none)."""

    train: datasets.Dataset | None
    eval: datasets.Dataset | None


@dataclass
class Checked:
    """A recipe that passed every check, with what the checks built."""

    pm: Any
    registry: Registry
    recipe: Recipe
    data: list[StageData]


def load(path: str | Path, overrides: list[str] = ()) -> Checked:
    """Load a recipe with the installed plugins and run :func:`check` on it: what a command starts with."""
    from feedback_rl.config import recipe as recipes
    from feedback_rl.plugins import default
    pm, reg = default()
    rec = recipes.load(path, list(overrides), reg)
    return Checked(pm, reg, rec, check(rec, reg))


def check(recipe: Recipe, registry: Registry) -> list[StageData]:
    """Raise a one-line :class:`UserError` for the first mistake; return each stage's rows."""
    check_model_path(recipe.model.path, recipe.base_dir, recipe.where("model", "path"), recipe.model.gguf_file)
    loaded: dict[str, datasets.Dataset] = {}  # a file two stages read is read once

    def read(ref: Any) -> datasets.Dataset | None:
        if ref is None:
            return None
        key = repr(ref)
        if key not in loaded:
            loaded[key] = datasets.load(ref, recipe.base_dir, registry)
        return loaded[key]

    out = []
    template = has_chat_template(recipe.model, recipe.base_dir)
    for i, stage in enumerate(recipe.stages):
        rows = StageData(read(stage.data.train), read(stage.data.eval))
        opt_cls = registry.get("optimizers", stage.optimizer.type)
        online = bool(stage.rewards.sources) and opt_cls.feedback != "demonstrations"
        if rows.train is not None:
            rows.train.require(row_columns(opt_cls.feedback, online, rows.train[0] if len(rows.train) else None),
                               f"stage '{stage.name}' ({stage.optimizer.type})")
        if rows.eval is not None:
            rows.eval.require(row_columns("scalar", True), f"stage '{stage.name}' (eval)")
        if template is False:  # after require: it parses a CSV cell that holds a conversation
            _no_conversations(recipe, rows.train, rows.eval)
        _check_sources(recipe, registry, i, rows)
        _warn_small(recipe, i, rows.train)
        out.append(rows)
    return out


def probe(recipe: Recipe, registry: Registry) -> None:
    """Every source of every stage checks that what it calls answers (``RewardSource.probe``)."""
    for i, stage in enumerate(recipe.stages):
        for key, specs, role in _source_groups(stage):
            for j, spec in enumerate(specs):
                registry.get("reward_sources", spec.type).probe(recipe.options(key, i, j),
                                                                _context(recipe, stage, spec, role))


def _source_groups(stage: Any) -> list[tuple[str, list, str]]:
    """(recipe key, specs, role) of the stage's training sources and, where it has its own, eval sources."""
    groups = [("source", stage.rewards.sources, "train")]
    if stage.eval.sources is not None:
        groups.append(("eval_source", stage.eval.sources, "eval"))
    return groups


def _context(recipe: Recipe, stage: Any, spec: Any, role: str) -> Any:
    from feedback_rl.base import PluginContext
    return PluginContext(name=spec.name, run_dir=Path(recipe.output_dir) / recipe.name, stage=stage.name,
                         seed=recipe.seed, recipe_dir=recipe.base_dir, role=role)


def _no_conversations(recipe: Recipe, *datas: datasets.Dataset | None) -> None:
    """Conversational rows need a chat template to render them; found here, not after the model loads."""
    from feedback_rl.modeling.chat import CONVERSATIONAL_FIELDS, is_conversation
    for data in datas:
        for k, row in enumerate(data or ()):
            field = next((f for f in CONVERSATIONAL_FIELDS if is_conversation(row.get(f))), None)
            if field is not None:
                raise UserError(f"{data.where(k)}: field '{field}' is a conversation, but the tokenizer of "
                                f"'{recipe.model.path}' has no chat template: set model.chat_template (a Jinja "
                                "template, or a file holding one) or write the rows as plain strings")


def _warn_small(recipe: Recipe, i: int, rows: datasets.Dataset | None) -> None:
    """A batch larger than the data repeats rows within a step (a 1-row file at batch_size 16 trains on
    that row 16 times): not wrong, so a warning, not an error. The launcher warns; its ranks do not."""
    from feedback_rl.run.distributed import launched
    batch = recipe.stages[i].train.batch_size
    if rows is None or not 0 < len(rows) < batch or launched():
        return
    n = len(rows)
    click.echo(f"warning: {recipe.where('stages', i, 'train', 'batch_size')}: {batch} is more than the {n} "
               f"row{'s' if n > 1 else ''} of {rows.origin}: each step repeats rows (up to {-(-batch // n)} "
               f"times); lower it to {n} or add rows", err=True)


def _check_sources(recipe: Recipe, registry: Registry, i: int, rows: StageData) -> None:
    """Each source checks itself against the rows it will score: a training source its stage's train rows
    (and the eval rows, when it also scores evals), an eval source the eval rows."""
    stage = recipe.stages[i]
    groups = [("source", stage.rewards.sources, "train",
               [rows.train] + ([rows.eval] if stage.eval.sources is None and rows.eval is not None else []))]
    if stage.eval.sources is not None:
        groups.append(("eval_source", stage.eval.sources, "eval", [rows.eval]))
    for key, specs, role, datasets_ in groups:
        for j, spec in enumerate(specs):
            cls = registry.get("reward_sources", spec.type)
            context = _context(recipe, stage, spec, role)
            for dataset in datasets_:
                cls.preflight(recipe.options(key, i, j), context, dataset)
