"""Health monitors: catch runs that "train" while learning nothing, and warn or stop.

Each monitor reads one metric of a step and compares it with a limit from the recipe
(``stages[].health``); its action is ``warn`` (a message, at most every ``warn_every`` steps) or
``stop`` (the run stops with a message). Non-finite losses are handled in the optimizer step:
the step is skipped and the offending batch saved under ``runs/<run>/bad_batches/``; here the skipped
steps are counted against ``health.skip_limit`` (weights that blew up make every later step
non-finite: skipping them all would end "finished" over garbage).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from feedback_rl.errors import RunStopped

# name -> (metric keys it reads, how a value breaks the limit)
MONITORS: dict[str, tuple[str, Callable[[float, float], bool], str]] = {
    "max_kl": ("kl/sequence", lambda v, lim: v > lim, "KL to the reference per completion {v:.4g} > {lim:g}"),
    "min_entropy": ("entropy", lambda v, lim: v < lim, "entropy collapsed to {v:.4g} < {lim:g}"),
    "max_truncated_rate": ("rollout/truncated_rate", lambda v, lim: v > lim,
                           "{v:.0%} of completions hit max_new_tokens (> {lim:.0%}): raise it or check the EOS"),
    "max_zero_variance_groups": ("rollout/zero_variance_groups", lambda v, lim: v > lim,
                                 "{v:.0%} of prompt groups have one reward for every completion (> {lim:.0%}): "
                                 "no learning signal"),
    "max_reward_error_rate": ("reward/*/error_rate", lambda v, lim: v > lim, "reward error rate {v:.0%} > {lim:.0%}"),
    "min_grad_norm": ("grad_norm", lambda v, lim: v <= lim, "gradient norm {v:.3g} <= {lim:g}: nothing is learned"),
}


class Health:
    def __init__(self, spec: Any, stage: str, warn: Callable[[str], None], steps: int = 0,
                 bad_batches: Path | None = None):
        """``steps``: the stage's steps (the share of skipped steps is of these); ``bad_batches``: where the
        optimizer step saves a non-finite batch, for the messages."""
        self.spec, self.stage, self.warn = spec, stage, warn
        self.steps, self.bad_batches = steps, bad_batches
        self._last_warned: dict[str, int] = {}
        self.skipped = self.in_a_row = 0

    def state_dict(self) -> dict[str, Any]:  # a resumed run counts on where it left off
        return {"skipped": self.skipped, "in_a_row": self.in_a_row, "last_warned": dict(self._last_warned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.in_a_row = state.get("skipped", 0), state.get("in_a_row", 0)
        self._last_warned = dict(state.get("last_warned", {}))

    def check(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        self._count_skips(step, metrics)
        flags = {}
        for name, (key, broken, message) in MONITORS.items():
            rule = getattr(self.spec, name)
            if rule is None:
                continue
            for metric, value in _values(metrics, key):
                if not isinstance(value, float) or not math.isfinite(value) or not broken(value, rule.limit):
                    continue
                flags[f"health/{name}"] = 1.0
                text = f"stage '{self.stage}' step {step}: {metric}: " + message.format(v=value, lim=rule.limit)
                if rule.action == "stop":
                    raise RunStopped(text)
                self._warn(name, step, text)
        return flags

    def _count_skips(self, step: int, metrics: dict[str, Any]) -> None:
        """A step whose update was skipped as non-finite: warn (every ``warn_every`` steps), or stop past
        ``skip_limit``."""
        if not metrics.get("health/nonfinite_skips"):
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        limit, where = self.spec.skip_limit, f"stage '{self.stage}' step {step}"
        allowed = max(1, int(limit.share * self.steps))
        saved = f"the batches are saved in {self.bad_batches}" if self.bad_batches else "the batches are saved"
        if self.in_a_row >= limit.consecutive:
            raise RunStopped(f"{where}: {self.in_a_row} steps in a row had a non-finite loss or gradient and were "
                             f"skipped (health.skip_limit.consecutive: {limit.consecutive}): the weights have "
                             f"likely diverged (is train.lr too high?); {saved}")
        if self.skipped > allowed:
            raise RunStopped(f"{where}: {self.skipped} of the stage's {self.steps} steps had a non-finite loss or "
                             f"gradient and were skipped (health.skip_limit.share: {limit.share:g} allows "
                             f"{allowed}); {saved}")
        self._warn("nonfinite", step, f"{where}: non-finite loss or gradient; step skipped ({self.skipped} so far "
                                      f"this stage); {saved}")

    def _warn(self, name: str, step: int, text: str) -> None:
        last = self._last_warned.get(name)
        if last is None or step - last >= self.spec.warn_every:
            self._last_warned[name] = step
            self.warn(text)


def _values(metrics: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    if "*" not in key:
        return [(key, metrics[key])] if key in metrics else []
    head, tail = key.split("*")
    return [(k, v) for k, v in metrics.items() if k.startswith(head) and k.endswith(tail)]
