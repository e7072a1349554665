"""The ``human`` reward source: rollouts go to people through the labeling queue; labels come back.

Async (default): ``compare``/``score`` enqueue up to ``per_step`` items and answer at once (a tie /
an abstain); ``collect`` hands the engine every label that arrived since its last call, each once.
Blocking: the same, but ``compare``/``score`` wait (up to ``timeout`` s) until the enqueued items
are labeled, so ``collect`` in the same step returns their labels.

The checkpoint is the authority on what was trained: the source holds its cursor over the store
in memory and in :meth:`state_dict`; on resume, labels taken after the checkpoint come again, and
a fresh run starts from the store's first label.

With ``reward_model``, the source refits a Bradley-Terry reward model every ``refit_every`` new
preference pairs; once fitted, :meth:`score` returns its score for every rollout (the source is then
pointwise, so it can drive GRPO or PPO), and ``sampling: uncertain`` asks people about what that
model is least sure of.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from typing import Literal

from pydantic import Field

from feedback_rl import PluginContext, PluginOptions, Preference, Rating, RewardSource, Rollout, Score
from feedback_rl.data import candidate_pairs

from .items import item_meta, label_rollouts, vocabulary
from .refit import RefitOptions, RefittedRewardModel
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
    consumer: str | None = None             # the audit trail's name; default: <stage>/<source name>
    reward_model: RefitOptions | None = Field(None, description=(
        "refit a Bradley-Terry RM on the labels every refit_every preferences; it then scores every rollout. "
        "Keys: path (HF folder, builtin:tiny-gpt2, stage:<name>), refit_every, steps, lr, batch_size, "
        "holdout, device"))


class HumanSource(RewardSource):
    """People label rollouts in a browser (``frl label serve``) or a terminal (``frl label cli``)."""

    name = "human"
    Options = HumanOptions

    def __init__(self, options: HumanOptions, context: PluginContext):
        super().__init__(options, context)
        self.rm = RefittedRewardModel(options.reward_model, context) if options.reward_model else None
        # an instance attribute, the engine asks per instance: with a reward model it scores one by one
        self.pairwise = options.task == "pairwise" and self.rm is None
        db = context.resolve(options.db) if options.db else context.run_dir / "labels.sqlite"
        self.store = LabelStore(db)
        self.vocab = vocabulary(context.tokenizer)  # None outside a run: ids are then taken as they are
        self.consumer = options.consumer or f"{context.stage}/{context.name}"
        self.rng = random.Random(context.seed)
        self.consumed = 0
        self.cursor = (0, 0)   # (last label id, last change id) handed out; checkpointed, not stored
        self.taken, self.taken_after = 0, 0  # the last collect(): how many labels, from past which label id
        self.since_fit = 0     # preferences handed out since the reward model's last refit
        self.started = time.time()

    @classmethod
    def judgments(cls, options: HumanOptions) -> set[str]:
        late = {"pairwise": {"preferences"}, "thumbs": {"labels"}, "rating": {"values", "labels"}}[options.task]
        # with a reward model refitted on the labels, the source also scores every rollout
        return late | {"scores"} if options.reward_model is not None else late

    def describe(self) -> dict:
        o = self.options
        return {"task": o.task, "db": str(self.store.path), "mode": o.mode, "sampling": o.sampling,
                "reward_model": o.reward_model.model_dump() if o.reward_model else None}

    # ------------------------------------------------------------------ outgoing
    def compare(self, pairs: list[tuple[Rollout, Rollout]]) -> list[Preference]:
        self._ask_pairs(pairs, self._rm_values([r for p in pairs for r in p]))
        return [Preference(a, b, winner=None, source=self.context.name) for a, b in pairs]

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        values = self._rm_values(rollouts)
        if self.options.task == "pairwise":  # only with a reward model: people still compare pairs
            self._ask_pairs(candidate_pairs(rollouts, distinct=True), values)
        else:
            chosen = self._sample(rollouts, _single_key(values))
            items = [(self.options.task, r.prompt, r.completion, None, item_meta(r, vocab=self.vocab)) for r in chosen]
            ids = self.store.enqueue_many(items, self.options.labels_per_item, [self._key(r) for r in chosen])
            self._wait(ids)
        if values is None:
            return [Score.abstain("queued for humans")] * len(rollouts)
        return [Score.error("empty rollout") if values[id(r)] is None else Score.ok(values[id(r)])
                for r in rollouts]

    def _ask_pairs(self, pairs: list[tuple[Rollout, Rollout]], values: dict | None) -> None:
        distinct = [(a, b) for a, b in pairs if a.completion != b.completion]  # nothing to judge otherwise
        chosen = self._sample(distinct, _pair_key(values))
        items = [("pairwise", a.prompt, a.completion, b.completion, item_meta(a, b, vocab=self.vocab))
                 for a, b in chosen]
        ids = self.store.enqueue_many(items, self.options.labels_per_item, [self._key(a, b) for a, b in chosen])
        self._wait(ids)

    def _key(self, a: Rollout, b: Rollout | None = None) -> str:
        """An item's identity within this run: a step replayed after ``--resume`` samples the same
        rollouts (same uids, same text) and finds its items already in the queue."""
        meta = item_meta(a, b)  # its row and turns; not its log-probs, which a GPU may not replay bit for bit
        parts = [str(self.context.run_dir.resolve()), self.consumer, self.options.task, a.prompt,
                 meta["row"], meta.get("turns")]
        parts += [x for r in (a, b) if r is not None for x in (r.uid, r.completion)]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _rm_values(self, rollouts: list[Rollout]) -> dict[int, float | None] | None:
        """The fitted reward model's score per rollout (by id()); None before its first fit."""
        if self.rm is None or not self.rm.fitted:
            return None
        return dict(zip([id(r) for r in rollouts], self.rm.values(rollouts)))

    def _sample(self, items: list, uncertainty) -> list:
        # people label far slower than a model generates: past max_pending, new items would only go stale
        room = max(0, self.options.max_pending - int(self.store.stats()["queue_depth"]))
        k = min(self.options.per_step, len(items), room)
        if self.options.sampling == "uncertain":
            return sorted(items, key=uncertainty, reverse=True)[:k]
        # a whole permutation, whatever k is: the stream then depends on the rollouts alone, so a step
        # replayed after --resume (where the queue, and so k, may differ) picks a prefix of the same items
        return self.rng.sample(items, len(items))[:k]

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
    def collect(self) -> list[Preference | Rating]:
        self.taken_after = self.cursor[0]
        labels, self.cursor = self.store.take(self.consumer, self.cursor)
        labels = [x for x in labels if x.task == self.options.task]
        self.consumed += len(labels)
        self.taken = len(labels)
        if not labels:
            return []
        if self.rm is not None:
            self.since_fit += sum(x.choice not in ("tie", "3") for x in labels)
            if self.since_fit >= self.options.reward_model.refit_every:
                self.rm.fit([x for x in self.store.labels_upto(self.cursor[0]) if x.task == self.options.task])
                self.since_fit = 0
        return to_judgments(self.options.task, labels, self.vocab)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"cursor": list(self.cursor), "consumed": self.consumed, "since_fit": self.since_fit,
                "rng": [version, list(internal), gauss],
                "reward_model": self.rm.state_dict() if self.rm is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.cursor = tuple(state["cursor"])
        self.consumed, self.since_fit = state["consumed"], state["since_fit"]
        if state.get("rng"):  # checkpoints from before it was saved restart the stream from the seed
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
        if self.rm is not None and state.get("reward_model"):
            self.rm.load_state_dict(state["reward_model"])

    def metrics(self) -> dict[str, float]:
        """Queue depth, labels per minute, oldest pending age, agreement; the engine logs them.

        ``labels_taken`` is what the step's collect() handed out: the labels with ids in
        (``labels_taken_after``, ``label_cursor``], plus any changed since they were first handed out.
        Logged per step and cut back with the logs on resume, they show each label trained once.
        """
        s = self.store.stats()
        return {"queue_depth": s["queue_depth"], "labels_per_minute": s["labels_per_minute"],
                "oldest_pending_s": s["oldest_pending_s"], "agreement": s["agreement"],
                "labels_total": s["labels_total"], "labels_consumed": float(self.consumed),
                "labels_taken": float(self.taken), "labels_taken_after": float(self.taken_after),
                "label_cursor": float(self.cursor[0]),
                **{f"rm/{k}": v for k, v in (self.rm.stats if self.rm is not None else {}).items()}}

    def close(self) -> None:
        self.store.close()


