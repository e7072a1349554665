"""SFT: cross-entropy on the completion tokens only (the prompt is context, not a target)."""
from __future__ import annotations

import torch

from feedback_rl import LengthLimited, Optimizer, hookimpl
from feedback_rl.tokens import masked_mean, sequence_logprobs


def sft_loss(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the completion tokens of the batch."""
    return -masked_mean(logps, mask)


class SFT(Optimizer):
    name = "sft"
    feedback = "demonstrations"

    Options = LengthLimited

    def prepare(self, batch, models):
        return batch.tokens

    def loss(self, batch, models):
        logps = sequence_logprobs(models.policy, batch)
        loss = sft_loss(logps, batch.target_mask)
        return loss, {"nll": loss.item(), "tokens": float(batch.target_mask.sum())}


@hookimpl
def frl_register_optimizers(register):
    register(SFT)
