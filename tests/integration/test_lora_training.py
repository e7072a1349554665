"""A LoRA DPO stage on the tiny model: only adapter tensors change, outputs are adapter folders,
`frl export --merge` gives a plain HF model with the same logits, and a LoRA run resumes exactly."""
from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.modeling import lora
from feedback_rl.modeling.batching import forward_logits, tokenize
from feedback_rl.commands.cli import main as frl
from feedback_rl.loop.engine import Engine
from feedback_rl.commands.train import train_recipe
from feedback_rl.modeling.loading import load_policy
from feedback_rl.plugins import default
from feedback_rl.config.recipe import ModelSpec, load
from feedback_rl.run.folder import Run

STEPS = 6


def write_recipe(tmp: Path) -> Path:
    path = tmp / "lora.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: lora-dpo
        seed: 0
        output_dir: {tmp / 'runs'}
        model: {{path: builtin:tiny-gpt2, lora: {{r: 8, alpha: 16}}}}
        stages:
          - name: dpo
            optimizer: {{type: dpo, beta: 0.1}}
            data: {{train: {{generator: sort_pairs, split: train, holdout: 300}}}}
            train: {{steps: {STEPS}, batch_size: 16, lr: 5.0e-3}}
            checkpoint: {{every: 2, keep: 3}}
        """))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The run folder, the recipe and the engine's trained policy (still in memory)."""
    tmp = tmp_path_factory.mktemp("lora")
    recipe = write_recipe(tmp)
    pm, reg = default()
    rec = load(recipe, [], reg)
    run = Run.create(Path(rec.output_dir), rec.name)
    engine = Engine(rec, pm, reg, run, progress=False)
    assert engine.train()["status"] == "finished"
    return run.dir, recipe, engine.policy


def test_lora_dpo_trains_only_the_adapter(trained):
    run_dir, _, policy = trained
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "loss" in m]
    assert len(train) == STEPS
    assert abs(train[0]["loss"] - math.log(2)) < 1e-5          # a fresh adapter: policy == reference
    assert train[-1]["loss"] < train[0]["loss"] - 0.05, [m["loss"] for m in train]
    base = load_file(run_dir / "base_model" / "model.safetensors")
    state = {k: v for k, v in policy.get_base_model().state_dict().items()}
    lora_keys = [k for k in state if "lora_" in k]
    base_keys = {k.replace("base_layer.", ""): k for k in state if "lora_" not in k}
    assert lora_keys and all(state[k].abs().sum() > 0 for k in lora_keys if "lora_B" in k)  # B starts at 0
    unchanged = [k for k, mine in base_keys.items() if k in base and torch.equal(state[mine], base[k])]
    missing = set(base) - set(base_keys)
    assert not missing and len(unchanged) == len(base), set(base) - set(unchanged)


def test_stage_outputs_and_final_are_adapter_folders(trained):
    run_dir = trained[0]
    last_step = ckpt.complete(run_dir / "checkpoints")[-2]  # the newest before the stage-end checkpoint
    for folder in (run_dir / "final", run_dir / "stages" / "dpo", last_step / "policy"):
        assert lora.is_adapter_folder(folder) and not (folder / "model.safetensors").exists(), folder
        assert (folder / "tokenizer_config.json").exists()
    assert torch.load(last_step / "reference.pt") == {}     # the reference holds no weights
    end = ckpt.latest(run_dir)  # names the stage output instead of a second copy of the adapter
    assert ckpt.policy_folder(end, ckpt.load_state(end)) == run_dir / "stages" / "dpo"
    assert not (end / "policy").exists()


def test_export_merge_gives_a_plain_model_with_the_same_logits(trained, tmp_path):
    run_dir = trained[0]
    assert frl(["export", str(run_dir), str(tmp_path / "merged"), "--merge"]) == 0
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    with_adapter, _ = load_policy(ModelSpec(path=str(run_dir / "final")), Path.cwd(), tmp_path, 0)
    batch = tokenize(tok, ["sort dbca:", "sort ba:"], ["abcd", "ab"])
    with torch.no_grad():
        want = forward_logits(with_adapter.eval(), batch)
        got = forward_logits(plain, batch)
        base = forward_logits(AutoModelForCausalLM.from_pretrained(run_dir / "base_model").eval(), batch)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - base).abs().max() > 1e-3            # the merge carried the adapter's update
    # without --merge a full model is copied as it is; a folder that is neither is refused
    assert frl(["export", str(tmp_path / "merged"), str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (tmp_path / "merged" / "model.safetensors").read_bytes()
    (tmp_path / "empty").mkdir()
    assert frl(["export", str(tmp_path / "empty"), str(tmp_path / "x"), "--merge"]) == 2


def test_a_lora_run_resumes_from_its_checkpoint_exactly(trained, tmp_path):
    run_dir, recipe, _ = trained
    straight = load_file(run_dir / "final" / "adapter_model.safetensors")
    copy = tmp_path / "runs" / "lora-dpo"
    shutil.copytree(run_dir, copy)
    # pretend the run died after the step-2 checkpoint: later checkpoints, logs and outputs are gone
    for later in ckpt.complete(copy / "checkpoints")[1:]:
        shutil.rmtree(later)
    (copy / "checkpoints" / "latest").write_text(ckpt.complete(copy / "checkpoints")[0].name)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "stages")
    (copy / "status.json").unlink()  # a killed run never said it finished
    moved = tmp_path / "lora.yaml"
    moved.write_text(recipe.read_text().replace(str(run_dir.parent), str(copy.parent)))
    run, summary = train_recipe(moved, resume=True)
    assert run.dir == copy and summary["status"] == "finished"
    resumed = load_file(copy / "final" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert steps == list(range(1, STEPS + 1))


def test_a_second_lora_stage_starts_from_the_first_stages_model(tmp_path):
    """SFT then DPO with one model.lora: DPO's reference (adapter off) is the SFT model, because the
    engine folds the SFT adapter into a saved base and puts a fresh adapter on it."""
    recipe = tmp_path / "two.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: two
        output_dir: {tmp_path / 'runs'}
        model: {{path: builtin:tiny-gpt2, lora: {{r: 8, alpha: 16}}}}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {{generator: sort, split: train, size: 64}}}}
            train: {{steps: 3, batch_size: 16, lr: 5.0e-3}}
          - name: dpo
            optimizer: {{type: dpo, beta: 0.1}}
            data: {{train: {{generator: sort_pairs, split: train, size: 64}}}}
            train: {{steps: 2, batch_size: 16, lr: 5.0e-3}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    folded = run.dir / "bases" / "dpo"
    assert json.loads((run.dir / "stages" / "dpo" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(folded)
    sft, tok = load_policy(ModelSpec(path=str(run.dir / "stages" / "sft")), Path.cwd(), tmp_path, 0)
    base = AutoModelForCausalLM.from_pretrained(folded)
    batch = tokenize(tok, ["sort dcba:", "sort bca:"], ["abcd", "abc"])
    with torch.no_grad():
        assert torch.allclose(forward_logits(base.eval(), batch), forward_logits(sft.eval(), batch), atol=1e-5)
        original = AutoModelForCausalLM.from_pretrained(run.dir / "base_model")
        assert not torch.allclose(forward_logits(original.eval(), batch), forward_logits(base, batch), atol=1e-3)
