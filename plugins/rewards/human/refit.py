"""A reward model the human source refits on its labels, so people's taste can score every rollout.

Bradley-Terry on a scalar head over a causal LM's trunk (``path``: an HF folder, ``builtin:tiny-gpt2``,
or ``stage:<name>`` for an earlier stage's output, e.g. the SFT policy). Each refit starts again from
that trunk with a fresh head, seeded by the refit count, and trains on every label so far except a
fixed held-out share (chosen by item id, so an item stays on its side across refits).

Pairs come from the labels: pairwise A/B choices directly (ties give none); ratings and thumbs give
every pair of the same prompt's completions with different grades.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import torch
from pydantic import Field

from feedback_rl import PluginContext, PluginOptions, Preference, Rollout, Score, UserError
from feedback_rl.data import encode_text_rollouts, to_pairs
from feedback_rl.losses import bradley_terry_loss
from feedback_rl.models import load_model, pair_scores, pairwise_accuracy, scalar_model, score_rollouts
from feedback_rl.tokens import pair_batch

from .items import label_rollouts, vocabulary
from .store import Label

GRADE = {"up": 1, "down": 0, **{str(k): k for k in range(1, 6)}}


class RefitOptions(PluginOptions):
    path: str = Field(min_length=1, description="the trunk: an HF folder, builtin:tiny-gpt2, or stage:<name>")
    refit_every: int = Field(32, ge=1, description="new preference pairs between refits")
    steps: int = Field(100, ge=1, description="optimizer steps per refit")
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    holdout: float = Field(0.2, ge=0, lt=1, description="share of labelled items kept out to measure accuracy")
    device: str = Field("auto", description="auto: CUDA when available, else CPU")


@dataclass
class Pair:
    """One preference and the item it came from (which side of the held-out split it is on)."""

    item_id: int
    preference: Preference


def preference_pairs(labels: list[Label], tokenizer=None) -> list[Pair]:
    """Pairwise labels give their (winner, loser); ratings and thumbs give graded pairs per prompt. Each
    side keeps the token ids it was sampled with, so the RM reads what it will score; an imported item
    (text only) is encoded by the core with the trunk's tokenizer."""
    out: list[Pair] = []
    graded: dict[str, list[tuple[Label, Rollout]]] = defaultdict(list)
    vocab = vocabulary(tokenizer)
    for x in labels:
        a, b = label_rollouts(x, vocab)  # ids sampled with another tokenizer are dropped; the text is encoded
        encode_text_rollouts([r for r in (a, b) if r is not None], tokenizer)
        if x.task == "pairwise":
            if x.choice != "tie":
                out.append(Pair(x.item_id, Preference(a, b, winner=0 if x.choice == "a" else 1)))
        else:
            graded[x.prompt].append((x, a))
    for group in graded.values():
        for (x, ra), (y, rb) in itertools.combinations(group, 2):
            if GRADE[x.choice] != GRADE[y.choice]:
                winner = 0 if GRADE[x.choice] > GRADE[y.choice] else 1
                out.append(Pair(min(x.item_id, y.item_id), Preference(ra, rb, winner=winner)))
    return out


def held_out(item_id: int, share: float) -> bool:
    """A fixed pseudo-random side per item (Knuth's multiplicative hash), the same at every refit."""
    return (item_id * 2654435761 % 2**32) / 2**32 < share


class RefittedRewardModel:
    def __init__(self, options: RefitOptions, context: PluginContext):
        self.options, self.context = options, context
        self.trunk = self.tokenizer = None  # loaded at the first fit: a stage's output exists only then
        self.model: torch.nn.Module | None = None
        self.refits = 0
        self.stats: dict[str, float] = {}
        device = options.device
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def _load_trunk(self) -> None:
        if self.trunk is None:
            path = self.options.path
            if not path.startswith("builtin:"):
                path = str(self.context.resolve(path))
            # it reads the ids the policy sampled (kept with each item) and scores live rollouts by their
            # ids: a trunk with another tokenizer would mix two vocabularies, so it is refused here
            try:
                self.trunk, self.tokenizer = load_model(path, tokenizer=self.context.tokenizer)
            except UserError as e:
                raise UserError(f"reward source '{self.context.name}': reward_model.path: {e}") from None
            self.trunk.to(self.device)

    def _fresh(self) -> torch.nn.Module:
        self._load_trunk()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return scalar_model(self.trunk, pad)

    def fit(self, labels: list[Label]) -> None:
        """Refit from the trunk on every label given; measures train and held-out pairwise accuracy."""
        self._load_trunk()
        pairs = preference_pairs(labels, self.tokenizer)
        train = [p for p in pairs if not held_out(p.item_id, self.options.holdout)]
        test = [p for p in pairs if held_out(p.item_id, self.options.holdout)]
        if not train:
            return
        # the engine's random streams stay untouched, and a refit is the same whenever it happens
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.context.seed * 1000 + self.refits)
            model = self._fresh().train()
            opt = torch.optim.AdamW(model.parameters(), lr=self.options.lr)
            g = torch.Generator().manual_seed(self.context.seed * 1000 + self.refits)
            for _ in range(self.options.steps):
                pick = torch.randint(len(train), (min(self.options.batch_size, len(train)),), generator=g)
                chosen, rejected = pair_scores(model, self._batch([train[k] for k in pick.tolist()]))
                loss = bradley_terry_loss(chosen, rejected)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        self._freeze(model)
        self.refits += 1
        self.stats = {"refits": float(self.refits), "pairs": float(len(pairs)), "loss": loss.item(),
                      "train_accuracy": self.accuracy(train), "heldout_accuracy": self.accuracy(test),
                      "heldout_pairs": float(len(test))}

    def _freeze(self, model: torch.nn.Module) -> None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model

    def _batch(self, pairs: list[Pair]):
        return pair_batch(to_pairs([p.preference for p in pairs]), self.tokenizer).to(self.device)

    def accuracy(self, pairs: list[Pair]) -> float:
        """Share of pairs the current model scores chosen above rejected (nan for none)."""
        if not pairs or self.model is None:
            return float("nan")
        return pairwise_accuracy(self.model, to_pairs([p.preference for p in pairs]), self.tokenizer)

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        return score_rollouts(self.model, rollouts, 64)

    def values(self, rollouts: list[Rollout]) -> list[float | None]:
        """The RM's score per rollout; None where it cannot read one."""
        return [s.value for s in self.score(rollouts)]

    def state_dict(self) -> dict:
        return {"refits": self.refits, "stats": dict(self.stats),
                "model": None if self.model is None else {k: v.cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.refits, self.stats = state.get("refits", 0), dict(state.get("stats", {}))
        if state.get("model") is not None:
            model = self._fresh()
            model.load_state_dict(state["model"])
            self._freeze(model)
