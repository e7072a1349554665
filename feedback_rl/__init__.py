"""feedback_rl: train language models from feedback.

This module is the public API a plugin author needs (docs/plugins.md describes each name): the hook
marker, the plugin base classes, what flows through the loop, and :func:`train`. Helpers for tokens,
losses, models and data live in the documented public submodules :mod:`feedback_rl.tokens`,
:mod:`feedback_rl.losses`, :mod:`feedback_rl.models`, :mod:`feedback_rl.data` and
:mod:`feedback_rl.environments` (episodes and tools). A plugin imports nothing
else from the core, and nothing from another plugin; everything else is internal and may change.
"""
from __future__ import annotations

from feedback_rl.hookspecs import hookimpl

from feedback_rl.base import (  # noqa: E402
    Backend, Environment, Generation, LengthLimited, Logger, Models, Optimizer, Plugin, PluginContext, PluginOptions,
    RewardSource, SamplingParams,
)
from feedback_rl.errors import RunStopped, UserError, did_you_mean  # noqa: E402
from feedback_rl.loop.batch import Batch  # noqa: E402
from feedback_rl.commands.api import train  # noqa: E402
from feedback_rl.types import (  # noqa: E402
    BinaryFeedback, Demonstrations, Feedback, Judgment, PairFeedback, Preference, Rating, Rollout, ScalarFeedback,
    Score, Scored,
)

__version__ = "0.1.0"

__all__ = [
    # writing a plugin
    "hookimpl", "Plugin", "PluginOptions", "LengthLimited", "PluginContext", "UserError", "RunStopped",
    "did_you_mean", "RewardSource", "Optimizer", "Backend", "Logger", "Environment", "Models", "SamplingParams",
    "Generation",
    # what flows through the loop
    "Rollout", "Score", "Preference", "Rating", "Judgment", "Scored", "Batch",
    "Feedback", "ScalarFeedback", "PairFeedback", "BinaryFeedback", "Demonstrations",
    # running
    "train",
]