# --------------------------------------------------------------------------- labels -> judgments

def to_judgments(task: str, labels: list[Label], vocab: str | None = None) -> list[Preference | Rating]:
    """Pairwise choices -> preferences (ties give none); thumbs -> labels; ratings 1..5 -> values in
    -1..1 and labels (4 and 5 desirable, 1 and 2 undesirable, 3 neutral). The core shapes them."""
    out: list[Preference | Rating] = []
    for x in labels:
        a, b = label_rollouts(x, vocab)
        if task == "pairwise":
            if x.choice != "tie":
                out.append(Preference(a, b, winner=0 if x.choice == "a" else 1, margin=1.0))
        elif task == "thumbs":
            out.append(Rating(a, desirable=x.choice == "up"))
        else:
            grade = int(x.choice)
            out.append(Rating(a, value=(grade - 3) / 2.0, desirable=None if grade == 3 else grade >= 4))
    return out


def _pair_key(values: dict | None):
    """Higher = less sure. With a fitted reward model: how close sigmoid(r_a - r_b) is to 0.5;
    before it, the policy's own log-probs."""
    if values is None:
        return _pair_uncertainty

    def key(pair: tuple[Rollout, Rollout]) -> float:
        a, b = values.get(id(pair[0])), values.get(id(pair[1]))
        if a is None or b is None:
            return -1.0
        return -abs(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, a - b)))) - 0.5)
    return key


def _single_key(values: dict | None):
    """Higher = less sure. With a fitted reward model: closeness of its score to the median score of
    the candidates (the boundary between the better and the worse half); before it, log-probs."""
    if values is None:
        return _single_uncertainty
    known = sorted(v for v in values.values() if v is not None)
    median = known[len(known) // 2] if known else 0.0
    return lambda r: -abs(values[id(r)] - median) if values.get(id(r)) is not None else -math.inf


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
