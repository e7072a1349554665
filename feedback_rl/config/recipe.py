"""YAML -> a validated recipe. Every mistake fails here, before any model loads.

Errors name the file, the line, the key's path, what was expected, and a did-you-mean.
Each plugin validates its own options with its ``Options`` schema, as strictly as the core.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feedback_rl.modeling.chat import template_path
from feedback_rl.modeling.spec import ModelSpec
from feedback_rl.errors import UserError, did_you_mean, read_text
from feedback_rl.rows.refs import DataRef, FileData, GeneratedData, HubData, SourcedData
from feedback_rl.config.recipe_errors import NAME_PATTERN, _clean_loc, _duplicate_keys, _dotted, _expected, _kind, _line_map, _pydantic_message, _where


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    train: DataRef | None = Field(None, description="a data file, {path: ...}, {dataset: ...} or {generator: ...}: "
                                                    "prompts, demonstrations or offline feedback (docs/data.md)")
    eval: DataRef | None = Field(None, description="held-out rows for evaluation")


class GateSpec(Strict):
    source: str = Field(description="a source listed earlier in the same stage")
    threshold: float = Field(0.5, description="the gated source scores only rollouts the gate scored >= this")


class SourceSpec(BaseModel):
    """A reward source: core keys here; every other key is the plugin's own option."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="this source's name in metrics and rollouts")
    type: str = Field(description="the registered reward source class")
    weight: float = Field(1.0, description="weight in the mix")
    gate: GateSpec | None = Field(None, description="score only what another source passed (a name is shorthand for {source: name})")
    tasks: list[str] | None = Field(None, description="score only rows whose `task` is listed")

    @field_validator("gate", mode="before")
    @classmethod
    def _gate_shorthand(cls, v: Any) -> Any:
        return {"source": v} if isinstance(v, str) else v

    @property
    def plugin_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RewardsSpec(Strict):
    normalize: Literal["none", "sum_then_normalize", "normalize_then_sum"] = Field("none", description="z-score the mix, or each source before summing")
    max_error_rate: float = Field(0.5, ge=0.0, le=1.0, description="stop the run when a source errs on more of a step's rollouts than this")
    sources: list[SourceSpec] = []


class FeedbackSpec(Strict):
    pair_min_margin: float = Field(0.0, ge=0.0, description="pairs: best and worst must differ by at least this")
    binary_threshold: float = Field(0.5, description="binary: desirable when the mixed score is at least this")


class RolloutSpec(Strict):
    backend: str = Field("hf", description="generation backend plugin")
    backend_options: dict[str, Any] = Field({}, description="the backend plugin's own options (e.g. vllm: gpu_memory_utilization)")
    num_generations: int = Field(8, ge=1, description="completions per prompt (a group)")
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    system_prompt: str | None = Field(None, description="a system turn put first in every conversational prompt "
                                                        "(unless the row starts with its own); plain-string prompts "
                                                        "take none")
    overlap: int = Field(0, ge=0, le=1, description="1: generate the next step's rollouts while this step trains "
                         "(one-step-off: each batch trains one update after the weights that sampled it; "
                         "rollout/staleness logs it, and GRPO and PPO weight each token by min(exp(trainer - "
                         "behaviour), is_cap), cap 3.0 unless is_cap is set; opt-in because the update is "
                         "then one step stale); 0: generate, then train")
    is_cap: float | None = Field(None, gt=0.0, description="truncated importance sampling: the policy-gradient loss "
                                 "of each sampled token weighted by min(exp(trainer - behaviour log-prob), is_cap) "
                                 "(TRL's vllm_importance_sampling_correction, token_truncate); default off, 3.0 "
                                 "with overlap")
    logprob_mismatch: bool = Field(False, description="log rollout/logprob_mismatch and rollout/is_ratio_mean "
                                   "(trainer vs behaviour log-probs; on whenever is_cap applies)")


class TrainSpec(Strict):
    steps: int = Field(100, ge=1, description="optimizer steps in this stage")
    batch_size: int = Field(16, ge=1, description="prompts (online) or rows (offline) per step")
    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="the optimizer's forward passes under autocast: bf16, or fp16 with a gradient scaler; "
                            "weights and AdamW states stay in model.dtype (fp32 master weights), log-probs, "
                            "advantages and losses in fp32; generation is not autocast")
    padding_free: bool = Field(
        False, description="the optimizer's forward passes on packed rows (sequences end to end, position ids "
                           "restarting, no padding) where the model keeps them apart (probed once; else padded); "
                           "the same log-probs within float rounding; off by default until a quiet, repeated run "
                           "confirms the speed-up measured on a shared machine (docs/benchmarks.md)")


