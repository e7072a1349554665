"""A stage's ``environment:`` key: the environment must exist, takes its options like every plugin (one-line
errors naming the file, line and key), and is refused where episodes cannot run yet."""
from __future__ import annotations

import subprocess
import sys

import pytest

from feedback_rl.config.recipe import load
from feedback_rl.errors import UserError

RECIPE = """\
name: episodes
model: {path: builtin:tiny-gpt2}
stages:
  - name: grpo
    optimizer: grpo
    data:
      train: {guess_number: 10, size: 20}
    environment: {type: guess_number, max_turns: 3}
    rewards:
      sources: [{name: env, type: environment}]
    rollout: {num_generations: 2, max_new_tokens: 4}
    train: {steps: 1, batch_size: 2}
"""


def check(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load(path)


def test_the_environment_and_its_options_are_validated(tmp_path):
    recipe = check(tmp_path, RECIPE)
    assert recipe.options("environment", 0).max_turns == 3


@pytest.mark.parametrize("change, message", [
    (("guess_number, max_turns", "guess_numbr, max_turns"), "r.yaml:8: stages[0].environment.type: "),
    (("max_turns: 3", "max_turn: 3"), "r.yaml:8: stages[0].environment.max_turn: unknown key for guess_number "
                                      "(did you mean 'max_turns'?)"),
    (("max_turns: 3", "max_turns: 0"), "r.yaml:8: stages[0].environment.max_turns: "),
    (("max_new_tokens: 4}", "max_new_tokens: 4, overlap: 1}"),
     "r.yaml:11: stages[0].rollout.overlap: episodes are not generated one step ahead yet"),
])
def test_a_mistake_in_the_environment_key_is_one_line_naming_the_key(tmp_path, change, message):
    with pytest.raises(UserError) as e:
        check(tmp_path, RECIPE.replace(*change))
    assert f"/{message}" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_sft_stage_with_an_environment_is_refused(tmp_path):
    text = RECIPE.replace("optimizer: grpo", "optimizer: sft").replace(
        "train: {guess_number: 10, size: 20}", "train: {generator: addition, split: train, size: 8}")
    with pytest.raises(UserError, match=r"r.yaml:8: stages\[0\].environment: this stage generates nothing"):
        check(tmp_path, text)


def test_frl_validate_names_an_unknown_environment_and_exits_2(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE.replace("guess_number, max_turns", "guess_numbr, max_turns"))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "stages[0].environment.type" in out.stderr and "guess_number" in out.stderr, out.stderr
