"""Feedback: what an optimizer learns from, shaped in this one place from what reward sources judged.

An optimizer declares the shape it consumes:
- ``scalar``: rollouts with one reward each (GRPO, PPO);
- ``pairs``: a chosen and a rejected sequence of one prompt (DPO, reward-model training);
- ``binary``: sequences labelled desirable or undesirable (KTO);
- ``demonstrations``: dataset rows to imitate (SFT).

Sources return judgments only, of four kinds: ``scores`` (a :class:`Score` per rollout of the step,
mixed into one reward), ``preferences`` (a :class:`Preference` per pair, judged directly), and, from
asynchronous sources, late ``values`` and ``labels`` (a :class:`Rating` of a rollout of an earlier step).
What each shape is (the kinds that can build it, the columns an offline row needs, the token sequences one
of its items trains on) is declared in config/shapes.py, which the recipe check reads; here they are built.

Every item carries token ids: live items the ids the policy sampled, with its behaviour log-probs;
offline rows are encoded once, here. Nothing is decoded and tokenized again.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from feedback_rl.modeling.chat import encode_example
from feedback_rl.modeling.chat import extract_prompt
from feedback_rl.types import BinaryFeedback, Demonstrations, Feedback, PairFeedback, Preference, Rating, Rollout, \
    ScalarFeedback, Scored

OFFLINE = -1
"""The policy version of an offline row: no policy sampled it."""


# --------------------------------------------------------------------------- offline rows

def from_rows(shape: str, rows: list[dict], tokenizer: Any, system_prompt: str | None = None) -> Feedback:
    """Offline feedback straight from dataset rows (a stage without reward sources), encoded once."""
    if shape == "scalar":
        raise ValueError("scalar feedback needs reward sources")

    def encode(k: int, row: dict, prompt: Any, completion: Any) -> Rollout:
        enc = encode_example(tokenizer, prompt, completion, system_prompt, tools=row.get("tools"))
        return Rollout(prompt=enc.prompt_text, completion=completion if isinstance(completion, str) else "",
                       row=row, group=k, prompt_ids=enc.prompt_ids, completion_ids=enc.completion_ids,
                       completion_mask=enc.completion_mask, uid=f"row-{k}", policy_version=OFFLINE)

    if shape == "demonstrations":  # prompt + completion, or a whole conversation (loss on the assistant's turns)
        return Demonstrations([encode(k, r, r.get("prompt"), r["completion"] if "completion" in r else r["messages"])
                               for k, r in enumerate(rows)])
    if shape == "pairs":
        fb = PairFeedback()
        for k, r in enumerate(rows):
            prompt, chosen, rejected = r.get("prompt"), r["chosen"], r["rejected"]
            if prompt is None:  # TRL's implicit prompt: the turns chosen and rejected share
                prompt, chosen, rejected = extract_prompt(chosen, rejected)
            fb.chosen.append(encode(k, r, prompt, chosen))
            fb.rejected.append(encode(k, r, prompt, rejected))
            fb.margins.append(float(r.get("margin") or 0.0))  # a rating gap where the file has one (Llama 2)
        return fb
    return BinaryFeedback([encode(k, r, r.get("prompt"), r["completion"]) for k, r in enumerate(rows)],
                          [bool(r["label"]) for r in rows])


# --------------------------------------------------------------------------- the step's judgments

def build(shape: str, scored: list[Scored], preferences: list[Preference], late: list[Preference | Rating],
          pointwise: bool, tokenizer: Any, pair_min_margin: float = 0.0, binary_threshold: float = 0.5,
          system_prompt: str | None = None) -> Feedback:
    """The feedback of one step: this step's mixed scores (``pointwise``: some source scored one by one)
    and direct preferences, plus the judgments that arrived late from asynchronous sources."""
    encode_text_rollouts([r for j in late for r in ((j.a, j.b) if isinstance(j, Preference) else (j.rollout,))],
                         tokenizer, system_prompt)
    live_groups = [s.rollout.group for s in scored]
    late_prefs = [j for j in late if isinstance(j, Preference)]
    ratings = regroup([j for j in late if isinstance(j, Rating)], 1 + max(live_groups, default=-1))
    prefs = preferences + late_prefs
    if shape == "scalar":
        kept = [s for s in scored if s.reward is not None]
        valued = [r for r in ratings if r.value is not None]
        return ScalarFeedback([s.rollout for s in kept] + [r.rollout for r in valued],
                              torch.tensor([s.reward for s in kept] + [r.value for r in valued],
                                           dtype=torch.float32))
    if shape == "pairs":
        mixed = best_worst_pairs([(s.rollout, s.reward) for s in scored], pair_min_margin) if pointwise else []
        rated = best_worst_pairs([(r.rollout, r.value) for r in ratings], 0.0)
        return to_pairs(mixed + rated + prefs)
    if shape == "binary":
        fb = BinaryFeedback()
        if pointwise:
            for s in scored:
                if s.reward is not None:
                    fb.rollouts.append(s.rollout)
                    fb.desirable.append(s.reward >= binary_threshold)
        for p in prefs:
            if p.winner is not None:
                win, lose = (p.a, p.b) if p.winner == 0 else (p.b, p.a)
                fb.rollouts += [win, lose]
                fb.desirable += [True, False]
        for r in ratings:
            if r.desirable is not None:
                fb.rollouts.append(r.rollout)
                fb.desirable.append(r.desirable)
        return fb
    raise ValueError(f"feedback shape '{shape}' cannot come from reward sources")


def regroup(ratings: list[Rating], first: int) -> list[Rating]:
    """Late ratings of the same prompt form a group of their own, numbered from ``first``: past every
    group of the live step, so a group-relative advantage never compares unrelated prompts."""
    ids: dict[Any, int] = {}
    for r in ratings:
        key = tuple(r.rollout.prompt_ids) or r.rollout.prompt
        r.rollout.group = ids.setdefault(key, first + len(ids))
    return ratings


def best_worst_pairs(valued: list[tuple[Rollout, float | None]], min_margin: float = 0.0) -> list[Preference]:
    """Per prompt group, the best against the worst when they differ by at least ``min_margin`` (> 0)."""
    groups: dict[int, list[tuple[Rollout, float]]] = defaultdict(list)
    for rollout, value in valued:
        if value is not None:
            groups[rollout.group].append((rollout, value))
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        best = max(members, key=lambda m: m[1])
        worst = min(members, key=lambda m: m[1])
        margin = best[1] - worst[1]
        if margin > 0 and margin >= min_margin:
            out.append(Preference(best[0], worst[0], winner=0, margin=margin))
    return out


def to_pairs(preferences: list[Preference]) -> PairFeedback:
    """Decided preferences as chosen/rejected pairs (ties are dropped)."""
    fb = PairFeedback()
    for p in preferences:
        if p.winner is None:
            continue
        win, lose = (p.a, p.b) if p.winner == 0 else (p.b, p.a)
        fb.chosen.append(win)
        fb.rejected.append(lose)
        fb.margins.append(p.margin)
    return fb


def encode_text_rollouts(rollouts: list[Rollout], tokenizer: Any, system_prompt: str | None = None) -> list[Rollout]:
    """Give token ids to rollouts that arrived as text only (a judgment imported from a file): encoded
    once, as an offline row is (with the stage's system prompt, as ``from_rows`` does). Rollouts that
    carry ids keep them."""
    for r in rollouts:
        if not r.prompt_ids and not r.completion_ids:
            enc = encode_example(tokenizer, r.row.get("prompt", r.prompt), r.completion, system_prompt,
                                 tools=r.row.get("tools"))
            r.prompt_ids, r.completion_ids, r.completion_mask = enc.prompt_ids, enc.completion_ids, enc.completion_mask
    return rollouts


def candidate_pairs(rollouts: list[Rollout], distinct: bool = False) -> list[tuple[Rollout, Rollout]]:
    """What a pairwise judge compares: the first two completions of each prompt group (``distinct``:
    the first two whose completions differ, since identical ones leave nothing to judge)."""
    groups: dict[int, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        if not distinct or all(r.completion != o.completion for o in groups[r.group]):
            groups[r.group].append(r)
    return [(m[0], m[1]) for m in groups.values() if len(m) >= 2]
