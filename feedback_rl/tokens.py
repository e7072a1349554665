"""Public: token batches and log-probs, for optimizers and backends.

Sequences are packed exactly as sampled (never decoded and tokenized again); positions come from the
attention mask. Per-token values are ``[B, T-1]`` (position t predicts token t+1), to be multiplied by
``TokenBatch.target_mask``.
"""
from feedback_rl.modeling.batching import (
    TokenBatch, completion_logprobs, masked_mean, masked_whiten, pack, pad_id, pair_batch, position_ids, rollout_batch,
    sequence_logprobs, split_pairs,
)
from feedback_rl.modeling.roles import last_token_index

__all__ = ["TokenBatch", "pack", "rollout_batch", "pair_batch", "pad_id", "position_ids", "split_pairs", "sequence_logprobs",
           "completion_logprobs", "masked_mean", "masked_whiten", "last_token_index"]
