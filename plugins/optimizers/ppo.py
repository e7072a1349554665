"""PPO for language models (Ziegler et al. 2019, InstructGPT), with a learned critic.

Each completion token is an action. The reward is the rollout's score at its last token, minus
``kl_coef * (log pi_old - log ref)`` at every token: the KL penalty to the frozen reference folded
into the reward. ``kl_coef`` is fixed, or adapted towards ``target_kl`` (nats per sequence) by the
proportional controller of Ziegler et al. (TRL's AdaptiveKLController). Advantages come from GAE
over the critic's values; the policy loss is PPO's clipped surrogate, the value loss is clipped
around the old values. ``ptx_coef`` mixes in the LM loss on a dataset (InstructGPT's PPO-ptx).

The backend may score tokens slightly differently from the trainer (vLLM above all), and rollouts may
train an update after they were sampled: the core hands the truncated importance weights with the batch
(``rollout.is_cap``; on by default under ``rollout.overlap``) and PPO multiplies each token's policy loss
by them.

An episode its chat template split over several rows (``Rollout.segments``) is still one trajectory: its score
sits at the last token of its last row, and GAE runs on from each row into the row continuing it
(:func:`episode_gae`), as over one sequence (the critic values each segment on its own prompt).

Token alignment: log-probs are ``[B, T-1]`` (position t predicts token t+1); the value at position
t has read tokens 0..t, so ``values[:, :-1]`` is the value of the state each log-prob acts from.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import Optimizer, PluginOptions, UserError, hookimpl
from feedback_rl.data import DataRef, feedback_from_rows, load_dataset
from feedback_rl.losses import clipped_surrogate
from feedback_rl.models import token_values
from feedback_rl.tokens import TokenBatch, last_token_index, masked_mean, masked_whiten, sequence_logprobs


# ------------------------------------------------------------------ the math, tested alone
def kl_penalised_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-kl_coef * kl`` plus each score at the row's last masked token; and the kl."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = last_token_index(mask)
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float, next_value: torch.Tensor | None = None,
        next_advantage: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over the masked-in tokens only. A masked position
    (an environment's tokens between two sampled turns, padding) is not a step: the next value is the
    next masked-in token's, and no ``gamma * lam`` accrues across the hole. Past the last masked-in
    token the value is 0 (the episode ended), or ``next_value`` ``[B]`` with the estimate running on from
    ``next_advantage`` (a row another row continues); a truncated completion is treated as ended."""
    steps = mask.bool()
    values = values * mask
    rewards = rewards * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0]) if next_advantage is None else next_advantage
    next_value = torch.zeros_like(rewards[:, 0]) if next_value is None else next_value
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # a masked position carries the running estimate and the next value through unchanged
        running = torch.where(steps[:, t], delta + gamma * lam * running, running)
        next_value = torch.where(steps[:, t], values[:, t], next_value)
        adv[:, t] = running
    adv = adv * mask
    return adv, adv + values


