"""The mixer: runs every reward source and combines their scores into one scalar per rollout.

- routing: a source with ``tasks`` only scores rows whose ``task`` is listed (others: abstain);
- gating: a source with ``gate`` only scores rollouts the gate source passed (others: abstain);
- mixing: the weighted sum of the sources that scored; a rollout any source *errored* on gets no
  reward (it is left out of the update, and counted), never a silent 0; all-abstain: no reward;
- ``normalize``: ``none``, ``normalize_then_sum`` (z-score each source over the batch, then sum)
  or ``sum_then_normalize`` (sum, then z-score the mix);
- pairwise sources compare two completions of each prompt instead (:meth:`Mixer.compare`); a pair
  they could not judge counts like a rollout a scoring source could not score;
- per-source metrics, and a stop when a source's error rate passes ``max_error_rate``.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from feedback_rl.base import RewardSource
from feedback_rl.errors import RunStopped, UserError
from feedback_rl.config.recipe import SourceSpec
from feedback_rl.loop.feedback import candidate_pairs
from feedback_rl.types import Preference, Rollout, Score, Scored


@dataclass
class Slot:
    spec: SourceSpec
    source: RewardSource
    last_errors: deque = field(default_factory=lambda: deque(maxlen=3))


def build_mixer(recipe: Any, registry: Any, i: int, key: str, specs: list[SourceSpec], context: Any,
                normalize: str = "none", max_error_rate: float = 1.0, on_error: Any = None) -> "Mixer":
    """The sources ``specs`` of stage ``i`` (``key``: ``source`` or ``eval_source``, where their options
    sit in the recipe), each built with ``context(name)``. ``on_error(spec, error)``: a source that
    cannot start is left out and reported instead of raising (``frl check``)."""
    slots = []
    for j, spec in enumerate(specs):
        try:
            source = registry.get("reward_sources", spec.type)(recipe.options(key, i, j), context(spec.name))
        except UserError as e:
            if on_error is None:
                raise
            on_error(spec, e)
            continue
        slots.append(Slot(spec, source))
    return Mixer(slots, normalize, max_error_rate)


class Mixer:
    def __init__(self, slots: list[Slot], normalize: str = "none", max_error_rate: float = 1.0):
        self.slots = slots
        self.normalize = normalize
        self.max_error_rate = max_error_rate

    @property
    def pointwise(self) -> list[Slot]:
        """Sources that score rollouts one by one (pairwise sources are asked to compare instead)."""
        return [s for s in self.slots if not s.source.pairwise]

    def score(self, rollouts: list[Rollout], prefix: str = "reward") -> tuple[list[Scored], dict[str, float]]:
        scored = [Scored(r) for r in rollouts]
        metrics: dict[str, float] = {}
        for slot in self.pointwise:
            metrics.update(self._run_source(slot, scored, prefix))
        self._mix(scored)
        rewards = [s.reward for s in scored if s.reward is not None]
        metrics[f"{prefix}/mean"] = statistics.fmean(rewards) if rewards else float("nan")
        metrics[f"{prefix}/std"] = statistics.pstdev(rewards) if len(rewards) > 1 else 0.0
        metrics[f"{prefix}/unscored_rate"] = 1 - len(rewards) / max(1, len(scored))
        return scored, metrics

    def _run_source(self, slot: Slot, scored: list[Scored], prefix: str) -> dict[str, float]:
        spec, name = slot.spec, slot.spec.name
        asked: list[int] = []
        for k, s in enumerate(scored):
            if spec.tasks is not None and s.rollout.task not in spec.tasks:
                s.scores[name] = Score.abstain(f"task '{s.rollout.task}' not routed to {name}")
            elif spec.gate is not None and not _passed(s.scores.get(spec.gate.source), spec.gate.threshold):
                s.scores[name] = Score.abstain(f"gated out by {spec.gate.source}")
            else:
                asked.append(k)
        start = time.perf_counter()
        results = self._call(slot, [scored[k].rollout for k in asked])
        latency = time.perf_counter() - start
        for k, res in zip(asked, results):
            scored[k].scores[name] = res
            if res.status == "error":
                slot.last_errors.append(res.reason)
        errors = sum(r.status == "error" for r in results)
        values = [r.value for r in results if r.is_ok]
        n = max(1, len(scored))
        abstains = sum(s.scores[name].status == "abstain" for s in scored)
        out = {
            f"{prefix}/{name}/mean": statistics.fmean(values) if values else float("nan"),
            f"{prefix}/{name}/std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            f"{prefix}/{name}/abstain_rate": abstains / n,
            f"{prefix}/{name}/error_rate": errors / max(1, len(asked)),
            f"{prefix}/{name}/errors": float(errors),
            f"{prefix}/{name}/abstains": float(abstains),
            f"{prefix}/{name}/latency_s": latency,
            f"{prefix}/{name}/asked": float(len(asked)),  # not gated out or routed away
        }
        self._stop_past_limit(slot, errors, len(asked), "rollouts")
        return out

    def compare(self, rollouts: list[Rollout], prefix: str = "reward") -> tuple[list[Preference], dict[str, float]]:
        """Pairwise sources judge candidate pairs (two completions of each prompt) directly. A pair a source
        could not judge is counted and logged like a rollout a scoring source could not score, and its
        errors count toward ``max_error_rate``: a judge failing every call stops the run."""
        pairs = candidate_pairs(rollouts)
        prefs: list[Preference] = []
        metrics: dict[str, float] = {}
        for slot in self.slots:
            if not slot.source.pairwise:
                continue
            name = slot.spec.name
            start = time.perf_counter()
            results = self._call_compare(slot, pairs)
            latency = time.perf_counter() - start
            errors = [r.reason for r in results if isinstance(r, Score) and r.status == "error"]
            abstains = sum(isinstance(r, Score) and r.status == "abstain" for r in results)
            slot.last_errors.extend(errors)
            for p in results:
                if isinstance(p, Preference):
                    p.source = name
                    prefs.append(p)
            n = max(1, len(pairs))
            metrics.update({
                f"{prefix}/{name}/error_rate": len(errors) / n,
                f"{prefix}/{name}/errors": float(len(errors)),
                f"{prefix}/{name}/abstain_rate": abstains / n,
                f"{prefix}/{name}/abstains": float(abstains),
                f"{prefix}/{name}/latency_s": latency,
                f"{prefix}/{name}/asked": float(len(pairs)),
            })
            self._stop_past_limit(slot, len(errors), len(pairs), "pairs")
        return prefs, metrics

    def _stop_past_limit(self, slot: Slot, errors: int, asked: int, what: str) -> None:
        if asked and errors / asked > self.max_error_rate:
            raise RunStopped(
                f"reward source '{slot.spec.name}' failed on {errors} of {asked} {what} "
                f"({errors / asked:.0%} > max_error_rate {self.max_error_rate:.0%}); "
                f"last errors: {' | '.join(slot.last_errors)}")

    @staticmethod
    def _call(slot: Slot, rollouts: list[Rollout]) -> list[Score]:
        if not rollouts:
            return []
        try:
            results = list(slot.source.score(rollouts))
        except UserError:  # a wrong setting (a judge URL nothing answers at) stops the run in one line
            raise
        except Exception as e:  # a crashing source is an error on every rollout it was asked about
            return [Score.error(f"{type(e).__name__}: {e}")] * len(rollouts)
        if len(results) != len(rollouts):
            return [Score.error(f"source returned {len(results)} scores for {len(rollouts)} rollouts")] * len(rollouts)
        return [r if isinstance(r, Score) else Score.error(f"not a Score: {r!r}") for r in results]

    @staticmethod
    def _call_compare(slot: Slot, pairs: list[tuple[Rollout, Rollout]]) -> list[Preference | Score]:
        """One result per pair: its Preference, or the Score (abstain or error) of a pair not judged."""
        if not pairs:
            return []
        try:
            results = list(slot.source.compare(pairs))
        except UserError:  # a wrong setting stops the run in one line
            raise
        except Exception as e:  # a crashing source is an error on every pair it was asked about
            return [Score.error(f"{type(e).__name__}: {e}")] * len(pairs)
        if len(results) != len(pairs):
            return [Score.error(f"source returned {len(results)} judgments for {len(pairs)} pairs")] * len(pairs)
        return [r if isinstance(r, Preference) or (isinstance(r, Score) and not r.is_ok)
                else Score.error(f"not a Preference: {r!r}") for r in results]

    def _mix(self, scored: list[Scored]) -> None:
        values = {slot.spec.name: _zscore_map(scored, slot.spec.name) if self.normalize == "normalize_then_sum"
                  else None for slot in self.pointwise}
        for k, s in enumerate(scored):
            if any(sc.status == "error" for sc in s.scores.values()):
                s.reward = None
                continue
            total, any_ok = 0.0, False
            for slot in self.pointwise:
                sc = s.scores[slot.spec.name]
                if sc.is_ok:
                    v = values[slot.spec.name][k] if values[slot.spec.name] is not None else sc.value
                    total += slot.spec.weight * v
                    any_ok = True
            s.reward = total if any_ok else None
        if self.normalize == "sum_then_normalize":
            mixed = [s.reward for s in scored if s.reward is not None]
            mean, std = _mean_std(mixed)
            for s in scored:
                if s.reward is not None:
                    s.reward = (s.reward - mean) / std

    def close(self) -> None:
        for slot in self.slots:
            slot.source.close()


def _passed(score: Score | None, threshold: float) -> bool:
    return score is not None and score.is_ok and score.value >= threshold


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return 0.0, 1.0
    mean = statistics.fmean(xs)
    std = statistics.pstdev(xs) if len(xs) > 1 else 0.0
    return mean, (std if std > 1e-8 else 1.0)


def _zscore_map(scored: list[Scored], name: str) -> dict[int, float]:
    ok = {k: s.scores[name].value for k, s in enumerate(scored) if s.scores[name].is_ok}
    mean, std = _mean_std(list(ok.values()))
    return {k: (v - mean) / std for k, v in ok.items()}