class EvalSpec(Strict):
    every: int = Field(0, ge=0, description="evaluate every N steps (0: only before and after the stage)")
    num_prompts: int = Field(200, ge=1, description="held-out prompts, completed greedily")
    batch_size: int = Field(100, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    sources: list[SourceSpec] | None = Field(None, description="eval scorers; default: the stage's reward sources")
    keep_best: str | None = Field(None, description="an eval metric (eval/exact_match, eval/reward, ...): the model of "
                                  "the best eval (before, every eval.every steps, after) becomes the stage's output "
                                  "and what the next stage starts from (TRL's load_best_model_at_end)")
    keep_best_mode: Literal["max", "min"] = Field("max", description="whether a higher or a lower keep_best is better")


class CheckpointSpec(Strict):
    every: int = Field(0, ge=0, description="save a full-state checkpoint every N steps (0: only at the stage's end and on SIGINT/SIGTERM)")
    keep: int = Field(2, ge=1, description="how many checkpoints to keep")


class Limit(Strict):
    limit: float
    action: Literal["warn", "stop"] = "warn"


class SkipLimit(Strict):
    """How many non-finite steps ``nonfinite: skip`` skips before the run stops: weights that blew up make
    every later step non-finite, and skipping them all would end "finished" over garbage."""

    consecutive: int = Field(3, ge=1, description="stop when this many steps in a row were skipped")
    share: float = Field(0.1, gt=0.0, le=1.0, description="stop when more than this share of the stage's steps "
                                                          "were skipped (one skipped step is always allowed)")


class HealthSpec(Strict):
    nonfinite: Literal["skip", "stop"] = Field("skip", description="a non-finite loss or gradient: skip the step "
                                              "and save the batch (within skip_limit), or stop")
    skip_limit: SkipLimit = Field(SkipLimit(), description="when skipped non-finite steps stop the run")
    max_kl: Limit | None = Field(None, description="KL to the reference per completion (metric kl/sequence, nats) above the limit")
    min_entropy: Limit | None = Field(None, description="policy entropy below the limit (collapse)")
    max_truncated_rate: Limit | None = Field(Limit(limit=0.5), description="fraction of completions cut by max_new_tokens")
    max_zero_variance_groups: Limit | None = Field(Limit(limit=0.95), description="fraction of prompt groups whose "
                                                   "completions all got one reward")
    max_reward_error_rate: Limit | None = Field(None, description="any source's error rate in a step")
    min_grad_norm: Limit | None = Field(Limit(limit=0.0), description="a gradient norm at or below the limit")
    overfit: Literal["off", "warn", "stop"] = Field("warn", description="the held-out eval (eval.keep_best, else "
                                                    "eval/reward) falls more than 5% below its best while the training "
                                                    "reward does not fall: warn once, or stop the run")
    warn_every: int = Field(50, ge=1, description="repeat a warning at most every N steps")


class OptimizerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(description="the registered optimizer class; its options sit beside this key")

    @property
    def plugin_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EnvironmentSpec(BaseModel):
    """An environment the stage's rollouts are episodes against: ``type`` here; every other key (``max_turns``,
    the plugin's own) is the environment's option."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="the registered environment class; its options sit beside this key")

    @property
    def plugin_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StageSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="the stage's folder under the run's stages/")
    optimizer: OptimizerSpec
    data: DataSpec = DataSpec()
    rewards: RewardsSpec = RewardsSpec()
    feedback: FeedbackSpec = FeedbackSpec()
    rollout: RolloutSpec = RolloutSpec()
    environment: EnvironmentSpec | None = Field(None, description="rollouts are episodes played against this "
                                                "environment (docs/episodes.md); each episode's turns are "
                                                "generated by the policy, rollout.max_new_tokens per turn")
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    health: HealthSpec = HealthSpec()

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @property
    def eval_sources(self) -> list[SourceSpec]:
        return self.eval.sources if self.eval.sources is not None else self.rewards.sources


class LoggerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class Recipe(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = Field(0, description="seeds Python, NumPy and torch; the CPU run is reproducible")
    output_dir: str = Field("runs", description="parent folder of the run folder")
    model: ModelSpec = ModelSpec()
    loggers: list[LoggerSpec] = [LoggerSpec(type="jsonl")]
    stages: list[StageSpec] = Field(min_length=1)

    # filled by load(): where relative paths resolve, each plugin's validated options, each key's line (or, for a
    # key a --set gave, that "--set ..." text)
    _path: Path | None = None
    _options: dict[tuple, Any] = {}
    _lines: dict[tuple, int | str] = {}

    @field_validator("loggers", mode="before")
    @classmethod
    def _logger_shorthand(cls, v: Any) -> Any:
        return [{"type": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @property
    def path(self) -> Path:
        return self._path or Path("recipe.yaml")

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def options(self, *key: Any) -> Any:
        """A plugin's validated options: ("stage", i, "optimizer"), ("source", i, j), ("eval_source", i, j),
        ("logger", k), ("backend", i), ("data", i, "train" | "eval") for a data source, ("environment", i)."""
        return self._options[key]

    def where(self, *loc: Any) -> str:
        """``recipe.yaml:LINE: key.path`` for a key, the prefix of a one-line error about it."""
        return f"{_where(self.path, self._lines, loc)}: {_dotted(loc)}"


# --------------------------------------------------------------------------- loading

def load(path: str | Path, overrides: list[str] = (), registry: Any = None) -> Recipe:
    """Read, override, validate. Raises :class:`UserError` with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    text = read_text(path, "recipe")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
        _duplicate_keys(node, path)
        lines = _line_map(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a mapping of keys (name, model, stages, ...), got {_kind(data)}")
    for item in overrides:
        apply_override(data, item, lines)
    return validate(data, path, registry, lines)


def validate(data: dict, path: Path, registry: Any = None, lines: dict | None = None) -> Recipe:
    lines = lines or {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise UserError(_pydantic_message(e, path, lines, Recipe)) from None
    recipe._path = path
    recipe._lines = lines
    if registry is None:
        from feedback_rl.plugins import default
        registry = default()[1]
    recipe._options = {}
    _check_plugins(recipe, registry, lines)
    _check_files(recipe, lines)
    return recipe


def _check_plugins(recipe: Recipe, reg: Any, lines: dict) -> None:
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
            first = e.errors()[0]
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
    if opt_cls.feedback == "demonstrations" or not stage.rewards.sources:
        fail(loc, "this stage generates nothing (it trains on its data rows): remove environment, or add "
             "rewards.sources (e.g. {name: env, type: environment})")
    if stage.rollout.overlap:
        fail(("stages", i, "rollout", "overlap"), "episodes are not generated one step ahead yet: remove "
             "rollout.overlap from a stage with an environment")


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


def _check_files(recipe: Recipe, lines: dict) -> None:
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