def episode_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
                next_segment: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gae` over episodes that may span several rows: row ``next_segment[i]`` (-1: none) continues row
    ``i``, which starts its estimate from that row's first masked-in token, as if the two were one sequence.
    Rows are done last segment first."""
    if next_segment is None:
        return gae(rewards, values, mask, gamma, lam)
    following = next_segment.tolist()
    depth = [0] * len(following)   # rows after this one in its episode
    for i in reversed(range(len(following))):   # a row's continuation comes after it in the batch
        depth[i] = 0 if following[i] < 0 else depth[following[i]] + 1
    first = mask.argmax(-1)   # each row's first masked-in token
    adv, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    nxt = next_segment.clamp(min=0)
    for d in range(max(depth) + 1):
        rows = torch.tensor([i for i, x in enumerate(depth) if x == d], dtype=torch.long, device=rewards.device)
        has = next_segment[rows] >= 0
        at = (nxt[rows], first[nxt[rows]])
        a, r = gae(rewards[rows], values[rows], mask[rows], gamma, lam,
                   (values * mask)[at] * has, adv[at] * has)
        adv[rows], returns[rows] = a, r
    return adv, returns


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float, is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate ``mean(w * max(-A r, -A clip(r, 1-c, 1+c)))``, and the share of tokens
    clipped; ``w`` is the truncated importance weight against the backend (1 without correction)."""
    per_token, clipped = clipped_surrogate(logps, old_logps, advantages, clip, clip)
    if is_weights is not None:
        per_token = per_token * is_weights
    return masked_mean(per_token, mask), masked_mean(clipped, mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * mean(max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2))``, and the share clipped."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (v_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.max(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def ppo_objective(pg_loss: torch.Tensor, vf_loss: torch.Tensor, vf_coef: float,
                  ptx_loss: torch.Tensor | None = None, ptx_coef: float = 0.0) -> torch.Tensor:
    """``pg + vf_coef * vf`` (+ ``ptx_coef * ptx``, the LM loss on pretraining-like data: PPO-ptx)."""
    total = pg_loss + vf_coef * vf_loss
    return total if ptx_loss is None else total + ptx_coef * ptx_loss


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 is a perfect critic, <= 0 a useless one."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return float(1 - var_d / var_r) if var_r > 0 else float("nan")


class AdaptiveKLController:
    """Ziegler et al.: ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_coef, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon


# ------------------------------------------------------------------ the plugin
@dataclass
class PPOBatch:
    tokens: TokenBatch
    old_logps: torch.Tensor     # [B, T-1], the policy that generated (recomputed once, no grad)
    old_values: torch.Tensor    # [B, T-1]
    advantages: torch.Tensor    # [B, T-1]
    returns: torch.Tensor       # [B, T-1]
    is_weights: torch.Tensor    # [B, T-1], the core's truncated IS weights against the backend (ones when off)

    def select(self, index: torch.Tensor) -> "PPOBatch":
        return PPOBatch(*(getattr(self, f.name)[index] if f.name != "tokens" else self.tokens.select(index)
                          for f in fields(self)))


class PPO(Optimizer):
    name = "ppo"
    feedback = "scalar"
    importance_weighted = True
    trains_segments = True

    class Options(PluginOptions):
        critic: Literal["separate", "shared"] = Field("separate", description="value head on its own copy "
                                                      "of the model, or on the policy's trunk")
        kl_coef: float = Field(0.05, ge=0.0, description="KL penalty weight (initial value when adaptive)")
        target_kl: float | None = Field(None, gt=0.0, description="adapt kl_coef towards this KL per sequence")
        horizon: int = Field(10000, ge=1, description="adaptive KL: rollouts over which to correct the error")
        gamma: float = Field(1.0, ge=0.0, le=1.0)
        lam: float = Field(0.95, ge=0.0, le=1.0)
        cliprange: float = Field(0.2, gt=0.0)
        cliprange_value: float = Field(0.2, gt=0.0)
        vf_coef: float = Field(0.1, ge=0.0)
        ppo_epochs: int = Field(4, ge=1, description="passes over each batch of rollouts")
        num_minibatches: int = Field(1, ge=1, description="optimizer steps per pass")
        missing_eos_penalty: float | None = Field(None, ge=0.0, description="subtract from the score of a "
                                                  "completion cut at max_new_tokens (before whitening)")
        whiten_rewards: bool = Field(False, description="z-score the scores over the batch")
        reward_clip: float | None = Field(None, gt=0.0, description="clip scores to [-c, c] (after whitening)")
        whiten_advantages: bool = True
        ptx_data: DataRef | None = Field(None, description="dataset of prompt/completion rows for PPO-ptx")
        ptx_coef: float = Field(0.0, ge=0.0)
        ptx_batch_size: int = Field(8, ge=1)

    @classmethod
    def check_stage(cls, stage, options):
        if options.target_kl is not None and options.kl_coef == 0:
            return ("optimizer", "kl_coef"), "an adaptive KL (target_kl) needs a starting kl_coef above 0"
        if (options.ptx_coef > 0) != (options.ptx_data is not None):
            return ("optimizer", "ptx_data"), "PPO-ptx needs both ptx_data and a ptx_coef above 0"
        return None

    def __init__(self, options, context):
        super().__init__(options, context)
        o = self.options
        self.kl_ctl = AdaptiveKLController(o.kl_coef, o.target_kl or 1.0, o.horizon)
        self._ptx = None
        if o.ptx_data is not None:
            try:
                self._ptx = load_dataset(o.ptx_data, context.recipe_dir)
            except KeyError as e:
                raise UserError(f"stage '{context.stage}': optimizer.ptx_data: unknown generator {e}") from None
            self._ptx.require({"prompt": str, "completion": str}, "ppo ptx_data")
        self._rng = random.Random(context.seed)
        self._stats: dict[str, float] = {}
        self._batch_size = 0
        self._batch = None   # this step's batch: PPO-ptx packs its rows on the same device

    def roles(self):
        critic = "critic" if self.options.critic == "separate" else "critic:shared"
        return {critic, "reference"} if self.options.kl_coef > 0 else {critic}

    def old_logprobs(self):
        return True

    def rows_per_forward(self, rows):
        return math.ceil(rows / self.options.num_minibatches)

    def state_dict(self):
        return {"kl_coef": self.kl_ctl.value, "rng": self._rng.getstate()}

    def load_state_dict(self, state):
        self.kl_ctl.value = state["kl_coef"]
        self._rng.setstate(state["rng"])

    def prepare(self, batch, models):
        o = self.options
        self._batch = batch
        tokens, logps = batch.tokens, batch.old_logps
        mask = tokens.target_mask
        scores = batch.rewards
        if o.missing_eos_penalty is not None:  # a reward model often scores unfinished text well: a known hack
            scores = scores - o.missing_eos_penalty * batch.truncated.float()
        if o.whiten_rewards and len(scores) > 1:
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)
        if o.reward_clip is not None:
            scores = scores.clamp(-o.reward_clip, o.reward_clip)
        with torch.no_grad():
            ref = (sequence_logprobs(models.reference, tokens, batch.temperature)
                   if models.reference is not None else logps)
            values = token_values(models.critic, tokens)[:, :-1] * mask
        # an episode's score at the end of its last row (a split episode's earlier rows end on 0)
        ends = tokens.next_segment < 0 if tokens.next_segment is not None else torch.ones_like(mask[:, 0]).bool()
        rewards, kl = kl_penalised_rewards(tokens.spread(scores) * ends, logps, ref, mask, self.kl_ctl.value)
        adv, returns = episode_gae(rewards, values, mask, o.gamma, o.lam, tokens.next_segment)
        if o.whiten_advantages:
            adv = masked_whiten(adv, mask) * mask
        seq_kl = tokens.per_episode(kl.sum(-1))
        self._stats = {"kl/sequence": float(seq_kl.mean()), "kl/token": float(masked_mean(kl, mask)),
                       "kl_coef": self.kl_ctl.value,
                       "score/mean": float(batch.rewards.mean()), "returns_mean": float(masked_mean(returns, mask)),
                       "explained_variance": explained_variance(values, returns, mask),
                       "non_score_reward": float((-self.kl_ctl.value * seq_kl).mean())}
        weights = batch.is_weights if batch.is_weights is not None else torch.ones_like(logps)
        self._batch_size = len(batch)
        return PPOBatch(tokens, logps, values, adv, returns, weights)

    def minibatches(self, prepared):
        n = len(prepared.tokens)
        size = math.ceil(n / self.options.num_minibatches)
        for _ in range(self.options.ppo_epochs):
            order = self._rng.sample(range(n), n)
            for start in range(0, n, size):
                yield prepared.select(order[start: start + size])

    def loss(self, batch, models):
        o = self.options
        mask = batch.tokens.target_mask
        models.critic.train()
        logps, entropy = sequence_logprobs(models.policy, batch.tokens, self.context.sampling.temperature,
                                           with_entropy=True)
        values = token_values(models.critic, batch.tokens)[:, :-1]
        pg, pg_clip = policy_loss(logps, batch.old_logps, batch.advantages, mask, o.cliprange, batch.is_weights)
        vf, vf_clip = value_loss(values, batch.old_values, batch.returns, mask, o.cliprange_value)
        ptx = self._ptx_loss(models) if self._ptx is not None else None
        loss = ppo_objective(pg, vf, o.vf_coef, ptx, o.ptx_coef)
        metrics = {**self._stats, "policy_loss": pg.item(), "value_loss": vf.item(), "clipfrac": pg_clip.item(),
                   "vf_clipfrac": vf_clip.item(), "entropy": masked_mean(entropy, mask).item(),
                   "approx_kl_old": masked_mean(0.5 * (logps.detach() - batch.old_logps) ** 2, mask).item()}
        if ptx is not None:
            metrics["ptx_loss"] = ptx.item()
        return loss, metrics

    def _ptx_loss(self, models) -> torch.Tensor:
        k = min(len(self._ptx), self.options.ptx_batch_size)
        rows = [self._ptx[i] for i in self._rng.sample(range(len(self._ptx)), k)]
        demos = feedback_from_rows("demonstrations", rows, models.tokenizer, self.context.system_prompt)
        tokens = self._batch.pack(demos.rollouts)
        return -masked_mean(sequence_logprobs(models.policy, tokens), tokens.target_mask)

    def after_step(self, metrics):
        if self.options.target_kl is not None and "kl/sequence" in metrics:
            self.kl_ctl.update(metrics["kl/sequence"], self._batch_size)


@hookimpl
def frl_register_optimizers(register):
    register(PPO)
