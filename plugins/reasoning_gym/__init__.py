"""reasoning-gym (``pip install 'feedback_rl[reasoning-gym]'``): its procedural tasks as a data source, and
their own ``score_answer`` as a reward source.

    data: {train: {reasoning_gym: leg_counting, size: 2000, seed: 0}, eval: {reasoning_gym: leg_counting, size: 200, seed: 1}}
    rewards: {sources: [{name: task, type: reasoning_gym}]}
"""
from __future__ import annotations

from feedback_rl import hookimpl

from .data import ReasoningGymData
from .reward import ReasoningGymScore


@hookimpl
def frl_register_datasets(register):
    register(ReasoningGymData)


@hookimpl
def frl_register_reward_sources(register):
    register(ReasoningGymScore)
