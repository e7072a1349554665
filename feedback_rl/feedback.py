"""Turns mixed scores into the feedback shape an optimizer consumes.

- ``scalar``: every rollout that got a reward, with it;
- ``pairs``:  per prompt group, best against worst when they differ by at least ``min_margin``
  (ties are dropped);
- ``binary``: desirable when the mixed reward clears ``threshold``.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch

from .types import BinaryFeedback, Demonstrations, Feedback, PairFeedback, Preference, Rollout, ScalarFeedback, Scored


def from_rows(shape: str, rows: list[dict]) -> Feedback:
    """Offline feedback straight from dataset rows (no reward sources in the stage)."""
    from .errors import UserError
    prompts = [r["prompt"] for r in rows]
    if shape == "demonstrations":
        return Demonstrations(prompts, [r["completion"] for r in rows])
    if shape == "pairs":
        return PairFeedback(prompts, [r["chosen"] for r in rows], [r["rejected"] for r in rows], [1.0] * len(rows))
    if shape == "binary":
        return BinaryFeedback(prompts, [r["completion"] for r in rows], [bool(r["label"]) for r in rows])
    raise UserError(f"feedback shape '{shape}' needs reward sources")


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


def candidate_pairs(rollouts: list[Rollout]) -> list[tuple[Rollout, Rollout]]:
    """For pairwise sources: the first two completions of each prompt group."""
    groups: dict[int, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        groups[r.group].append(r)
    return [(m[0], m[1]) for m in groups.values() if len(m) >= 2]


def pairs_to_binary(preferences: list[Preference]) -> BinaryFeedback:
    """A preference makes its winner desirable and its loser undesirable (ties give nothing)."""
    fb = BinaryFeedback([], [], [])
    for p in preferences:
        if p.winner is None:
            continue
        win, lose = (p.a, p.b) if p.winner == 0 else (p.b, p.a)
        for r, good in ((win, True), (lose, False)):
            fb.prompts.append(r.prompt)
            fb.completions.append(r.completion)
            fb.desirable.append(good)
    return fb


def merge(base: Feedback, extra: list[Feedback]) -> Feedback:
    """Append feedback of the same shape (e.g. labels that arrived from an asynchronous source)."""
    for fb in extra:
        if type(fb) is not type(base):
            continue
        if isinstance(base, ScalarFeedback):
            base.rollouts += fb.rollouts
            base.rewards = torch.cat([base.rewards, fb.rewards])
        else:
            for f in dataclasses.fields(base):
                getattr(base, f.name).extend(getattr(fb, f.name))
    return base


def to_binary(scored: list[Scored], threshold: float) -> BinaryFeedback:
    kept = [s for s in scored if s.reward is not None]
    return BinaryFeedback([s.rollout.prompt for s in kept], [s.rollout.completion for s in kept],
                          [s.reward >= threshold for s in kept])
