"""A run's folder: lock, metrics, rollouts with each source's score, an HF model; plots and `frl runs`."""
import json
import textwrap

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.commands.cli import main
from feedback_rl.commands.train import train_recipe


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("art")
    path = tmp / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: art
        seed: 5
        output_dir: {tmp / 'runs'}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {{generator: addition}}, eval: {{generator: addition, split: eval}}}}
            train: {{steps: 3, batch_size: 8, lr: 1.0e-3}}
            eval: {{num_prompts: 10, sources: [{{name: em, type: rule, check: exact}}]}}
            rollout: {{max_new_tokens: 4}}
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition}}, eval: {{generator: addition, split: eval}}}}
            rewards: {{sources: [{{name: em, type: rule, check: exact}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 4}}
            train: {{steps: 2, batch_size: 2}}
            eval: {{num_prompts: 10}}
        """))
    run, summary = train_recipe(path)
    return run.dir


def test_lock_has_recipe_versions_seed_and_commit(run_dir):
    lock = yaml.safe_load((run_dir / "recipe.lock.yaml").read_text())
    assert lock["seed"] == 5 and lock["recipe"]["stages"][1]["optimizer"]["type"] == "grpo"
    assert lock["packages"]["torch"] and "rule" in lock["plugins"] and "git_commit" in lock


def test_rollouts_log_every_rollout_with_each_sources_score(run_dir):
    rows = [json.loads(l) for l in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2
    assert all(r["scores"]["em"]["status"] == "ok" and r["stage"] == "grpo" for r in rows)


def test_final_model_loads_with_transformers(run_dir):
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    assert model.config.n_layer == 4 and tok.eos_token == "<eos>"
    assert (run_dir / "stages" / "sft" / "model.safetensors").exists()


def test_plot_writes_readable_pngs(run_dir, capsys):
    assert main(["plot", str(run_dir)]) == 0
    names = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert {"rewards.png", "loss.png", "eval.png", "length.png"} <= set(names)
    assert all((run_dir / "plots" / n).stat().st_size > 5000 for n in names)


def test_frl_runs_lists_status_step_and_best_eval(run_dir, capsys):
    assert main(["runs", "--dir", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "status", "stage", "step", "best_eval", "checkpoint"]
    assert out[1].split()[:4] == ["art", "finished", "grpo", "2"]


def test_plot_of_a_folder_that_is_no_run_is_a_clean_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
