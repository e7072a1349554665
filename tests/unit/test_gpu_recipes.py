"""The GPU tier's recipes (tests/gpu/recipes) are right on this CPU machine already, so a typo cannot hide until
a GPU is lent: each validates (with the --set the tier gives it), trains two steps per stage in bf16, and
together they cover every built-in optimizer and reward kind; every recipe is used by a tier test."""
from pathlib import Path

import pytest
import yaml

from feedback_rl.commands.cli import main

GPU = Path(__file__).parents[1] / "gpu"
RECIPES = sorted((GPU / "recipes").glob("*.yaml"))
# what the tier's tests add to a recipe on the command line (tests/gpu/test_*.py)
SETS = {"judge.yaml": ["stages.grpo.rewards.sources.critic.base_url=http://127.0.0.1:8/v1"],
        "human.yaml": ["stages.dpo.rewards.sources.people.db=/tmp/gpu-tier-labels.sqlite"],
        "grpo.yaml": ["stages.grpo.checkpoint.every=1", "stages.grpo.checkpoint.keep=3"]}
# built-in kinds the tier leaves out, and why
LEFT_OUT = {"reasoning_gym": "scores text on the CPU as the rule checker does (which the tier runs), with no "
                             "device of its own"}


def stages(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["stages"]


def kind(entry) -> str:
    return entry if isinstance(entry, str) else entry["type"]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_a_gpu_recipe_validates(path, capsys):
    args = [a for s in SETS.get(path.name, []) for a in ("--set", s)]
    assert main(["validate", str(path), *args]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_a_gpu_recipe_takes_two_bf16_steps_a_stage(path):
    assert [(s["train"]["steps"], s["train"]["precision"]) for s in stages(path)] == [(2, "bf16")] * len(stages(path))


def test_the_gpu_recipes_cover_every_builtin_optimizer_and_reward_kind(registry):
    used = [s for p in RECIPES for s in stages(p)]
    optimizers = {kind(s["optimizer"]) for s in used}
    sources = {kind(src) for s in used for src in s.get("rewards", {}).get("sources", [])}
    builtin = {kind: {n for n, cls in registry.classes[kind].items() if cls.__module__.startswith("frl_plugins.")}
               for kind in ("optimizers", "reward_sources")}
    assert optimizers == builtin["optimizers"], optimizers
    assert sources == builtin["reward_sources"] - set(LEFT_OUT), sources
    assert any(s.get("rollout", {}).get("backend") == "vllm" for s in used)


def test_every_gpu_recipe_is_used_by_a_gpu_test():
    tests = "".join(p.read_text() for p in GPU.glob("test_*.py"))
    assert [p.name for p in RECIPES if f'"{p.name}"' not in tests and f'"{p.stem}"' not in tests] == []
