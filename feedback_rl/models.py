"""Public: loading models, and scalar models (reward models, critics) built on a policy's trunk."""
from feedback_rl.modeling.loading import context_length, load_model
from feedback_rl.modeling.lora import merged_state_dict
from feedback_rl.modeling.roles import (
    load_scalar_model, pair_scores, pairwise_accuracy, scalar_model, score_rollouts, sequence_scores, token_values,
)
from feedback_rl.loop.rollout import stop_token_ids

__all__ = ["load_model", "context_length", "merged_state_dict", "stop_token_ids", "scalar_model",
           "load_scalar_model", "sequence_scores", "pair_scores", "pairwise_accuracy", "score_rollouts",
           "token_values"]
