"""What a recipe's schema cannot see: each plugin's own options, the feedback shape its sources can give, the
stage combinations that cannot work (importance weights with top-p, an environment with overlap), and the
files it names. One line with file, line and key path for each mistake, before any model loads."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from feedback_rl.config.recipe_errors import _clean_loc, _dotted, _expected, _where
from feedback_rl.errors import UserError, did_you_mean
from feedback_rl.modeling.chat import template_path
from feedback_rl.rows.refs import FileData, GeneratedData, HubData, SourcedData

if TYPE_CHECKING:  # the schema imports these checks; they only name its types
    from feedback_rl.config.recipe import Recipe, StageSpec


def check_plugins(recipe: Recipe, reg: Any, lines: dict) -> None:
    from feedback_rl.rows.synthetic import GENERATORS

    def fail(loc: tuple, msg: str) -> None:
        raise UserError(f"{_where(recipe.path, lines, loc)}: {_dotted(loc)}: {msg}")

    def plugin_options(kind: str, type_name: str, opts: dict, loc: tuple, core_keys: set[str]) -> Any:
        try:
            cls = reg.get(kind, type_name)
        except UserError as e:
            fail(loc + ("type",), str(e))
        try:
            return cls.Options.model_validate(opts)
        except ValidationError as e:
            # a misspelt required key is both unknown and missing: name the unknown one, with its likely spelling
            first = next((x for x in e.errors() if x["type"] == "extra_forbidden"), e.errors()[0])
            if first["type"] == "extra_forbidden":
                key = first["loc"][0]
                choices = list(cls.Options.model_fields) + sorted(core_keys)
                fail(loc + tuple(first["loc"]),
                     f"unknown key for {type_name}{did_you_mean(key, choices)}; "
                     f"expected one of: {', '.join(choices)}")
            fail(loc + _clean_loc(tuple(first["loc"]), cls.Options), _expected(first))

    for j, lg in enumerate(recipe.loggers):
        recipe._options[("logger", j)] = plugin_options("loggers", lg.type, lg.model_extra or {},
                                                        ("loggers", j), {"type"})
    names = [s.name for s in recipe.stages]
    for i, stage in enumerate(recipe.stages):
        loc = ("stages", i)
        if names.count(stage.name) > 1:
            fail(loc + ("name",), f"stage name '{stage.name}' is used twice")
        recipe._options[("stage", i, "optimizer")] = plugin_options(
            "optimizers", stage.optimizer.type, stage.optimizer.plugin_options, loc + ("optimizer",), {"type"})
        opt_cls = reg.get("optimizers", stage.optimizer.type)
        try:
            reg.get("backends", stage.rollout.backend)
        except UserError as e:
            fail(loc + ("rollout", "backend"), str(e))
        recipe._options[("backend", i)] = plugin_options(
            "backends", stage.rollout.backend, stage.rollout.backend_options, loc + ("rollout", "backend_options"), set())
        for group, sources in (("rewards", stage.rewards.sources), ("eval", stage.eval.sources or [])):
            key = "source" if group == "rewards" else "eval_source"
            seen: list[str] = []
            for j, src in enumerate(sources):
                sloc = loc + ((group, "sources", j) if group == "rewards" else ("eval", "sources", j))
                if src.name in seen:
                    fail(sloc + ("name",), f"source name '{src.name}' is used twice in this stage")
                if src.gate is not None and src.gate.source not in seen:
                    others = [s.name for s in sources if s.name != src.name]
                    hint = did_you_mean(src.gate.source, others)
                    fail(sloc + ("gate", "source"), f"gate source '{src.gate.source}' must be a source listed "
                         f"before '{src.name}'{hint}")
                seen.append(src.name)
                recipe._options[(key, i, j)] = plugin_options(
                    "reward_sources", src.type, src.plugin_options, sloc,
                    {"name", "type", "weight", "gate", "tasks"})
        _check_feedback_shape(recipe, i, opt_cls, reg, fail)
        if stage.rollout.overlap and (opt_cls.feedback == "demonstrations" or not stage.rewards.sources):
            fail(loc + ("rollout", "overlap"), "this stage generates nothing (it trains on its data rows): "
                 "remove rollout.overlap")
        _check_importance(stage, opt_cls, loc, fail)
        if stage.environment is not None:
            _check_environment(recipe, i, opt_cls, fail, plugin_options)
        if stage.agent is not None:
            _check_agent(recipe, i, opt_cls, fail)
        for split in ("train", "eval"):
            ref = getattr(stage.data, split)
            if isinstance(ref, GeneratedData) and ref.generator not in GENERATORS:
                fail(loc + ("data", split, "generator"), f"unknown generator '{ref.generator}'"
                     f"{did_you_mean(ref.generator, GENERATORS)}; available: {', '.join(sorted(GENERATORS))}")
            if isinstance(ref, SourcedData):
                _check_sourced(recipe, i, split, ref, reg, fail, plugin_options)
        problem = opt_cls.check_stage(stage, recipe._options[("stage", i, "optimizer")])
        if problem:
            key, msg = problem
            fail(loc + tuple(key), msg)


def _check_environment(recipe: Recipe, i: int, opt_cls: type, fail: Any, plugin_options: Any) -> None:
    """The environment exists and takes its options; a stage with one generates its rollouts now."""
    stage, loc = recipe.stages[i], ("stages", i, "environment")
    recipe._options[("environment", i)] = plugin_options("environments", stage.environment.type,
                                                         stage.environment.plugin_options, loc, {"type"})
    _check_plays(stage, i, "environment", opt_cls, fail)


def _check_plays(stage: StageSpec, i: int, key: str, opt_cls: type, fail: Any) -> None:
    """A stage with an environment or an agent (``key``) plays episodes: it must score them, and plays them now."""
    if opt_cls.feedback == "demonstrations" or not stage.rewards.sources:
        name = "env" if key == "environment" else key
        fail(("stages", i, key), f"this stage generates nothing (it trains on its data rows): remove {key}, or add "
             f"rewards.sources (e.g. {{name: {name}, type: environment}})")
    if stage.rollout.overlap:
        fail(("stages", i, "rollout", "overlap"), "episodes are not generated one step ahead yet: remove "
             f"rollout.overlap from a stage with an {key}")


def _check_agent(recipe: Recipe, i: int, opt_cls: type, fail: Any) -> None:
    """The agent function loads and takes (row, client); a stage with one generates its rollouts now."""
    from feedback_rl.config.agent_ref import AgentRefError, load_agent
    stage, loc = recipe.stages[i], ("stages", i, "agent")
    if stage.environment is not None:
        fail(loc, "a stage's rollouts come from an environment or an agent, not both: remove one")
    _check_plays(stage, i, "agent", opt_cls, fail)
    try:
        load_agent(stage.agent.function, recipe.base_dir)
    except AgentRefError as e:
        fail(loc + ("function",), str(e))


def _check_importance(stage: StageSpec, opt_cls: type, loc: tuple, fail: Any) -> None:
    """Importance weights apply to optimizers that weight sampled tokens, and compare like with like."""
    ro = stage.rollout
    if ro.is_cap is not None and not opt_cls.importance_weighted:
        fail(loc + ("rollout", "is_cap"), f"optimizer '{stage.optimizer.type}' does not weight its loss by "
             "importance weights: remove rollout.is_cap")
    weighted = opt_cls.importance_weighted and (ro.is_cap is not None or ro.overlap)
    if weighted and (ro.top_p < 1.0 or ro.top_k > 0):
        key = "top_p" if ro.top_p < 1.0 else "top_k"
        fail(loc + ("rollout", key), f"{key} with importance weights ({'rollout.is_cap' if ro.is_cap else 'rollout.overlap'}): "
             "the backend samples from the truncated distribution while the trainer scores the whole one, so "
             "every weight would be biased below 1 even with no staleness; use top_p: 1.0 and top_k: 0 here")


def _check_sourced(recipe: Recipe, i: int, split: str, ref: SourcedData, reg: Any, fail: Any,
                   plugin_options: Any) -> None:
    """A data-source mapping names one installed source and passes its options; an eval is not its train."""
    from feedback_rl.rows.datasources import kind_of
    loc = ("stages", i, "data", split)
    try:
        cls = kind_of(ref.entries, reg)
    except UserError as e:
        fail(loc, str(e))
    recipe._options[("data", i, split)] = plugin_options("datasets", cls.name, ref.entries, loc, set())
    train = recipe.stages[i].data.train
    if split == "eval" and isinstance(train, SourcedData):
        if train.entries == ref.entries:
            fail(loc, "the same rows as data.train: give data.eval another seed")
        if kind_of(train.entries, reg) is cls and (problem := cls.check_eval(
                recipe._options[("data", i, "train")], recipe._options[("data", i, "eval")])):
            fail(loc, problem)
        ref._train = train


def _check_feedback_shape(recipe: Recipe, i: int, opt_cls: type, reg: Any, fail: Any) -> None:
    stage = recipe.stages[i]
    loc = ("stages", i)
    shape = opt_cls.feedback
    sources = stage.rewards.sources
    if shape == "demonstrations":
        if stage.data.train is None:
            fail(loc + ("data", "train"), f"optimizer '{opt_cls.name}' trains on a dataset of prompt/completion "
                 "rows; set data.train")
        return
    if not sources:
        if shape == "scalar":
            fail(loc + ("rewards", "sources"), f"optimizer '{opt_cls.name}' consumes scalar feedback; "
                 "add at least one reward source")
        if stage.data.train is None:
            fail(loc + ("data", "train"), f"optimizer '{opt_cls.name}' needs reward sources or an offline "
                 f"{shape} dataset in data.train")
        return
    if stage.data.train is None:
        fail(loc + ("data", "train"), "set data.train: the prompts to generate rollouts from")
    from feedback_rl.config.shapes import buildable, can_build
    for j, src in enumerate(sources):
        cls = reg.get("reward_sources", src.type)
        judgments = cls.judgments(recipe.options("source", i, j))
        if not can_build(shape, judgments):
            fail(loc + ("rewards", "sources", j), f"optimizer '{opt_cls.name}' consumes {shape} feedback, but reward "
                 f"source '{src.name}' ({src.type}) gives only {', '.join(sorted(buildable(judgments)))}")
    if shape == "pairs" and stage.rollout.num_generations < 2:
        fail(loc + ("rollout", "num_generations"), "pairs are formed within a prompt's group: set it to 2 or more")


def check_files(recipe: Recipe, lines: dict) -> None:
    def fail(loc: tuple, msg: str) -> None:
        raise UserError(f"{_where(recipe.path, lines, loc)}: {_dotted(loc)}: {msg}")

    for i, stage in enumerate(recipe.stages):
        for split in ("train", "eval"):
            ref, loc = getattr(stage.data, split), ("stages", i, "data", split)
            if isinstance(ref, FileData):
                value, loc = ref.path, loc + ("path",)
            elif isinstance(ref, HubData) and _looks_local(ref.dataset):
                value, loc = ref.dataset, loc + ("dataset",)
            elif isinstance(ref, str):
                value = ref
            else:
                continue
            path = Path(value).expanduser()
            path = path if path.is_absolute() else recipe.base_dir / path
            if not path.exists():
                fail(loc, f"file not found: {value}")
            if path.is_dir() and not isinstance(ref, HubData):
                fail(loc, f"{value} is a folder, not a data file; read a save_to_disk folder or a folder of "
                          f"data files with {{dataset: {value}}}")
    t = recipe.model.chat_template
    if t is not None and (where := template_path(t, recipe.base_dir)) is not None and not where.is_file():
        fail(("model", "chat_template"), f"file not found: {t}")
    p = recipe.model.path
    if _looks_local(p) and not (recipe.base_dir / p).expanduser().exists() and not Path(p).expanduser().exists():
        fail(("model", "path"), f"file not found: {p}")


def _looks_local(p: str) -> bool:
    return p.startswith((".", "/", "~")) or p.endswith(".gguf")


# --------------------------------------------------------------------------- --set

