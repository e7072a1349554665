"""A plugin package kept under tests/ is installed with pip and trains a stage with its reward source."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "plugin_pkg"


@pytest.fixture(scope="module")
def installed_plugin():
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(PKG)]
    subprocess.run(pip, check=True, capture_output=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "frl-example-plugin"], capture_output=True)


def frl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_frl_plugins_lists_the_outside_plugin_with_its_version(installed_plugin):
    out = frl("plugins")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("example"))
    assert "frl-example-plugin 0.2.0" in line and "reward source 'short_answer'" in line


def test_outside_plugin_adds_a_command(installed_plugin):
    assert frl("example-hello").stdout.strip() == "hello from frl-example-plugin"


def test_allowlist_can_leave_the_outside_plugin_out(installed_plugin, monkeypatch):
    monkeypatch.setenv("FRL_LOAD_PLUGINS", "rule,sft,grpo,hf,jsonl")
    out = frl("plugins")
    assert "example" not in out.stdout and "rule" in out.stdout


def test_a_stage_trains_with_the_outside_reward_source(installed_plugin, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: outside
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: {{type: grpo}}
            data: {{train: {{generator: addition}}, eval: {{generator: addition, split: eval}}}}
            rewards:
              sources:
                - {{name: short, type: short_answer, max_chars: 2}}
            rollout: {{num_generations: 4, max_new_tokens: 4}}
            train: {{steps: 3, batch_size: 4, lr: 1.0e-4}}
            eval: {{num_prompts: 8}}
        """))
    out = frl("train", str(recipe), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "runs" / "outside"
    import json
    steps = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "loss" in s]
    assert len(trained) == 3 and all("reward/short/mean" in s for s in trained)
    assert (run / "example_plugin_saw_end.txt").read_text() == "finished"
    rollouts = [json.loads(l) for l in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 3 * 4 * 4 and all("short" in r["scores"] for r in rollouts)
