"""Human feedback: a SQLite labeling queue, a web app, a terminal labeler, a simulated annotator.

The ``human`` reward source enqueues rollouts for people and feeds their labels back into training
while it runs; ``frl label ...`` serves, manages and exports the queue.
"""
from __future__ import annotations

from feedback_rl import hookimpl

from .source import HumanSource
from .store import LabelStore

__all__ = ["HumanSource", "LabelStore"]


@hookimpl
def frl_register_reward_sources(register):
    register(HumanSource)


@hookimpl
def frl_register_commands(cli):
    from .commands import label
    cli.add_command(label)
