"""Model roles: the engine builds each role an optimizer asks for, once per stage.

- ``reference``: the stage's starting policy, frozen (none is built when not asked for, e.g. GRPO
  with beta 0); for a LoRA policy, the policy itself with its adapter switched off (the base model),
  so no second copy of the weights exists;
- ``critic``: a copy of the policy's trunk with a scalar value head (PPO's default);
- ``critic:shared``: a value head on the policy's own trunk (fewer weights; the value loss also
  moves the policy's trunk);
- ``reward_model``: a trainable copy of the policy's trunk with a scalar head, an HF
  ``...ForSequenceClassification`` model with one label, so ``save_pretrained`` writes a folder that
  ``AutoModelForSequenceClassification.from_pretrained`` loads.

A scalar model is read token by token (:func:`token_values`). A sequence's score is the value at its
last real token, found from the attention mask, never from the pad id: HF's own sequence
classifiers look for the last token that is not the pad id, which is wrong when the pad id is also
the EOS that ends every completion (the tiny model's tokenizer, and many others, pad with EOS).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from feedback_rl.base import Models
from feedback_rl.modeling.batching import TokenBatch, pack, pad_id, position_ids, split_pairs
from feedback_rl.modeling import lora, packing
from feedback_rl.errors import UserError
from feedback_rl.modeling.loading import context_length, frozen_copy
from feedback_rl.modeling.vocab import tokenizer_difference

ROLES = {"reference", "critic", "critic:shared", "reward_model"}


def build_models(roles: set[str], policy: torch.nn.Module, tokenizer: Any) -> Models:
    """The policy plus each requested role."""
    if unknown := set(roles) - ROLES:
        raise ValueError(f"unknown model role(s) {sorted(unknown)}; known: {sorted(ROLES)}")
    models = Models(policy=policy, tokenizer=tokenizer)
    if "reference" in roles:
        models.reference = lora.AdapterOff(policy) if lora.is_lora(policy) else frozen_copy(policy)
        # the base is the stage's start: the engine folds an earlier stage's adapter in before a stage
    if "critic" in roles:
        models.critic = scalar_model(policy, pad_id(tokenizer))
    elif "critic:shared" in roles:
        models.critic = SharedValueHead(policy)
    if "reward_model" in roles:
        models.reward_model = scalar_model(policy, pad_id(tokenizer))
    return models


def scalar_model(policy: torch.nn.Module, pad_token_id: int | None = None) -> torch.nn.Module:
    """A sequence-classification model (one label) with a copy of the policy's trunk and a fresh head.

    For a LoRA policy the copy is the plain trunk with the adapter folded in (the current policy)."""
    from transformers import AutoModelForSequenceClassification
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    model = AutoModelForSequenceClassification.from_config(config)
    model.base_model.load_state_dict(lora.merged_state_dict(lora.plain_trunk(policy)))
    _init_head(_head(model))
    p = next(policy.parameters())
    return model.to(device=p.device, dtype=p.dtype)


class SharedValueHead(torch.nn.Module):
    """A value head on the policy's own trunk. The trunk is not registered as a submodule, so its
    weights are trained once, through the policy, and not listed twice in the optimizer."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "_policy", policy)
        p = next(policy.parameters())
        self.score = torch.nn.Linear(policy.config.hidden_size, 1, device=p.device, dtype=p.dtype)
        _init_head(self.score)

    @property
    def base_model(self) -> torch.nn.Module:
        return lora.plain_trunk(self._policy)  # with LoRA: the trunk with its adapter active


def _init_head(head: torch.nn.Linear) -> None:
    # small and centred, as in OpenAI's lm-human-preferences and TRL: scores start near 0
    torch.nn.init.normal_(head.weight, std=1 / math.sqrt(head.in_features + 1))
    if head.bias is not None:
        torch.nn.init.zeros_(head.bias)


def _head(model: torch.nn.Module) -> torch.nn.Linear:
    for name in ("score", "classifier"):  # decoder models name it `score`, encoders `classifier`
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise TypeError(f"{type(model).__name__} has no linear `score` head")


