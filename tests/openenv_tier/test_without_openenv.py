"""Without OpenEnv installed (the default tier's .venv): `frl plugins` still lists the `openenv` environment, and
a recipe that uses it fails validation in one line that says how to install it, exit 2, before any model loads."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openenv") is not None,
                                reason="OpenEnv is installed here: this is the default tier's check")

RECIPE = """\
name: openenv-missing
model: {path: builtin:tiny-gpt2}
stages:
  - name: grpo
    optimizer: grpo
    data: {train: {guess_number: 10, size: 20}}
    environment:
      type: openenv
      url: ws://127.0.0.1:9
    rewards: {sources: [{name: env, type: environment}]}
    train: {steps: 1, batch_size: 2}
"""


def frl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_frl_plugins_lists_the_openenv_environment_without_openenv(tmp_path):
    out = frl("plugins", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("openenv ") and line.endswith("environment 'openenv'")
               for line in out.stdout.splitlines()), out.stdout


@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_recipe_with_openenv_says_how_to_install_it_in_one_line(tmp_path, command):
    (tmp_path / "r.yaml").write_text(RECIPE)
    out = frl(command, "r.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr == ("error: r.yaml:7: stages[0].environment: needs OpenEnv: run `bash scripts/setup-openenv.sh` "
                          "(it makes .venv-openenv) or `pip install 'feedback_rl[openenv]'`\n")
    assert not (tmp_path / "runs").exists()   # nothing started: no run folder, no model
