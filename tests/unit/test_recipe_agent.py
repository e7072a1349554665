"""A stage's ``agent:`` key: the function it names must load and take (row, client), checked by ``frl validate``
before any model loads, one line naming the file, line and key for each mistake."""
from __future__ import annotations

import subprocess
import sys

import pytest

from feedback_rl.config.recipe import load
from feedback_rl.errors import UserError

RECIPE = """\
name: agents
model: {path: builtin:tiny-gpt2}
stages:
  - name: grpo
    optimizer: grpo
    data:
      train: {generator: addition, split: train, size: 8}
    agent: agent.py:solve
    rewards:
      sources: [{name: agent, type: environment}]
    rollout: {num_generations: 2, max_new_tokens: 4}
    train: {steps: 1, batch_size: 2}
"""

AGENT = "def solve(row, client):\n    return 1.0\n\nasync def solve_async(row, client):\n    return 1.0\n\n" \
        "def lonely(row):\n    return 1.0\n\nnot_a_function = 3\n"


def check(tmp_path, text, agent=AGENT):
    (tmp_path / "agent.py").write_text(agent)
    (tmp_path / "r.yaml").write_text(text)
    return load(tmp_path / "r.yaml")


@pytest.mark.parametrize("ref", ["agent.py:solve", "agent.py:solve_async", "{function: agent.py:solve, timeout_s: 5}",
                                 "operator:add"])
def test_a_function_in_a_file_beside_the_recipe_or_a_module_validates(tmp_path, ref):
    recipe = check(tmp_path, RECIPE.replace("agent.py:solve", ref))
    assert recipe.stages[0].agent.function == ref.removeprefix("{function: ").split(",")[0]


@pytest.mark.parametrize("ref, message", [
    ("agents.py:solve", "stages[0].agent.function: file not found: agents.py"),
    ("agent.py:solv", "stages[0].agent.function: agent.py has no function 'solv'"),
    ("agent.py:lonely", "stages[0].agent.function: agent.py:lonely must take (row, client): it is lonely(row)"),
    ("agent.py:not_a_function", "stages[0].agent.function: agent 'agent.py:not_a_function' is not callable"),
    ("agent.py", "stages[0].agent.function: expected PATH.py:function or module:function, got 'agent.py'"),
    ("no_such_module_here:solve", "stages[0].agent.function: cannot import agent 'no_such_module_here:solve' "
                                  "(looked in "),
    ("{function: agent.py:solve, timeout_s: 0}", "stages[0].agent.timeout_s: "),
])
def test_a_mistake_in_the_agent_key_is_one_line_naming_the_key(tmp_path, ref, message):
    with pytest.raises(UserError) as e:
        check(tmp_path, RECIPE.replace("agent.py:solve", ref))
    assert "r.yaml:8: " in str(e.value) and message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_agent_file_that_fails_to_import_is_named(tmp_path):
    with pytest.raises(UserError, match=r"r.yaml:8: stages\[0\].agent.function: agent.py failed to import: "
                                        r"ZeroDivisionError: division by zero$"):
        check(tmp_path, RECIPE, agent="x = 1 / 0\n")


@pytest.mark.parametrize("change, message", [
    (("    agent: agent.py:solve\n", "    agent: agent.py:solve\n    environment: {type: guess_number}\n"),
     "stages[0].agent: a stage's rollouts come from an environment or an agent, not both"),
    (("max_new_tokens: 4}", "max_new_tokens: 4, overlap: 1}"), "stages[0].rollout.overlap: episodes are not "
                                                               "generated one step ahead yet: remove rollout.overlap "
                                                               "from a stage with an agent"),
    (("optimizer: grpo", "optimizer: sft"), "stages[0].agent: this stage generates nothing"),
])
def test_stage_combinations_an_agent_cannot_run_in_are_refused(tmp_path, change, message):
    with pytest.raises(UserError) as e:
        check(tmp_path, RECIPE.replace(*change))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_frl_validate_names_a_missing_agent_function_and_exits_2(tmp_path):
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "r.yaml").write_text(RECIPE.replace("agent.py:solve", "agent.py:solver"))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "stages[0].agent.function: agent.py has no function 'solver'" in out.stderr, out.stderr
