"""Policy-gradient math that GRPO and PPO share: the clipped surrogate.

The importance weights against the behaviour distribution are not here: the core computes them once per
batch (``feedback_rl/loop/batch.py``, ``loop/importance.py``) and hands them to the optimizer.
"""
from __future__ import annotations

import torch


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = exp(logp -
    old)``, and whether each token was clipped. ``advantages`` broadcasts: ``[B, 1]`` (one per sequence,
    GRPO) or ``[B, T]`` (per token, PPO)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).float()
