"""The ``human`` reward source: rollouts go to people through the labeling queue; labels come back.

Async (default): ``compare``/``score`` enqueue up to ``per_step`` items and answer at once (a tie /
an abstain); ``collect`` hands the engine every label that arrived since its last call, each once.
Blocking: the same, but ``compare``/``score`` wait (up to ``timeout`` s) until the enqueued items
are labeled, so ``collect`` in the same step returns their labels.
"""
from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import (
    BinaryFeedback, Feedback, PairFeedback, PluginContext, PluginOptions, Preference, RewardSource, Rollout,
    ScalarFeedback, Score,
)

from .store import Label, LabelStore


class HumanOptions(PluginOptions):
    task: Literal["pairwise", "thumbs", "rating"] = "pairwise"
    db: str | None = None                   # default: <run_dir>/labels.sqlite
    per_step: int = Field(4, ge=0)          # items sent to people per step
    max_pending: int = Field(64, ge=1)      # backpressure: enqueue nothing while this many wait for a label
    sampling: Literal["random", "uncertain"] = "random"
    mode: Literal["async", "blocking"] = "async"
    timeout: float = Field(60.0, gt=0)      # blocking mode: seconds to wait for a step's labels
    labels_per_item: int = Field(1, ge=1)   # 2+ asks several people (agreement is measured)
    consumer: str | None = None             # the cursor's name; default: <stage>/<source name>


class HumanSource(RewardSource):
    """People label rollouts in a browser (``frl label serve``) or a terminal (``frl label cli``)."""

    name = "human"
    Options = HumanOptions

    def __init__(self, options: HumanOptions, context: PluginContext):
        super().__init__(options, context)
        self.pairwise = options.task == "pairwise"  # an instance attribute: the engine asks per instance
        db = context.resolve(options.db) if options.db else context.run_dir / "labels.sqlite"
        self.store = LabelStore(db)
        self.consumer = options.consumer or f"{context.stage}/{context.name}"
        self.rng = random.Random(context.seed)
        self.consumed = 0
        self.started = time.time()

    @classmethod
    def gives(cls, options: HumanOptions) -> set[str]:
        return {"pairwise": {"pairs", "binary"}, "thumbs": {"binary"},
                "rating": {"scalar", "binary", "pairs"}}[options.task]

    def describe(self) -> dict:
        o = self.options
        return {"task": o.task, "db": str(self.store.path), "mode": o.mode, "sampling": o.sampling}

    # ------------------------------------------------------------------ outgoing
    def compare(self, pairs: list[tuple[Rollout, Rollout]]) -> list[Preference]:
        distinct = [(a, b) for a, b in pairs if a.completion != b.completion]  # nothing to judge otherwise
        chosen = self._sample(distinct, _pair_uncertainty)
        ids = self.store.enqueue_many([("pairwise", a.prompt, a.completion, b.completion, _meta(a, b))
                                       for a, b in chosen], self.options.labels_per_item)
        self._wait(ids)
        return [Preference(a, b, winner=None, source=self.context.name) for a, b in pairs]

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        chosen = self._sample(rollouts, _single_uncertainty)
        ids = self.store.enqueue_many([(self.options.task, r.prompt, r.completion, None, _meta(r))
                                       for r in chosen], self.options.labels_per_item)
        self._wait(ids)
        return [Score.abstain("queued for humans")] * len(rollouts)

    def _sample(self, items: list, uncertainty) -> list:
        # people label far slower than a model generates: past max_pending, new items would only go stale
        room = max(0, self.options.max_pending - int(self.store.stats()["queue_depth"]))
        k = min(self.options.per_step, len(items), room)
        if self.options.sampling == "uncertain":
            return sorted(items, key=uncertainty, reverse=True)[:k]
        return self.rng.sample(items, k)

    def _wait(self, ids: list[int]) -> None:
        if self.options.mode != "blocking" or not ids:
            return
        deadline = time.monotonic() + self.options.timeout
        while time.monotonic() < deadline:
            got = self.store.labels_for(ids)
            if all(len(got.get(i, [])) >= self.options.labels_per_item for i in ids):
                return
            time.sleep(0.2)
        self.context.warn(f"source '{self.context.name}': {len(ids)} items not all labeled within "
                          f"{self.options.timeout:g}s; training goes on, they stay in the queue")

    # ------------------------------------------------------------------ incoming
    def collect(self) -> list[Feedback]:
        labels = self.store.consume(self.consumer, self.options.task)
        self.consumed += len(labels)
        if not labels:
            return []
        return to_feedback(self.options.task, labels)

    def metrics(self) -> dict[str, float]:
        """Queue depth, labels per minute, oldest pending age, agreement; the engine logs them."""
        s = self.store.stats()
        return {"queue_depth": s["queue_depth"], "labels_per_minute": s["labels_per_minute"],
                "oldest_pending_s": s["oldest_pending_s"], "agreement": s["agreement"],
                "labels_total": s["labels_total"], "labels_consumed": float(self.consumed)}

    def close(self) -> None:
        self.store.close()


