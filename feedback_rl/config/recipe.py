"""YAML -> a validated recipe. Every mistake fails here, before any model loads.

Errors name the file, the line, the key's path, what was expected, and a did-you-mean.
Each plugin validates its own options with its ``Options`` schema, as strictly as the core.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feedback_rl.modeling.spec import ModelSpec
from feedback_rl.errors import UserError, read_text
from feedback_rl.rows.refs import DataRef
from feedback_rl.config.checks import check_files, check_plugins
from feedback_rl.config.overrides import apply_override
from feedback_rl.config.recipe_errors import NAME_PATTERN, _duplicate_keys, _dotted, _kind, _line_map, _pydantic_message, _where


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


class AgentSpec(Strict):
    """An agent program that plays each rollout through the rollout endpoint (docs/episodes.md, "Any agent
    program"): ``agent: agents.py:solve`` is shorthand for ``{function: agents.py:solve}``."""

    function: str = Field(description="PATH.py:function (relative to the recipe) or package.module:function, "
                                      "called as function(row, client) with an openai.OpenAI client (an async "
                                      "function gets openai.AsyncOpenAI); the float it returns is the episode's "
                                      "reward (score it with {type: environment})")
    timeout_s: float = Field(300.0, gt=0.0, description="an episode still running after this many seconds ends "
                                                        "truncated, with an error score")
    batch_wait_ms: float = Field(50.0, ge=0.0, description="how long the endpoint waits for more calls before it "
                                                           "generates (it generates at once when every running "
                                                           "episode has asked)")


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
    agent: AgentSpec | None = Field(None, description="rollouts are episodes of an agent program that calls the "
                                    "policy through an OpenAI-compatible endpoint on loopback; every call's token "
                                    "ids are recorded and trained on")
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    health: HealthSpec = HealthSpec()

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @field_validator("agent", mode="before")
    @classmethod
    def _agent_shorthand(cls, v: Any) -> Any:
        return {"function": v} if isinstance(v, str) else v

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
    check_plugins(recipe, registry, lines)
    check_files(recipe, lines)
    return recipe
