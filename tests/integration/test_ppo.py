"""PPO on the tiny model: RLHF (SFT -> reward model -> PPO against it) and ReFT (SFT -> PPO with a rule)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback_rl.engine import train_recipe

RECIPES = Path(__file__).parents[2] / "recipes"


def _steps(run, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and "loss" in r]


def test_rlhf_ppo_raises_the_reward_model_score_within_the_kl_limit(tmp_path):
    run, summary = train_recipe(RECIPES / "rlhf-ppo.yaml", [
        f"output_dir={tmp_path}", "stages.ppo.train.steps=12", "stages.ppo.eval.num_prompts=100",
        "stages.sft.eval.num_prompts=20",
    ])
    assert summary["status"] == "finished"
    ppo = summary["stages"]["ppo"]
    before, after = ppo["eval_before"]["eval/rm"], ppo["eval_after"]["eval/rm"]
    steps = _steps(run, "ppo")
    kls = [s["kl"] for s in steps]
    print(f"greedy RM score on held-out prompts: {before:.3f} -> {after:.3f}; "
          f"exact match {ppo['eval_before']['eval/exact_match']:.2f} -> {ppo['eval_after']['eval/exact_match']:.2f}; "
          f"kl per step {[round(k, 3) for k in kls]}")
    assert after > before + 0.2
    limit = 1.0  # the recipe's target_kl
    assert max(kls) < limit, kls
    for key in ("kl_coef", "entropy", "value_loss", "clipfrac", "vf_clipfrac", "explained_variance",
                "returns_mean"):
        assert key in steps[-1], key


@pytest.mark.slow
def test_ppo_reft_raises_held_out_exact_match_over_sft(tmp_path):
    run, summary = train_recipe(RECIPES / "ppo-reft.yaml", [f"output_dir={tmp_path}"])
    assert summary["status"] == "finished"
    sft = summary["stages"]["sft"]["eval_after"]["eval/exact_match"]
    ppo = summary["stages"]["ppo"]["eval_after"]["eval/exact_match"]
    print(f"held-out exact match: sft {sft:.3f} -> ppo {ppo:.3f}")
    assert ppo > sft