# --------------------------------------------------------------------------- labels -> feedback

def to_feedback(task: str, labels: list[Label]) -> list[Feedback]:
    """Pairwise -> pairs and binary; thumbs -> binary; rating -> scalar, binary (>=4 / <=2), pairs."""
    if task == "pairwise":
        pairs, binary = PairFeedback([], [], [], []), BinaryFeedback([], [], [])
        for x in labels:
            if x.choice == "tie":
                continue
            win, lose = (x.a, x.b) if x.choice == "a" else (x.b, x.a)
            pairs.prompts.append(x.prompt)
            pairs.chosen.append(win)
            pairs.rejected.append(lose)
            pairs.margins.append(1.0)
            binary.prompts += [x.prompt, x.prompt]
            binary.completions += [win, lose]
            binary.desirable += [True, False]
        return [pairs, binary]
    if task == "thumbs":
        return [BinaryFeedback([x.prompt for x in labels], [x.a for x in labels],
                               [x.choice == "up" for x in labels])]
    binary = BinaryFeedback([], [], [])
    for x in labels:
        if x.choice != "3":
            binary.prompts.append(x.prompt)
            binary.completions.append(x.a)
            binary.desirable.append(int(x.choice) >= 4)
    by_prompt: dict[str, list[Label]] = defaultdict(list)
    for x in labels:
        by_prompt[x.prompt].append(x)
    pairs = PairFeedback([], [], [], [])
    rollouts, rewards = [], []
    for g, (prompt, group) in enumerate(by_prompt.items()):
        best = max(group, key=lambda x: int(x.choice))
        worst = min(group, key=lambda x: int(x.choice))
        if int(best.choice) > int(worst.choice):
            pairs.prompts.append(prompt)
            pairs.chosen.append(best.a)
            pairs.rejected.append(worst.a)
            pairs.margins.append(float(int(best.choice) - int(worst.choice)))
        for x in group:
            rollouts.append(Rollout(prompt=x.prompt, completion=x.a, row=x.meta.get("row", {}), group=g,
                                    prompt_ids=x.meta.get("prompt_ids", []),
                                    completion_ids=x.meta.get("completion_ids", []), uid=f"label-{x.id}"))
            rewards.append((int(x.choice) - 3) / 2.0)  # 1..5 -> -1..1
    return [ScalarFeedback(rollouts, torch.tensor(rewards, dtype=torch.float32)), binary, pairs]


def _meta(a: Rollout, b: Rollout | None = None) -> dict:
    row = {k: v for k, v in a.row.items() if isinstance(v, (str, int, float, bool))}
    meta = {"row": row, "prompt_ids": a.prompt_ids, "completion_ids": a.completion_ids,
            "policy_version": a.policy_version}
    if b is not None:
        meta["completion_ids_b"] = b.completion_ids
    return meta


def _mean_logprob(r: Rollout) -> float:
    if r.logprobs is None or r.logprobs.numel() == 0:
        return 0.0
    return float(r.logprobs.float().mean())


def _pair_uncertainty(pair: tuple[Rollout, Rollout]) -> float:
    """Entropy of the policy's own Bradley-Terry preference between the two (log-prob difference)."""
    d = _mean_logprob(pair[0]) - _mean_logprob(pair[1])
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, d))))
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def _single_uncertainty(r: Rollout) -> float:
    """Mean negative log-prob per token: the completions the policy itself was least sure of."""
    return -_mean_logprob(r)
