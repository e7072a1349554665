"""The best model of a stage, by a held-out eval metric (``eval.keep_best``), and the over-fitting alarm.

A policy rewarded for what a checker can see may get worse at what it cannot (arXiv 2009.01325): held-out
accuracy falls while the training reward rises or sits at its ceiling. At every eval (before the stage,
every ``eval.every`` steps, after it) the stage offers its eval; the best one's weights are written to
``runs/<run>/best/<stage>.pt`` (so a killed run keeps them), and when the stage ends they become its
output and what the next stage starts from. Whether or not the recipe keeps the best, a fall of the watched
metric while the reward did not fall is said once (``health.overfit: warn``), or stops the run (``stop``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from feedback_rl.errors import RunStopped
from feedback_rl.run.writes import save_file


class KeepBest:
    def __init__(self, metric: str | None, mode: str, path: Path, stage: str, overfit: str = "warn",
                 warn: Callable[[str], None] = print, drop: float = 0.05):
        self.metric, self.sign, self.path, self.stage = metric, (1.0 if mode == "max" else -1.0), path, stage
        self.overfit, self.warn, self.drop = overfit, warn, drop
        self.best: dict[str, Any] | None = None     # {"step", "value", "eval", "reward"}
        self.warned = False

    def offer(self, step: int, evals: dict[str, float], reward: float | None,
              weights: Callable[[], dict[str, torch.Tensor] | None]) -> bool:
        """Consider the eval of ``step``; save ``weights()`` when it is the best so far. True when saved."""
        value = evals.get(self.metric) if self.metric else None
        if value is None or not math.isfinite(value):
            return False
        if self.best is not None:
            self._watch(step, value, reward)
            if self.sign * value < self.sign * self.best["value"]:   # a tie keeps the later, more trained model
                return False
        state = weights()
        if state is not None:  # rank 0 writes; the others only follow the verdict
            save_file(self.path, f"the best model of stage '{self.stage}' so far, {self.metric} {value:.4g} at step "
                      f"{step}", lambda tmp: torch.save(state, tmp))
        self.best = {"step": step, "value": value, "eval": dict(evals), "reward": reward}
        return True

    def _watch(self, step: int, value: float, reward: float | None) -> None:
        best, drop = self.best, self.sign * (self.best["value"] - value)
        rewarded = reward is not None and best["reward"] is not None and reward >= best["reward"] - 1e-9
        if self.overfit == "off" or self.warned or drop <= self.drop * max(abs(best["value"]), 1e-9) or not rewarded:
            return
        msg = (f"stage '{self.stage}' step {step}: {self.metric} fell from {best['value']:.3f} (step {best['step']}) "
               f"to {value:.3f} while the training reward stayed at {reward:.3f} or above: the policy over-fits what "
               f"it is rewarded for")
        if self.overfit == "stop":
            raise RunStopped(msg)
        self.warned = True
        self.warn(msg + "; eval.keep_best keeps the best model")

    def restore_into(self, module: torch.nn.Module, last_step: int) -> dict[str, Any] | None:
        """Load the best weights into ``module`` when they are not the last step's; the best's record, or None."""
        if self.best is None or self.best["step"] == last_step or not self.path.exists():
            return None
        module.load_state_dict(torch.load(self.path, weights_only=True))
        return self.best

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.warned = state.get("best"), state.get("warned", False)
