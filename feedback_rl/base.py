"""The base classes plugins implement. Each declares its options as a pydantic schema.

A plugin class is registered by name through a ``frl_register_*`` hook; the recipe names it
under ``type:``. The recipe loader validates the plugin's options with its ``Options`` schema,
as strictly as the core's own keys (unknown keys are errors).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from feedback_rl.errors import UserError
from feedback_rl.types import FeedbackShape, Judgment, Preference, Rollout, Score


class PluginOptions(BaseModel):
    """Base of every plugin's options schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class LengthLimited(PluginOptions):
    """Options of an optimizer that trains on sequences of at most ``max_length`` tokens (the core cuts
    each completion so that prompt + completion fit)."""

    max_length: int | None = Field(None, ge=2, description="truncate prompt+completion to this many tokens")


@dataclass
class PluginContext:
    """What the engine tells a plugin instance about where it runs."""

    name: str                      # the instance name in the recipe (a source's `name`)
    run_dir: Path
    stage: str = ""
    seed: int = 0
    recipe_dir: Path = field(default_factory=Path.cwd)  # relative paths in options resolve here
    warn: Any = print              # callable(str): user-facing warnings
    sampling: Any = None           # the stage's SamplingParams (optimizers need the temperature)
    role: str = "train"            # "train" or "eval": a reward source built to score held-out evals
    system_prompt: str | None = None  # the stage's rollout.system_prompt (rows are rendered with it)
    overlap: int = 0               # the stage's rollout.overlap: rollouts trained this many updates after they were sampled
    is_cap: float | None = None    # the stage's rollout.is_cap (the core applies it: loop/batch.py)
    logprob_mismatch: bool = False  # the stage's rollout.logprob_mismatch: log trainer vs behaviour log-probs
    tokenizer: Any = None          # the policy's tokenizer (reward sources, during a run): a model reading its ids must share it

    def load_callable(self, ref: str, what: str, owner: str) -> Any:
        """A function the recipe names, ``PATH.py:name`` beside the recipe or ``module:name`` (the recipe's
        folder first on sys.path); a problem is one line, ``owner: ...`` (feedback_rl/user_code.py)."""
        from feedback_rl.user_code import RefError, load_callable
        try:
            return load_callable(ref, self.recipe_dir, what)
        except RefError as e:
            raise UserError(f"{owner}: {e}") from None

    def resolve(self, path: str | Path) -> Path:
        """A path from the recipe, relative to the recipe's folder; ``stage:<name>`` is what an earlier
        stage of this run saved (``runs/<run>/stages/<name>/``)."""
        if str(path).startswith("stage:"):
            return self.run_dir / "stages" / str(path).split(":", 1)[1]
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.recipe_dir / p


class Plugin:
    """Common to every plugin class: a registered name, an options schema, a state."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, options: PluginOptions, context: PluginContext):
        self.options = options
        self.context = context

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue this plugin exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release files, servers, connections."""


class RewardSource(Plugin):
    """Says how good a rollout is.

    :meth:`score` returns one :class:`Score` per rollout: ``Score.ok(x)``,
    ``Score.abstain()`` (not applicable) or ``Score.error(reason)``; never a silent 0.
    A pairwise source also implements :meth:`compare`. A source returns judgments only: the core
    shapes them into whatever feedback the stage's optimizer consumes (``feedback_rl/loop/feedback.py``).
    """

    #: True when the source judges pairs natively (a human A/B queue, a pairwise judge).
    pairwise: ClassVar[bool] = False

    @classmethod
    def judgments(cls, options: PluginOptions) -> set[str]:
        """The kinds of judgment this source returns: ``scores`` (:meth:`score`), ``preferences``
        (:meth:`compare`, or late from :meth:`collect`), late ``values`` or ``labels`` (:class:`Rating`
        from :meth:`collect`). The core knows which feedback shapes each kind can build."""
        return {"preferences"} if cls.pairwise else {"scores"}

    @classmethod
    def preflight(cls, options: PluginOptions, context: PluginContext, rows: Any) -> None:
        """Checks that need no model and no network, run by ``frl validate`` and before any model loads:
        raise :class:`UserError` naming the file, line or option. ``rows`` is the
        :class:`~feedback_rl.Dataset` the source will score (``.origin``, ``.lines``; the stage's train rows,
        called again with the eval rows when it scores those) or None."""
        return None

    @classmethod
    def probe(cls, options: PluginOptions, context: PluginContext) -> None:
        """Checks that need the network (an endpoint answers), run by ``frl train`` after :meth:`preflight`
        and before any model loads or a run folder opens: raise :class:`UserError` naming the source and URL."""

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        raise NotImplementedError

    def compare(self, pairs: list[tuple[Rollout, Rollout]]) -> list[Preference | Score]:
        """One result per pair, in order: a :class:`Preference`, or ``Score.error(reason)`` /
        ``Score.abstain(reason)`` for a pair it could not judge (errors count toward ``max_error_rate``)."""
        raise NotImplementedError(f"reward source '{self.name}' does not compare pairs")

    def metrics(self) -> dict[str, float]:
        """The source's own gauges for this step (queue depth, cache hits, cost...), logged as
        ``source/<name>/<key>``."""
        return {}

    def collect(self) -> list[Judgment]:
        """Judgments that arrived since the last call (an asynchronous source, such as a human queue):
        :class:`Preference` and :class:`Rating` objects about rollouts of earlier steps, each rollout
        with the token ids it was sampled with."""
        return []

    def describe(self) -> dict[str, Any]:
        """What goes into the run lock about this source (e.g. a prompt template's hash)."""
        return {}


