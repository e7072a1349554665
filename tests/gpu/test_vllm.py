"""The vLLM backend's sleep mode, which only a GPU has (tests/vllm_tier covers the rest on any platform).

On CUDA the backend sleeps (level 2: weights and KV cache freed) after every generation; a push
while asleep waits for the next generation, which wakes the engine and pushes the policy's current
weights. Tolerance as in tests/vllm_tier/test_vllm_engine.py: float32, mean |trainer - vLLM| < MEAN_TOL.
"""
import pytest
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.batch import place_behaviour
from feedback_rl.loop.rollout import generate_rollouts
from feedback_rl.tokens import rollout_batch, sequence_logprobs

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]

MEAN_TOL = 2e-3


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return model.cuda(), tok


def rows(n):
    from feedback_rl.rows.synthetic import addition
    return addition("train", n, 0, 0)


def mismatch(model, tok, rollouts, temperature):
    batch = rollout_batch(rollouts, tok).to(next(model.parameters()).device)
    with torch.no_grad():
        trainer = sequence_logprobs(model.eval(), batch, temperature)
    mask = batch.target_mask
    return float(((trainer - place_behaviour(rollouts, batch)[0]).abs() * mask).sum() / mask.sum())


def test_an_update_pushed_while_asleep_reaches_the_woken_engine(tiny_model_dir):
    from frl_plugins.backends.vllm import VLLMBackend
    backend = VLLMBackend(VLLMBackend.Options(dtype="float32", gpu_memory_utilization=0.2),
                          PluginContext(name="vllm", run_dir=".", seed=0))
    try:
        model, tok = load(tiny_model_dir)
        sampling = SamplingParams(max_new_tokens=6, temperature=1.0)
        generate_rollouts(backend, model, tok, rows(4), sampling, 2)      # built from these weights
        assert backend.sleep and backend._sleeping
        old = load(tiny_model_dir)[0]
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
        backend.sync_weights(model, 1)
        rollouts = generate_rollouts(backend, model, tok, rows(16), sampling, 4, policy_version=1)
        new_gap, old_gap = mismatch(model, tok, rollouts, 1.0), mismatch(old, tok, rollouts, 1.0)
        assert new_gap < MEAN_TOL and old_gap > 50 * MEAN_TOL, (new_gap, old_gap)
    finally:
        backend.close()
