"""With the HF backend the behaviour log-probs come from the trainer's own model: the mismatch the
GRPO and PPO stages log is ~0, and the IS weights are ~1."""
import json
import textwrap

import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.batch import for_optimizer, place_behaviour
from feedback_rl.loop.rollout import generate_rollouts
from feedback_rl.tokens import sequence_logprobs
from feedback_rl.tokens import rollout_batch
from feedback_rl.commands.train import train_recipe
from feedback_rl.rows.synthetic import addition
from frl_plugins.backends.hf import HFBackend

TOL = 1e-4


def test_hf_backend_logprobs_match_the_trainer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    backend = HFBackend(HFBackend.Options(), PluginContext(name="hf", run_dir="."))
    sampling = SamplingParams(max_new_tokens=6, temperature=0.7, top_p=1.0, top_k=0)
    rollouts = generate_rollouts(backend, model, tok, addition("train", 8, 0, 0), sampling, 4)
    batch = rollout_batch(rollouts, tok)
    with torch.no_grad():
        trainer = sequence_logprobs(model.eval(), batch, sampling.temperature)
    mask = batch.target_mask
    gap = ((trainer - place_behaviour(rollouts, batch)[0]).abs() * mask).max().item()
    assert mask.sum() > 30 and gap < TOL, gap


def test_ppo_batch_logs_the_mismatch_and_weights_of_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from feedback_rl import ScalarFeedback
    from feedback_rl.modeling.roles import build_models
    from frl_plugins.optimizers.ppo import PPO
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    sampling = SamplingParams(max_new_tokens=5, temperature=1.0)
    rollouts = generate_rollouts(HFBackend(HFBackend.Options(), None), model, tok, addition("train", 4, 0, 0),
                                 sampling, 2)
    ctx = PluginContext(name="ppo", run_dir=".", sampling=sampling, is_cap=2.0)
    ppo = PPO(PPO.Options(kl_coef=0.0), ctx)
    models = build_models(ppo.roles(), model, tok)
    batch = for_optimizer(ppo, ScalarFeedback(rollouts, torch.rand(len(rollouts))), models)
    assert batch.metrics["rollout/logprob_mismatch"] < TOL
    prepared = ppo.prepare(batch, models)
    mask = prepared.tokens.target_mask
    assert ((prepared.is_weights - 1).abs() * mask).max() < 10 * TOL
    ppo.loss(prepared, models)


def test_grpo_run_logs_a_tiny_mismatch_with_the_hf_backend(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: is-correction
        seed: 0
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition}}, eval: {{generator: addition, split: eval}}}}
            rewards:
              sources:
                - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
            rollout: {{num_generations: 4, max_new_tokens: 4, temperature: 1.0, top_p: 1.0, top_k: 0,
                      logprob_mismatch: true, is_cap: 2.0}}
            train: {{steps: 4, batch_size: 4, lr: 1.0e-3}}
            eval: {{num_prompts: 8}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    steps = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "rollout/logprob_mismatch" in s]
    assert len(logged) == 4
    assert all(s["rollout/logprob_mismatch"] < TOL for s in logged), [s["rollout/logprob_mismatch"] for s in logged]
    assert all(abs(s["rollout/is_ratio_mean"] - 1) < 10 * TOL for s in logged)
