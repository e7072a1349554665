"""Health monitors: catch runs that "train" while learning nothing, and warn or stop.

Each monitor reads one metric of a step and compares it with a limit from the recipe
(``stages[].health``); its action is ``warn`` (a message, at most every ``warn_every`` steps) or
``stop`` (the run stops with a message). Non-finite losses are handled in the optimizer step:
the step is skipped and the offending batch saved under ``runs/<run>/bad_batches/``.
"""
from __future__ import annotations

import math
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
    def __init__(self, spec: Any, stage: str, warn: Callable[[str], None]):
        self.spec, self.stage, self.warn = spec, stage, warn
        self._last_warned: dict[str, int] = {}

    def check(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
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
                last = self._last_warned.get(name)
                if last is None or step - last >= self.spec.warn_every:
                    self._last_warned[name] = step
                    self.warn(text)
        return flags


def _values(metrics: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    if "*" not in key:
        return [(key, metrics[key])] if key in metrics else []
    head, tail = key.split("*")
    return [(k, v) for k, v in metrics.items() if k.startswith(head) and k.endswith(tail)]
