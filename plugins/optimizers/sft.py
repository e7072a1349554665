"""SFT: cross-entropy on the completion tokens only (the prompt is context, not a target)."""
from __future__ import annotations

import torch

from feedback_rl import Optimizer, PluginOptions, hookimpl, masked_mean, sequence_logprobs, tokenize


def sft_loss(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the completion tokens of the batch."""
    return -masked_mean(logps, mask)


class SFT(Optimizer):
    name = "sft"
    feedback = "demonstrations"

    class Options(PluginOptions):
        max_length: int | None = None

    def prepare(self, feedback, models):
        return tokenize(models.tokenizer, feedback.prompts, feedback.completions, max_length=self.options.max_length)

    def loss(self, batch, models):
        logps = sequence_logprobs(models.policy, batch)
        loss = sft_loss(logps, batch.target_mask)
        return loss, {"nll": loss.item(), "tokens": float(batch.target_mask.sum())}


@hookimpl
def frl_register_optimizers(register):
    register(SFT)
