"""DPO: learn from (prompt, chosen, rejected) pairs directly, with no reward model and no sampling.

The implicit reward of a completion is ``beta * (log pi(y|x) - log ref(y|x))`` (sequence log-probs,
summed over completion tokens). ``loss`` picks how the margin ``h`` between the chosen and the
rejected log-ratio is penalised:
- ``sigmoid``: ``-log sigmoid(beta h)`` (DPO); with ``label_smoothing`` e, the conservative cDPO
  ``-(1-e) log sigmoid(beta h) - e log sigmoid(-beta h)`` for labels that are wrong with probability e;
- ``hinge``:   ``max(0, 1 - beta h)`` (SLiC);
- ``ipo``:     ``(h - 1/(2 beta))^2`` (IPO), where each log-ratio is divided by its completion's
  token count, as TRL does (and the IPO authors confirmed), so the target margin ``1/(2 beta)``
  does not depend on length. The logged rewards stay un-normalised for every loss.

An episode its chat template split over several rows counts whole: its log-prob and its length are summed over
its rows (``completion_logprobs`` sums per episode).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from feedback_rl import LengthLimited, Optimizer, hookimpl
from feedback_rl.tokens import TokenBatch, completion_logprobs, split_pairs


def dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair loss from ``log pi - log ref`` of the chosen and of the rejected completion."""
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown DPO loss '{loss_type}'")


def pair_logps(model: torch.nn.Module, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of a batch of chosen rows stacked on rejected rows: one forward for both."""
    return split_pairs(completion_logprobs(model, tokens))


@dataclass
class DPOBatch:
    tokens: TokenBatch          # chosen rows, then rejected rows
    ref_chosen: torch.Tensor    # reference sequence log-probs, computed once per pair
    ref_rejected: torch.Tensor
    lengths: torch.Tensor       # completion tokens per row (chosen, then rejected), a split episode's summed


class DPO(Optimizer):
    name = "dpo"
    feedback = "pairs"
    trains_segments = True

    class Options(LengthLimited):
        beta: float = Field(0.1, gt=0.0, description="strength of the pull towards the reference")
        loss: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
        label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="cDPO: probability a label is wrong")

    @classmethod
    def check_stage(cls, stage, options):
        if options.label_smoothing > 0 and options.loss != "sigmoid":
            return ("optimizer", "label_smoothing"), f"label smoothing (cDPO) applies to the sigmoid loss only, " \
                                                     f"not to '{options.loss}'"
        return None

    def roles(self):
        return {"reference"}

    def prepare(self, batch, models):
        tokens = batch.tokens   # chosen rows, then rejected rows
        with torch.no_grad():
            ref_chosen, ref_rejected = pair_logps(models.reference, tokens)
        lengths = tokens.per_episode(tokens.target_mask.sum(-1)).clamp(min=1.0)
        return DPOBatch(tokens, ref_chosen, ref_rejected, lengths)

    def loss(self, batch, models):
        o = self.options
        chosen, rejected = pair_logps(models.policy, batch.tokens)
        chosen_lr, rejected_lr = chosen - batch.ref_chosen, rejected - batch.ref_rejected
        if o.loss == "ipo":
            n = len(chosen_lr)
            loss = dpo_loss(chosen_lr / batch.lengths[:n], rejected_lr / batch.lengths[n:], o.beta, "ipo").mean()
        else:
            loss = dpo_loss(chosen_lr, rejected_lr, o.beta, o.loss, o.label_smoothing).mean()
        r_chosen, r_rejected = o.beta * chosen_lr.detach(), o.beta * rejected_lr.detach()
        return loss, {"rewards/chosen": r_chosen.mean().item(), "rewards/rejected": r_rejected.mean().item(),
                      "rewards/accuracy": (r_chosen > r_rejected).float().mean().item(),
                      "rewards/margin": (r_chosen - r_rejected).mean().item()}


@hookimpl
def frl_register_optimizers(register):
    register(DPO)
