"""verifiers 0.4 (``verifiers.v1``) tasksets, played through the core's endpoint (docs/episodes.md, "verifiers").

    data: {train: {verifiers: my_taskset, size: 64}}    # one row per task of an installed v1 taskset
    agent: agent.py:agent

    # agent.py
    from frl_plugins.environments.verifiers_bridge.agent import taskset_agent
    agent = taskset_agent(tokenizer="models/policy", max_turns=4)

A verifiers harness never runs the model in-process: it calls an endpoint. Here that endpoint is the core's
(the live policy, every call recorded by session), so a row's episode is one verifiers rollout of the row's task
and its reward is the rollout's reward. verifiers pins mcp==2.0.0 (OpenEnv 0.10 needs mcp<2), so it lives in an
environment of its own: ``bash scripts/setup-verifiers.sh`` makes ``.venv-verifiers``. Nothing here imports
verifiers until a recipe names it.
"""
from __future__ import annotations

from feedback_rl import hookimpl

from .data import VerifiersData


@hookimpl
def frl_register_datasets(register):
    register(VerifiersData)
