"""feedback_rl: train language models from feedback. The public API plugins import."""
from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("feedback_rl")

from .base import (  # noqa: E402
    Backend,
    Generation,
    Logger,
    Models,
    Optimizer,
    Plugin,
    PluginContext,
    PluginOptions,
    RewardSource,
    SamplingParams,
)
from .batching import (  # noqa: E402
    TokenBatch, behaviour_logprobs, completion_logprobs, masked_mean, masked_whiten, pack, sequence_logprobs, tokenize,
    mismatch_metrics, tokenize_rollouts, truncated_is_weights,
)
from .chat import encode_prompt, prompt_text, prompt_turns, render_prompt  # noqa: E402
from .data import Dataset, load as load_dataset  # noqa: E402
from .errors import RunStopped, UserError  # noqa: E402
from .lora import merged_state_dict  # noqa: E402
from .models import load_model  # noqa: E402
from .recipe import DataRef, GeneratedData  # noqa: E402
from .rollout import generate_rollouts  # noqa: E402
from .roles import (  # noqa: E402
    bradley_terry_loss, last_token_index, load_scalar_model, pair_scores, scalar_model, score_rollouts,
    sequence_scores, token_values,
)
from .types import (  # noqa: E402
    BinaryFeedback,
    Demonstrations,
    Feedback,
    PairFeedback,
    Preference,
    Rollout,
    ScalarFeedback,
    Score,
    Scored,
)

__version__ = "0.1.0"

__all__ = [
    "hookimpl", "Backend", "Generation", "Logger", "Models", "Optimizer", "Plugin", "PluginContext",
    "PluginOptions", "RewardSource", "SamplingParams", "TokenBatch", "masked_mean", "masked_whiten", "pack",
    "sequence_logprobs", "completion_logprobs", "behaviour_logprobs", "truncated_is_weights", "mismatch_metrics",
    "merged_state_dict",
    "bradley_terry_loss", "pair_scores", "score_rollouts",
    "tokenize", "tokenize_rollouts", "Dataset", "load_dataset", "RunStopped", "UserError", "BinaryFeedback", "Demonstrations", "Feedback", "PairFeedback",
    "Preference", "Rollout", "ScalarFeedback", "Score", "Scored", "DataRef", "GeneratedData",
    "render_prompt", "encode_prompt", "prompt_text", "prompt_turns",
    "last_token_index", "load_scalar_model", "scalar_model", "load_model", "generate_rollouts", "sequence_scores", "token_values",
]
