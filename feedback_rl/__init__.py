"""feedback_rl: train language models from feedback.

This module is the public API: what a plugin may import (docs/plugins.md describes each name). A
plugin imports nothing else from the core, and nothing from another plugin.
"""
from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("feedback_rl")

from feedback_rl.base import (  # noqa: E402
    Backend, Environment, EnvironmentOptions, Episode, Generation, LengthLimited, Logger, Models, Optimizer, Plugin,
    PluginContext, PluginOptions, Reply, RewardSource, SamplingParams,
)
from feedback_rl.episodes.play import Transcript, play  # noqa: E402
from feedback_rl.episodes.sandbox import ToolResult, answer_calls, run_tool, tool_messages  # noqa: E402
from feedback_rl.episodes.tool_calls import ToolCall, parse_tool_calls  # noqa: E402
from feedback_rl.episodes.tools import Tool, tool  # noqa: E402
from feedback_rl.modeling.batching import (  # noqa: E402
    TokenBatch, behaviour_logprobs, completion_logprobs, masked_mean, masked_whiten, pack, pad_id, pair_batch, position_ids,
    rollout_batch, sequence_logprobs, split_pairs,
)
from feedback_rl.modeling.chat import encode_prompt, prompt_text, prompt_turns, render_prompt  # noqa: E402
from feedback_rl.rows.dataset import TEXT_OR_TURNS, Dataset, Turns, load as load_dataset  # noqa: E402
from feedback_rl.rows.datasources import DataSource  # noqa: E402
from feedback_rl.errors import RunStopped, UserError, did_you_mean  # noqa: E402
from feedback_rl.loop.feedback import candidate_pairs, encode_text_rollouts, from_rows as feedback_from_rows, to_pairs  # noqa: E402
from feedback_rl.modeling.lora import merged_state_dict  # noqa: E402
from feedback_rl.modeling.loading import context_length, load_model  # noqa: E402
from feedback_rl.loop.policy_gradient import (  # noqa: E402
    backend_correction, clipped_surrogate, effective_is_cap, is_cap_option, mismatch_metrics, truncated_is_weights,
)
from feedback_rl.config.recipe import DataRef, GeneratedData, SourcedData  # noqa: E402
from feedback_rl.loop.rollout import generate_rollouts, stop_token_ids  # noqa: E402
from feedback_rl.modeling.roles import (  # noqa: E402
    bradley_terry_loss, last_token_index, load_scalar_model, pair_scores, pairwise_accuracy, scalar_model,
    score_rollouts, sequence_scores, token_values,
)
from feedback_rl.types import (  # noqa: E402
    BinaryFeedback, Demonstrations, Feedback, Judgment, PairFeedback, Preference, Rating, Rollout, ScalarFeedback,
    Score, Scored,
)

__version__ = "0.1.0"

__all__ = [
    # writing a plugin
    "hookimpl", "Plugin", "PluginOptions", "LengthLimited", "PluginContext", "UserError", "RunStopped",
    "did_you_mean",
    "RewardSource", "Optimizer", "Backend", "Logger", "Models", "SamplingParams", "Generation",
    # environments and tools
    "Environment", "EnvironmentOptions", "Episode", "Reply", "Tool", "tool", "ToolCall", "parse_tool_calls",
    "ToolResult", "run_tool", "answer_calls", "tool_messages", "Transcript", "play",
    # what flows through the loop
    "Rollout", "Score", "Preference", "Rating", "Judgment", "Scored",
    "Feedback", "ScalarFeedback", "PairFeedback", "BinaryFeedback", "Demonstrations",
    "feedback_from_rows", "to_pairs", "candidate_pairs", "encode_text_rollouts",
    # data and prompts
    "Dataset", "Turns", "TEXT_OR_TURNS", "load_dataset", "DataRef", "GeneratedData", "SourcedData", "DataSource", "render_prompt", "encode_prompt", "prompt_text",
    "prompt_turns",
    # token batches and log-probs
    "TokenBatch", "pack", "pad_id", "position_ids", "rollout_batch", "pair_batch", "split_pairs", "sequence_logprobs",
    "completion_logprobs", "behaviour_logprobs", "masked_mean", "masked_whiten",
    # shared loss math
    "clipped_surrogate", "effective_is_cap", "is_cap_option", "backend_correction", "truncated_is_weights", "mismatch_metrics",
    "bradley_terry_loss",
    # models and roles
    "load_model", "context_length", "generate_rollouts", "stop_token_ids", "merged_state_dict", "scalar_model", "load_scalar_model",
    "score_rollouts", "sequence_scores", "pair_scores", "pairwise_accuracy", "token_values", "last_token_index",
]
