"""What a queue item keeps of the rollouts it shows, and the rollouts a label gives back.

The source writes an item's ``meta`` when it enqueues rollouts; the source (labels -> judgments) and
the refitted reward model (labels -> pairs) both read it back here, so neither imports the other.
"""
from __future__ import annotations

from feedback_rl import Rollout, prompt_turns

from .store import Label


def item_meta(a: Rollout, b: Rollout | None = None) -> dict:
    """The rollouts' token ids and row, kept with the item so that a label trains on what was sampled."""
    row = {k: v for k, v in a.row.items() if isinstance(v, (str, int, float, bool))}
    meta = {"row": row, "prompt_ids": a.prompt_ids, "completion_ids": a.completion_ids,
            "policy_version": a.policy_version}
    if b is not None:
        meta["completion_ids_b"] = b.completion_ids
    if isinstance(a.row.get("prompt"), list):  # the labeling app shows a conversation's turns
        meta["turns"] = prompt_turns(a.row["prompt"])
    return meta


def label_rollouts(x: Label) -> tuple[Rollout, Rollout | None]:
    """The rollouts a label judges, with the token ids they were sampled with (kept with the item; an
    item imported from a file has text only, and the core encodes it)."""
    meta = x.meta
    common = dict(prompt=x.prompt, row=meta.get("row", {}), group=0, prompt_ids=list(meta.get("prompt_ids", [])),
                  policy_version=meta.get("policy_version", 0))
    a = Rollout(completion=x.a, completion_ids=list(meta.get("completion_ids", [])), uid=f"item-{x.item_id}-a",
                **common)
    b = None if x.b is None else Rollout(completion=x.b, completion_ids=list(meta.get("completion_ids_b", [])),
                                         uid=f"item-{x.item_id}-b", **common)
    return a, b