@dataclass
class Models:
    """The roles an optimizer asked for; the engine builds each once."""

    policy: torch.nn.Module
    tokenizer: Any
    reference: torch.nn.Module | None = None
    critic: torch.nn.Module | None = None
    reward_model: torch.nn.Module | None = None

    def trainable(self) -> list[torch.nn.Module]:
        # a frozen role adds no parameters: the engine keeps only those that require grad
        return [m for m in (self.policy, self.critic, self.reward_model) if m is not None]

    @property
    def device(self) -> torch.device:
        """Where the policy (and every role built from it) lives; every batch arrives here."""
        return next(self.policy.parameters()).device


class Optimizer(Plugin):
    """Says how the policy learns from feedback. Holds only its own math.

    The engine generates, scores, batches and owns devices and importance weights. Once per step it
    builds a :class:`~feedback_rl.Batch` on the policy's device (token ids, the feedback's per-row
    values, behaviour log-probs, policy versions; for an ``importance_weighted`` optimizer the
    trainer's log-probs before the update and the truncated IS weights) and calls :meth:`prepare`
    with it, without gradients (reference log-probs, advantages); then :meth:`loss` for every
    minibatch that :meth:`minibatches` yields, with an optimizer step after each. Every tensor an
    optimizer receives is already on the right device: it never moves one.
    """

    #: the feedback shape this optimizer consumes
    feedback: ClassVar[FeedbackShape] = "scalar"
    #: True: the loss weights each sampled token by ``batch.is_weights`` (policy-gradient methods), so
    #: ``rollout.is_cap`` and ``rollout.overlap`` apply; the core then computes the weights
    importance_weighted: ClassVar[bool] = False
    #: True: the optimizer trains every segment of an episode its chat template split (``batch.tokens`` then
    #: holds more rows than the feedback: ``tokens.spread`` gives each its episode's per-row values,
    #: ``completion_logprobs`` sums them per episode); False: only each episode's first segment trains
    trains_segments: ClassVar[bool] = False

    def old_logprobs(self) -> bool:
        """Whether :meth:`prepare` reads ``batch.old_logps``, the trainer's log-probs before this update
        (one no-grad forward, computed by the core)."""
        return False

    @classmethod
    def check_stage(cls, stage: Any, options: PluginOptions) -> tuple[tuple, str] | None:
        """Recipe-level checks: ``((key, path, in, stage), message)`` for a problem, else None."""
        return None

    def roles(self) -> set[str]:
        """Model roles besides the policy: any of ``reference``, ``critic`` (own trunk),
        ``critic:shared`` (a value head on the policy's trunk), ``reward_model``."""
        return set()

    def prepare(self, batch: Any, models: Models) -> Any:
        """What :meth:`minibatches` splits, from the step's :class:`~feedback_rl.Batch` (no gradients)."""
        return batch

    def minibatches(self, prepared: Any) -> Iterable[Any]:
        yield prepared

    def loss(self, minibatch: Any, models: Models) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, metrics: dict[str, float]) -> None:
        """Called after the optimizer steps of one batch (e.g. to adapt a KL coefficient)."""

    def trainable(self, models: Models) -> list[torch.nn.Module]:
        """The modules this optimizer trains (default: policy and critic, or a reward model)."""
        return models.trainable()

    def max_length(self) -> int | None:
        """The longest prompt + completion this optimizer trains on (longer ones are cut), if any."""
        return self.options.max_length if isinstance(self.options, LengthLimited) else None

    def rows_per_forward(self, rows: int) -> int:
        """How many of a step's ``rows`` sequences one training forward holds (for ``frl plan``)."""
        return rows

    def stage_output(self, models: Models) -> torch.nn.Module:
        """The model the stage produces, saved to ``stages/<stage>/`` (a reward-model stage: the RM)."""
        return models.policy

    def evaluate(self, rows: list[dict], models: Models) -> dict[str, float]:
        """Optimizer-specific held-out metrics (``eval/...``) added to the stage's eval."""
        return {}


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    stop_token_ids: list[int] = field(default_factory=list)  # the core fills it from the tokenizer and model
    seed: int | None = None  # this call's own seed: same seed, weights and prompts, same completions (None: the global RNG)


