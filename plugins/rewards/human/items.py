"""What a queue item keeps of the rollouts it shows, and the rollouts a label gives back.

The source writes an item's ``meta`` when it enqueues rollouts; the source (labels -> judgments) and
the refitted reward model (labels -> pairs) both read it back here, so neither imports the other.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from feedback_rl import Rollout
from feedback_rl.data import prompt_turns

from .store import Label


def vocabulary(tokenizer: Any) -> str | None:
    """A short fingerprint of how ``tokenizer`` reads ids (its token -> id map and special tokens)."""
    if tokenizer is None:
        return None
    specials = [getattr(tokenizer, f"{n}_token_id", None) for n in ("bos", "eos", "unk")]
    text = json.dumps([sorted(tokenizer.get_vocab().items()), specials])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def item_meta(a: Rollout, b: Rollout | None = None, vocab: str | None = None) -> dict:
    """The rollouts' token ids and row, kept with the item so that a label trains on what was sampled;
    each side's behaviour log-probs and policy version too, so a label that arrives updates later is
    importance-weighted against the policy that sampled it. ``vocab``: the sampling tokenizer's
    :func:`vocabulary`, so that a database shared with another policy never mixes two tokenizers' ids."""
    row = {k: v for k, v in a.row.items() if isinstance(v, (str, int, float, bool))}
    meta = {"row": row, "prompt_ids": a.prompt_ids, **_side(a, "")}
    if vocab is not None:
        meta["vocab"] = vocab
    if b is not None:
        meta.update(_side(b, "_b"))
    if isinstance(a.row.get("prompt"), list):  # the labeling app shows a conversation's turns
        meta["turns"] = prompt_turns(a.row["prompt"])
    for r, side in ((a, "a"), (b, "b")):  # and an episode's: the model's turns and the environment's, with roles
        if r is not None and r.episode is not None:
            meta[f"{side}_turns"] = r.turns
    return meta


def label_rollouts(x: Label, vocab: str | None = None) -> tuple[Rollout, Rollout | None]:
    """The rollouts a label judges, with the token ids, behaviour log-probs and policy version they were
    sampled with (kept with the item). An item imported from a file has text only: the core encodes it,
    and without log-probs the core treats its rollout on its own. So is an item sampled with another
    tokenizer than ``vocab`` (a :func:`vocabulary`): its ids would mean other tokens here."""
    meta = x.meta
    if vocab is not None and meta.get("vocab", vocab) != vocab:
        meta = {k: v for k, v in meta.items() if k in ("row", "turns", "a_turns", "b_turns")}
    common = dict(prompt=x.prompt, row=meta.get("row", {}), group=0, prompt_ids=list(meta.get("prompt_ids", [])))
    a = Rollout(completion=x.a, uid=f"item-{x.item_id}-a", **common, **_rebuilt(meta, ""))
    b = None if x.b is None else Rollout(completion=x.b, uid=f"item-{x.item_id}-b", **common, **_rebuilt(meta, "_b"))
    return a, b


def _side(r: Rollout, suffix: str) -> dict:
    """One completion's part of the meta; floats in JSON round-trip a float32 exactly."""
    out = {f"completion_ids{suffix}": r.completion_ids, f"policy_version{suffix}": r.policy_version,
           f"logprobs{suffix}": None if r.logprobs is None else r.logprobs.detach().float().cpu().tolist()}
    if r.completion_mask is not None:
        out[f"completion_mask{suffix}"] = list(r.completion_mask)
    if r.segments:   # a split episode's later segments: the label trains them too
        out[f"segments{suffix}"] = [{"prompt_ids": list(x.prompt_ids), **_side(x, "")} for x in r.segments]
    return out


def _rebuilt(meta: dict, suffix: str) -> dict:
    logprobs = meta.get(f"logprobs{suffix}")
    mask = meta.get(f"completion_mask{suffix}")
    # items stored before each side kept its own version carry side A's for both
    version = meta.get(f"policy_version{suffix}", meta.get("policy_version", 0))
    return {"completion_ids": list(meta.get(f"completion_ids{suffix}", [])), "policy_version": version,
            "logprobs": None if logprobs is None else torch.tensor(logprobs, dtype=torch.float32),
            "completion_mask": None if mask is None else list(mask),
            "segments": [Rollout(prompt="", completion="", row=meta.get("row", {}), group=0,
                                 prompt_ids=list(seg["prompt_ids"]), **_rebuilt(seg, ""))
                         for seg in meta.get(f"segments{suffix}", ())]}
