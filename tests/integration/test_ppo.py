"""PPO on the tiny model: RLHF (SFT -> reward model -> PPO against it) and ReFT (SFT -> PPO with a rule)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from feedback_rl.commands.train import train_recipe

RECIPES = Path(__file__).parents[2] / "recipes"


def _steps(run, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and "loss" in r]


def test_rlhf_ppo_raises_the_reward_model_score_within_the_kl_limit(tmp_path):
    run, summary = train_recipe(RECIPES / "rlhf-ppo.yaml", [
        f"output_dir={tmp_path}", "stages.ppo.train.steps=16", "stages.ppo.eval.num_prompts=20",
        "stages.sft.eval.num_prompts=20",
    ])
    assert summary["status"] == "finished"
    steps = _steps(run, "ppo")
    rewards = [s["reward/rm/mean"] for s in steps]   # fresh rollouts of the current policy, each step
    kls = [s["kl/sequence"] for s in steps]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    print(f"mean RM score of fresh rollouts: first 4 steps {first:.3f}, last 4 steps {last:.3f}; "
          f"KL per completion: mean {sum(kls) / len(kls):.3f}, per step {[round(k, 2) for k in kls]}")
    assert last > first + 0.5
    # the KL per completion stays under the recipe's target_kl (1.0) on a typical step. Not the mean over the
    # steps: each step's figure is a 32-rollout estimate with a heavy tail, and target_kl is the controller's set
    # point, not a ceiling. Measured at a1e60e6: 1 thread mean 0.728, median 0.485; 2 threads (the same to step
    # 9, then rounding parts them) mean 1.003 because one step read 4.25, median 0.63
    limit = 1.0
    assert statistics.median(kls) < limit, kls
    # the adaptive controller moves the coefficient toward its target after each step: down when the step's
    # KL was below target_kl, up when above (by at most 0.2 * 32 rollouts / horizon 500 = 1.3% a step)
    coefs = [s["kl_coef"] for s in steps]
    assert coefs[0] == pytest.approx(0.2)   # logged as the mean over minibatches: a rounding off
    for kl, before, after in zip(kls, coefs, coefs[1:]):
        assert (after < before) if kl < limit else (after > before), (kl, before, after)
    for key in ("entropy", "value_loss", "clipfrac", "vf_clipfrac", "explained_variance", "returns_mean"):
        assert key in steps[-1], key


# slow, not for its 2 min 45 s: one seed's gain moves by points with any rounding change, and 0.05 lies inside
# that spread (measured below); a default-tier bar needs several seeds (benchmarks/bench_seeds.py) or a larger gain
@pytest.mark.slow
def test_ppo_reft_raises_held_out_exact_match_over_sft(tmp_path):
    # seed 0, OMP_NUM_THREADS=1, at a1e60e6, SFT -> PPO held-out exact match, with the levers of the leaner step
    # switched off by benchmarks/trl_child.py switch_off: as shipped 0.298 -> 0.386 (+0.088); foreach AdamW
    # 0.33 -> 0.502 (+0.172); full LM head 0.31 -> 0.344 (+0.034); both 0.272 -> 0.354 (+0.082). The levers are
    # rounding (fused and foreach AdamW differ by at most an ulp per weight on the same gradients; the two heads'
    # log-probs agree to float32 rounding, tests/unit/test_target_logits.py), but training amplifies it: two SFT
    # runs' losses part by one ulp at step 5, 2e-4 at step 100, 0.09 at step 200. Earlier: +0.15 at c9797a1,
    # +0.046 at 4d3bce0
    run, summary = train_recipe(RECIPES / "ppo-reft.yaml", [f"output_dir={tmp_path}"])
    assert summary["status"] == "finished"
    sft = summary["stages"]["sft"]["eval_after"]["eval/exact_match"]
    ppo = summary["stages"]["ppo"]["eval_after"]["eval/exact_match"]
    print(f"held-out exact match: sft {sft:.3f} -> ppo {ppo:.3f}")
    assert ppo >= sft + 0.05