@dataclass
class Generation:
    """What a backend returns for one prompt: token ids and behaviour log-probs (one per completion
    token). The completion may run past a stop token: the core cuts it at the first one."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: torch.Tensor | None
    truncated: bool


class Backend(Plugin):
    """Produces completions. The core's rollout path calls it; nothing else generates."""

    # True: the backend generates from weights of its own (an inference engine), refreshed by
    # sync_weights; False: it generates from the model it is handed
    holds_weights: bool = False

    def generate(self, model: torch.nn.Module, tokenizer: Any, prompt_ids: list[list[int]],
                 sampling: SamplingParams) -> list[Generation]:
        """One completion per prompt, from token ids (rendered and tokenized once, by the core); stop
        at ``sampling.stop_token_ids`` or ``sampling.max_new_tokens``."""
        raise NotImplementedError

    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        """Called after each policy update (a separate inference engine reloads weights here)."""


class Logger(Plugin):
    """Receives metrics. Only the main process logs."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError


class EnvironmentOptions(PluginOptions):
    """Options every environment has (its own Options subclass this): the recipe's
    ``environment: {type: NAME, max_turns: N, ...}``."""

    max_turns: int = Field(8, ge=1, description="assistant turns at most; an episode still open then ends truncated")
    max_seconds: float | None = Field(None, gt=0, description="wall time per episode, from its opening: an episode "
                                      "past it (an environment step still running is cancelled) ends truncated")


@dataclass
class Reply:
    """The environment's answer to one assistant turn: new turns to show the model (tool results, the other
    side's move), this step's reward (None: no reward for this step), and whether the episode ended:
    ``done`` (it reached its end) or ``truncated`` (cut short: a limit, not an outcome)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    reward: float | None = None
    done: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)   # logged beside the turn (tool outcomes, the answer...)


class Episode:
    """One episode's own state, made by :meth:`Environment.reset` from a dataset row.

    ``messages`` are the turns shown before the model's first turn; ``tools`` the :class:`~feedback_rl.Tool`
    list offered (the core puts them in the prompt, through the chat template or a system prompt). The core
    calls :meth:`step` with each assistant turn, ``{"role": "assistant", "content": TEXT}``, until a
    :class:`Reply` is done or truncated.
    """

    def __init__(self, messages: list[dict[str, Any]], tools: list[Any] | None = None):
        self.messages = messages
        self.tools = list(tools or [])

    def step(self, message: dict[str, Any]) -> Reply:
        raise NotImplementedError

    async def step_async(self, message: dict[str, Any]) -> Reply:
        """:meth:`step` for an environment that waits on I/O (a server, a subprocess): the core awaits the
        episodes of a batch together. The default calls :meth:`step`."""
        return self.step(message)

    def close(self) -> None:
        """Release what the episode holds (a server session, a subprocess)."""


class Environment(Plugin):
    """Plays episodes against the model: tools that answer, a game, a user simulator.

    An environment sees messages, never tokens: the core renders and tokenizes, and keeps the ids the model
    sampled. :meth:`reset` opens one :class:`Episode` per row (many are open at once, so an episode keeps its
    state in itself, not in the environment). The shape is OpenEnv's ``reset(seed, episode_id)`` and
    ``step(action) -> Observation(done, reward, metadata)``, so a bridge to an OpenEnv environment is one
    Episode that holds one OpenEnv environment.
    """

    Options: ClassVar[type[PluginOptions]] = EnvironmentOptions

    def reset(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        """The episode of one dataset row; ``seed`` makes any randomness of the episode repeatable."""
        raise NotImplementedError

    async def reset_async(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        """:meth:`reset` for an environment that waits on I/O; the default calls :meth:`reset`."""
        return self.reset(row, seed, episode_id)
