"""Reward sources mix on episodes through `frl train`: the environment's own reward beside the rule checker on the
final answer, on calculator episodes written by the scripted backend (tests/integration/scripted_tool_backend.py):
the shipped recipes/calculator-env-rule.yaml, and calculator-grpo.yaml with a numeric rule beside its env source."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from test_episodes_train import ROOT, frl_train, scripted_plugin

SOURCES = ("stages.grpo.rewards.sources=[{name: env, type: environment, weight: 0.5}, "
           "{name: rule, type: rule, check: numeric, weight: 0.5}]")


def test_env_and_rule_sources_mix_on_calculator_episodes(tmp_path):
    env = scripted_plugin(tmp_path)
    check = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate",
                            str(ROOT / "recipes" / "calculator-grpo.yaml"), "--set", SOURCES],
                           capture_output=True, text=True, env={**os.environ, **env})
    assert check.returncode == 0, check.stderr
    run, metrics, logged = frl_train("calculator-grpo.yaml", tmp_path, "stages.grpo.train.steps=2", SOURCES,
                                     "stages.grpo.rollout.backend=scripted_tool", env=env)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2 and all(m["reward/rule/error_rate"] == 0.0 and "loss" in m for m in steps)
    # the rule reads the final answer (the tool's result is right in every episode, the answer in every other):
    # it agrees with the environment's own reward on each episode, and the mix is their weighted sum
    assert {r["scores"]["rule"]["value"] for r in logged} == {0.0, 1.0}
    for r in logged:
        assert r["scores"]["rule"]["value"] == r["scores"]["env"]["value"]
        assert r["reward"] == 0.5 * r["scores"]["env"]["value"] + 0.5 * r["scores"]["rule"]["value"]


def test_the_shipped_env_and_format_rule_recipe_validates_and_runs(tmp_path):
    env = scripted_plugin(tmp_path)
    run, metrics, logged = frl_train("calculator-env-rule.yaml", tmp_path, "stages.grpo.train.steps=2",
                                     "stages.grpo.rollout.backend=scripted_tool", env=env)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2 and all(m["env/end/done"] == 1.0 and "loss" in m for m in steps)
    # every scripted final answer is a bare integer, while every transcript starts with a tool call: the format
    # rule pays all of them, so it read the final answer; the mix is env + 0.2 * format
    assert {r["scores"]["format"]["value"] for r in logged} == {1.0}
    assert {r["scores"]["env"]["value"] for r in logged} == {0.0, 1.0}
    assert all(r["reward"] == r["scores"]["env"]["value"] + 0.2 for r in logged)
