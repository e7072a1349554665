"""The vLLM backend on a GPU (skipped without CUDA or vllm; tests/unit/test_vllm_backend.py runs everywhere).

Tolerance: vLLM runs the tiny model in float32 here, yet its kernels (paged attention, fused ops)
differ from the trainer's eager forward; the mean |trainer - vLLM| log-prob over completion tokens
must stay below MEAN_TOL. In bfloat16 expect ~1e-2: that is what is_cap corrects for.
"""
import json
import textwrap

import pytest
import torch

from feedback_rl import (
    PluginContext, SamplingParams, behaviour_logprobs, generate_rollouts, sequence_logprobs,
    rollout_batch,
)
from frl_plugins.backends.vllm import VLLMBackend

MEAN_TOL = 2e-3
OPTIONS = dict(dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2)


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def rows(n):
    from feedback_rl.synthetic import addition
    return addition("train", n, 0, 0)


def mismatch(model, tok, rollouts, temperature):
    batch = rollout_batch(rollouts, tok)
    with torch.no_grad():
        trainer = sequence_logprobs(model.eval(), batch, temperature)
    mask = batch.target_mask
    return float(((trainer - behaviour_logprobs(rollouts, batch)).abs() * mask).sum() / mask.sum())


# ------------------------------------------------------------------ on a GPU with vllm
@pytest.mark.gpu
def test_grpo_recipe_runs_on_the_vllm_backend(tmp_path):
    pytest.importorskip("vllm")
    from feedback_rl.train import train_recipe
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: grpo-vllm
        seed: 0
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: {{type: grpo, logprob_mismatch: true, is_cap: 2.0}}
            data: {{train: {{generator: addition}}, eval: {{generator: addition, split: eval}}}}
            rewards:
              sources:
                - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
            rollout:
              backend: vllm
              backend_options: {json.dumps(OPTIONS)}
              num_generations: 4
              max_new_tokens: 4
            train: {{steps: 3, batch_size: 4, lr: 1.0e-3}}
            eval: {{num_prompts: 8}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    steps = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    gaps = [s["rollout/logprob_mismatch"] for s in steps if "rollout/logprob_mismatch" in s]
    assert len(gaps) == 3 and max(gaps) < MEAN_TOL, gaps


@pytest.fixture(scope="module")
def vllm_backend():
    pytest.importorskip("vllm")
    backend = VLLMBackend(VLLMBackend.Options(**OPTIONS), PluginContext(name="vllm", run_dir=".", seed=0))
    yield backend
    backend.close()


@pytest.mark.gpu
def test_vllm_generates_like_the_hf_backend_with_matching_logprobs(vllm_backend, tiny_model_dir):
    model, tok = load(tiny_model_dir)
    sampling = SamplingParams(max_new_tokens=6, temperature=0.8, top_p=1.0, top_k=0)
    rollouts = generate_rollouts(vllm_backend, model, tok, rows(16), sampling, 4)
    assert len(rollouts) == 64
    for r in rollouts:
        assert r.prompt_ids == tok(r.prompt, add_special_tokens=False)["input_ids"]
        assert len(r.logprobs) == len(r.completion_ids) <= 6
        ended = tok.eos_token_id in r.completion_ids
        assert r.truncated == (not ended)
        if ended:   # the EOS closes the completion, as with the HF backend
            assert r.completion_ids.index(tok.eos_token_id) == len(r.completion_ids) - 1
    assert mismatch(model, tok, rollouts, sampling.temperature) < MEAN_TOL


@pytest.mark.gpu
def test_sync_weights_makes_vllm_follow_the_updated_policy(vllm_backend, tiny_model_dir):
    model, tok = load(tiny_model_dir)
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0)
    generate_rollouts(vllm_backend, model, tok, rows(4), sampling, 2)      # built from these weights
    old = load(tiny_model_dir)[0]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    vllm_backend.sync_weights(model, 1)
    assert vllm_backend.version == 1
    rollouts = generate_rollouts(vllm_backend, model, tok, rows(16), sampling, 4, policy_version=1)
    new_gap = mismatch(model, tok, rollouts, 1.0)
    old_gap = mismatch(old, tok, rollouts, 1.0)
    assert new_gap < MEAN_TOL and old_gap > 50 * MEAN_TOL, (new_gap, old_gap)
