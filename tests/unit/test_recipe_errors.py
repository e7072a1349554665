"""Every bad-recipe case fails before any model loads: one line, the key's path, exit code 2."""
import subprocess
import sys
import textwrap

import pytest

from feedback_rl import RewardSource
from feedback_rl.commands.cli import main
from feedback_rl.plugins import build_registry, get_plugin_manager

GOOD = textwrap.dedent("""\
    name: t
    model: {path: builtin:tiny-gpt2}
    stages:
      - name: sft
        optimizer: sft
        data: {train: {generator: addition}}
      - name: grpo
        optimizer: {type: grpo, beta: 0.0}
        data: {train: {generator: addition}}
        rewards:
          sources:
            - {name: correct, type: rule, check: exact}
        rollout: {num_generations: 4}
        train: {steps: 10, lr: 1.0e-5}
""")

# (case, replace this, with this, expected message fragment)
CASES = [
    ("unknown top-level key", "name: t\n", "name: t\nsed: 1\n", "t.yaml:2: sed: unknown key (did you mean 'seed'?)"),
    ("unknown stage key", "rollout: {num_generations: 4}", "rollout: {num_generation: 4}",
     "stages[1].rollout.num_generation: unknown key (did you mean 'num_generations'?)"),
    ("wrong type", "train: {steps: 10, lr: 1.0e-5}", "train: {steps: ten, lr: 1.0e-5}",
     "stages[1].train.steps: expected a valid integer"),
    ("out of range", "train: {steps: 10, lr: 1.0e-5}", "train: {steps: 10, lr: -1}",
     "stages[1].train.lr: expected greater than 0"),
    ("missing data file", "data: {train: {generator: addition}}\n  - name: grpo",
     "data: {train: nowhere.jsonl}\n  - name: grpo", "stages[0].data.train: file not found: nowhere.jsonl"),
    ("missing model file", "path: builtin:tiny-gpt2", "path: ./no-such-model", "model.path: file not found"),
    ("unknown optimizer", "optimizer: {type: grpo, beta: 0.0}", "optimizer: {type: grop, beta: 0.0}",
     "stages[1].optimizer.type: unknown optimizer 'grop' (did you mean 'grpo'?)"),
    ("unknown reward source", "type: rule,", "type: rules,", "unknown reward source 'rules' (did you mean 'rule'?)"),
    ("unknown plugin option", "beta: 0.0}", "betta: 0.0}", "stages[1].optimizer.betta: unknown key for grpo (did you mean 'beta'?)"),
    ("wrong plugin option type", "beta: 0.0}", "beta: lots}", "stages[1].optimizer.beta: expected a valid number"),
    ("source option of the plugin", "check: exact}", "check: exakt}", "stages[1].rewards.sources[0].check:"),
    # misspelt, a required key is both unknown and missing: the unknown spelling is named, with the right one
    ("misspelt required plugin option", "check: exact}", "chek: exact}",
     "stages[1].rewards.sources[0].chek: unknown key for rule (did you mean 'check'?)"),
    ("unknown backend", "rollout: {num_generations: 4}", "rollout: {num_generations: 4, backend: vllmm}",
     "stages[1].rollout.backend: unknown backend 'vllmm'"),
    ("scalar optimizer without sources", "    rewards:\n      sources:\n        - {name: correct, type: rule, check: exact}\n", "",
     "stages[1].rewards.sources: optimizer 'grpo' consumes scalar feedback; add at least one reward source"),
    ("pairwise source cannot feed a scalar optimizer", "type: rule, check: exact}", "type: ab_only}",
     "optimizer 'grpo' consumes scalar feedback, but reward source 'correct' (ab_only) gives only binary, pairs"),
    ("gate on an unknown source", "check: exact}", "check: exact, gate: corect}",
     "gate source 'corect' must be a source listed before 'correct'"),
    ("invalid YAML", "name: t\n", "name: [t\n", "t.yaml:"),
    ("no stages", GOOD[GOOD.index("stages:"):], "stages: []\n", "stages: expected at least 1 item(s), got none"),
    # the backend samples from the top-p distribution, the trainer scores the whole one: every weight < 1
    ("top_p with importance weights", "rollout: {num_generations: 4}",
     "rollout: {num_generations: 4, overlap: 1, top_p: 0.9}",
     "stages[1].rollout.top_p: top_p with importance weights (rollout.overlap): the backend samples from the "
     "truncated distribution"),
    ("top_k with is_cap", "rollout: {num_generations: 4}", "rollout: {num_generations: 4, is_cap: 2.0, top_k: 5}",
     "stages[1].rollout.top_k: top_k with importance weights (rollout.is_cap)"),
    ("is_cap on an optimizer without importance weights", "optimizer: sft\n", "optimizer: sft\n    rollout: {is_cap: 2.0}\n",
     "stages[0].rollout.is_cap: optimizer 'sft' does not weight its loss by importance weights"),
]


class ABOnly(RewardSource):
    name = "ab_only"
    pairwise = True


@pytest.fixture
def registry_with_pairwise(monkeypatch):
    import feedback_rl.plugins as plugins
    pm = get_plugin_manager()
    reg = build_registry(pm)
    reg.classes["reward_sources"]["ab_only"] = ABOnly
    monkeypatch.setattr(plugins, "_default", (pm, reg))
    return reg


@pytest.mark.parametrize("case,old,new,message", CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_gives_one_line_and_exit_code_2(case, old, new, message, tmp_path, capsys,
                                                   registry_with_pairwise):
    assert old in GOOD, case
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert "Traceback" not in err


def test_good_recipe_validates(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path)]) == 0
    assert "ok: sft (sft) -> grpo (grpo)" in capsys.readouterr().out


@pytest.mark.parametrize("override,message", [
    ("stages.grpo.train.lr=abc", "stages[1].train.lr: expected a valid number"),
    ("stages.gpro.train.lr=1", "--set stages.gpro: no item named 'gpro' (did you mean 'grpo'?)"),
    ("stages.7.train.lr=1", "--set stages.7: index out of range"),
    ("stages.0.train.stepz=5", "stages[0].train.stepz: unknown key (did you mean 'steps'?)"),
    ("seed", "--set seed: expected key.path=value"),
])
def test_bad_override(override, message, tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path), "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_override_changes_a_value_by_stage_name(tmp_path):
    from feedback_rl.config.recipe import load
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    recipe = load(path, ["stages.grpo.train.lr=3e-4", "seed=7"])
    assert recipe.stages[1].train.lr == 3e-4 and recipe.seed == 7


def test_real_cli_prints_no_traceback(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("lr: 1.0e-5", "lr: fast"))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {path}:14: stages[1].train.lr: expected a valid number, "
                                               "unable to parse string as a number, got 'fast'"]


def test_missing_recipe_file(capsys):
    assert main(["validate", "/nonexistent/recipe.yaml"]) == 2
    assert "no such recipe file" in capsys.readouterr().err