def token_values(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """The scalar head read at every position, ``[B, T]`` (position t has seen tokens 0..t); padded
    positions read 0 when the trunk ran on packed rows (``train.padding_free``)."""
    rows = packing.rows_for(model, _hidden, batch.input_ids, batch.attention_mask)
    if rows is None:
        hidden = _hidden(model, batch.input_ids, batch.attention_mask, position_ids(batch.attention_mask))
        return _head(model)(hidden).squeeze(-1).float()
    return rows.scatter(_head(model)(_hidden(model, rows.input_ids, None, rows.position_ids)).squeeze(-1).float())


def _hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            position_ids: torch.Tensor) -> torch.Tensor:
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False)[0]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, from the mask alone (works for left and right padding)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def sequence_scores(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """One score per sequence, ``[B]``: the head's value at the last real token."""
    values = token_values(model, batch)
    return values.gather(1, last_token_index(batch.attention_mask).unsqueeze(1)).squeeze(1)


def load_scalar_model(path: str | Path, device: Any = "cpu", tokenizer: Any = None) -> torch.nn.Module:
    """A saved reward model (an HF sequence-classification folder), frozen, in eval mode.

    ``tokenizer``: the tokenizer whose ids the model will read (the policy's); the folder's own tokenizer
    must read every id the same way, or the model is refused (it would score other tokens than sampled)."""
    from transformers import AutoModelForSequenceClassification
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a reward model from '{path}': {str(e).splitlines()[0]}") from None
    if model.config.num_labels != 1:
        raise UserError(f"'{path}' is a classifier with {model.config.num_labels} labels; a reward model has 1")
    if tokenizer is not None:
        check_shared_tokenizer(path, tokenizer, "reward model")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_shared_tokenizer(path: str | Path, tokenizer: Any, what: str) -> None:
    """Refuse (one line) the model at ``path`` unless the tokenizer saved with it reads ids as ``tokenizer``."""
    from transformers import AutoTokenizer
    saved = any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    # without those files, transformers may build a default tokenizer for the model type: not the model's
    try:
        own = AutoTokenizer.from_pretrained(str(path)) if saved else None
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"'{path}': cannot read the tokenizer saved with the {what}: {str(e).splitlines()[0]}") \
            from None
    if own is None:
        raise UserError(f"'{path}': no tokenizer saved with the {what}, so nothing shows it reads the policy's "
                        "token ids; save the tokenizer it was trained with in that folder")
    if difference := tokenizer_difference(tokenizer, own, ("the policy's", f"the {what}'s")):
        raise UserError(f"'{path}': the {what}'s tokenizer is not the policy's, so it would read the policy's "
                        f"token ids as other tokens: {difference}")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over the pairs."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def pair_scores(model: torch.nn.Module, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of a batch of chosen rows stacked on rejected rows: one forward for both."""
    return split_pairs(sequence_scores(model, tokens))


@torch.no_grad()
def pairwise_accuracy(model: torch.nn.Module, pairs: Any, tokenizer: Any, batch_size: int = 64) -> float:
    """Share of a :class:`PairFeedback`'s pairs the scalar model scores chosen above rejected."""
    from feedback_rl.modeling.batching import pair_batch
    from feedback_rl.types import PairFeedback
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    right = 0
    for start in range(0, len(pairs), batch_size):
        part = PairFeedback(pairs.chosen[start: start + batch_size], pairs.rejected[start: start + batch_size])
        chosen, rejected = pair_scores(model, pair_batch(part, tokenizer).to(device))
        right += int((chosen > rejected).sum())
    model.train(was_training)
    return right / max(1, len(pairs))


@torch.no_grad()
def score_rollouts(model: torch.nn.Module, rollouts: list, batch_size: int = 32) -> list:
    """A scalar model's :class:`Score` for each rollout, read from the rollout's own token ids (no
    re-tokenization); an error for a rollout the model cannot read (empty, out of its vocabulary or
    past its context)."""
    from feedback_rl.types import Score
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    limit = context_length(model.config)
    out: list = [None] * len(rollouts)
    fit = []
    for k, r in enumerate(rollouts):
        ids = list(r.prompt_ids) + list(r.completion_ids)
        if not ids:
            out[k] = Score.error("empty rollout")
        elif max(ids) >= vocab:
            out[k] = Score.error(f"token id {max(ids)} is outside the reward model's vocabulary ({vocab})")
        elif limit and len(ids) > limit:
            out[k] = Score.error(f"rollout is {len(ids)} tokens; the reward model reads at most {limit}")
        else:
            fit.append(k)
    for start in range(0, len(fit), batch_size):
        part = fit[start: start + batch_size]
        # the pad id is irrelevant: the last real token comes from the attention mask
        tokens = pack([rollouts[k].prompt_ids for k in part], [rollouts[k].completion_ids for k in part], 0)
        for k, s in zip(part, sequence_scores(model, tokens.to(device)).tolist()):
            out[k] = Score.ok(s)
    return out
