"""A recipe that names a verifiers taskset where verifiers is not installed (the lean .venv) stops on one line that
names scripts/setup-verifiers.sh, with exit code 2, before a model loads or a run folder exists."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

RECIPE = """\
name: vf-missing
model: {path: builtin:tiny-gpt2}
stages:
  - name: grpo
    optimizer: grpo
    data: {train: {verifiers: echo_taskset, size: 4}}
    rewards: {sources: [{name: exact, type: rule, check: exact}]}
    rollout: {num_generations: 2, max_new_tokens: 4}
    train: {steps: 1, batch_size: 2}
"""


def has_verifiers() -> bool:
    try:  # verifiers.v1: tests/verifiers itself imports as a namespace package `verifiers`
        return importlib.util.find_spec("verifiers.v1") is not None
    except ImportError:
        return False


@pytest.mark.skipif(has_verifiers(),
                    reason="verifiers is installed here (.venv-verifiers); the default tier's .venv lacks it")
def test_frl_train_without_verifiers_names_the_setup_script_in_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: r.yaml:6: stages[0].data.train: needs verifiers 0.4"), out.stderr
    assert "bash scripts/setup-verifiers.sh" in out.stderr
    assert not (tmp_path / "runs").exists()  # stopped at the recipe: no run folder, no model loaded
