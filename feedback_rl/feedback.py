"""Turns mixed scores into the feedback shape an optimizer consumes.

- ``scalar``: every rollout that got a reward, with it;
- ``pairs``:  per prompt group, best against worst when they differ by at least ``min_margin``
  (ties are dropped);
- ``binary``: desirable when the mixed reward clears ``threshold``.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .types import BinaryFeedback, PairFeedback, Preference, ScalarFeedback, Scored


def to_scalar(scored: list[Scored]) -> ScalarFeedback:
    kept = [s for s in scored if s.reward is not None]
    return ScalarFeedback([s.rollout for s in kept], torch.tensor([s.reward for s in kept], dtype=torch.float32))


def best_worst_pairs(scored: list[Scored], min_margin: float = 0.0) -> list[Preference]:
    groups: dict[int, list[Scored]] = defaultdict(list)
    for s in scored:
        if s.reward is not None:
            groups[s.rollout.group].append(s)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        best = max(members, key=lambda s: s.reward)
        worst = min(members, key=lambda s: s.reward)
        margin = best.reward - worst.reward
        if margin > 0 and margin >= min_margin:
            out.append(Preference(best.rollout, worst.rollout, winner=0, margin=margin))
    return out


def to_pairs(preferences: list[Preference]) -> PairFeedback:
    fb = PairFeedback([], [], [], [])
    for p in preferences:
        if p.winner is None:
            continue
        win, lose = (p.a, p.b) if p.winner == 0 else (p.b, p.a)
        fb.prompts.append(win.prompt)
        fb.chosen.append(win.completion)
        fb.rejected.append(lose.completion)
        fb.margins.append(p.margin)
    return fb


def to_binary(scored: list[Scored], threshold: float) -> BinaryFeedback:
    kept = [s for s in scored if s.reward is not None]
    return BinaryFeedback([s.rollout.prompt for s in kept], [s.rollout.completion for s in kept],
                          [s.reward >= threshold for s in kept])
