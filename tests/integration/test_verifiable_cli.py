"""Verifiable rewards through the real ``frl`` CLI: reasoning-gym rows and grader, ``check: math``, a custom
rule function next to the recipe, and the one-line errors when a piece is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RG_RECIPE = """\
name: rg
output_dir: {runs}
model: {{tiny: {{n_positions: 256}}}}
stages:
  - name: grpo
    optimizer: grpo
    data:
      train: {{reasoning_gym: {task}, size: 40, seed: 0, config: {config}, instruction: "Answer in <answer></answer>."}}
      eval: {{reasoning_gym: {task}, size: 8, seed: 1, config: {config}}}
    rewards: {{sources: [{{name: task, type: reasoning_gym}}]}}
    rollout: {{num_generations: 2, max_new_tokens: 4}}
    train: {{steps: 2, batch_size: 2}}
    eval: {{num_prompts: 4}}
"""


def frl(*args, cwd, block=None):
    """The CLI in a subprocess; ``block`` names a module made unimportable (as if not installed)."""
    code = "import sys; from feedback_rl.commands.cli import main; sys.exit(main())"
    if block:
        code = f"import sys; sys.modules[{block!r}] = None; " + code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.parametrize("task,config", [("leg_counting", "{min_animals: 1, max_animals: 2}"),
                                         ("spell_backward", "{min_word_len: 3, max_word_len: 4}")])
def test_grpo_trains_on_a_reasoning_gym_task_graded_by_its_own_scorer(tmp_path, task, config):
    (tmp_path / "r.yaml").write_text(RG_RECIPE.format(runs=tmp_path / "runs", task=task, config=config))
    out = frl("train", "r.yaml", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "rg" / "metrics.jsonl").read_text().splitlines()]
    step = [m for m in metrics if "reward/task/mean" in m]
    assert len(step) == 2 and all(m["reward/task/error_rate"] == 0.0 for m in step)
    rollouts = [json.loads(x) for x in (tmp_path / "runs" / "rg" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 8 and all(r["scores"]["task"]["status"] == "ok" for r in rollouts)
    assert all(r["prompt"].endswith("Answer in <answer></answer>.") for r in rollouts)


@pytest.mark.parametrize("override,fragment", [
    ("stages.0.data.train.reasoning_gym=leg_countin", "r.yaml:8: stages[0].data.train: unknown reasoning-gym task "
                                                      "'leg_countin' (did you mean 'leg_counting'?)"),
    ("stages.0.data.train.config.min_animal=2", "stages[0].data.train.config: unknown key 'min_animal' for task "
                                                "'leg_counting' (did you mean 'min_animals'?)"),
    ("stages.0.data.train.sise=3", "stages[0].data.train.sise: unknown key for reasoning_gym (did you mean 'size'?)"),
    ("stages.0.data.eval.seed=0", "r.yaml:9: stages[0].data.eval: seed 0 is data.train's"),
    ("stages.0.data.train={reasoning_gim: leg_counting}", "no data source named by the keys reasoning_gim "
                                                         "(did you mean 'reasoning_gym'?)"),
    ("stages.0.rewards.sources.0.extract=tag", "stages[0].rewards.sources[0].extract: expected 'answer_tag'"),
])
def test_reasoning_gym_recipe_mistakes_are_one_line_and_exit_2(tmp_path, override, fragment):
    (tmp_path / "r.yaml").write_text(RG_RECIPE.format(runs=tmp_path / "runs", task="leg_counting",
                                                      config="{min_animals: 1, max_animals: 2}"))
    out = frl("validate", "r.yaml", "--set", override, cwd=tmp_path)
    assert out.returncode == 2 and fragment in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides,where", [
    (["stages.0.rewards.sources=[{name: c, type: rule, check: exact}]"], "r.yaml:8: stages[0].data.train"),
    (["stages.0.data.train=train.jsonl"], "r.yaml:10: stages[0].rewards.sources[0]"),
])
def test_without_reasoning_gym_a_recipe_naming_it_says_how_to_install_it(tmp_path, overrides, where):
    (tmp_path / "r.yaml").write_text(RG_RECIPE.format(runs=tmp_path / "runs", task="leg_counting", config="{}"))
    (tmp_path / "train.jsonl").write_text('{"prompt": "q", "answer": "1"}\n')
    args = ["validate", "r.yaml", "--set", "stages.0.data.eval=train.jsonl"] + [a for o in overrides for a in ("--set", o)]
    out = frl(*args, cwd=tmp_path, block="reasoning_gym.factory")
    assert out.returncode == 2, out.stderr
    line, = out.stderr.strip().splitlines()
    assert where in line and "needs the reasoning-gym package: pip install 'feedback_rl[reasoning-gym]'" in line


def test_grpo_with_check_math_and_a_custom_function_beside_the_recipe(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_checks.py").write_text(textwrap.dedent("""\
        def short(completion, row):
            return len(completion.strip()) <= 3
        """))
    (folder / "r.yaml").write_text(textwrap.dedent(f"""\
        name: m
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition}}}}
            rewards:
              sources:
                - {{name: math, type: rule, check: math, no_answer: wrong}}
                - {{name: short, type: rule, check: custom, function: "my_checks:short"}}
            rollout: {{num_generations: 2, max_new_tokens: 3}}
            train: {{steps: 2, batch_size: 2}}
            eval: {{num_prompts: 4}}
        """))
    out = frl("train", str(folder / "r.yaml"), "--no-progress", cwd=tmp_path)  # cwd is not the recipe's folder
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(x) for x in (tmp_path / "runs" / "m" / "metrics.jsonl").read_text().splitlines()]
    step = [m for m in metrics if "reward/short/mean" in m]
    assert len(step) == 2 and all(m["reward/short/error_rate"] == 0.0 and m["reward/math/error_rate"] == 0.0
                                  for m in step)
