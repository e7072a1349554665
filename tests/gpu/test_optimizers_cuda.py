"""Every built-in optimizer takes two bf16 steps on CUDA through the real ``frl train``, with its models on
the GPU (the probe), its losses finite, and the reward kinds these recipes use logged: a rule checker
(GRPO, PPO), offline pairs (DPO) and labels (KTO), a reward model fitted by an ``rm`` stage (rm -> PPO).
tests/gpu/test_reward_kinds_cuda.py adds the judge and the human queue."""
import math

import pytest

from gpu_run import train_on_gpu

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("recipe", ["sft", "dpo", "kto"])
def test_an_offline_optimizer_takes_two_bf16_steps_on_cuda(tmp_path, recipe):
    trained = train_on_gpu(f"{recipe}.yaml", tmp_path)
    assert len(trained.losses(recipe)) == 2


@pytest.mark.parametrize("recipe", ["grpo", "ppo"])
def test_an_online_optimizer_scored_by_a_rule_takes_two_bf16_steps_on_cuda(tmp_path, recipe):
    trained = train_on_gpu(f"{recipe}.yaml", tmp_path)
    scored = [m for m in trained.metrics if "reward/digit/mean" in m]
    assert len(scored) == 2 and len(trained.losses(recipe)) == 2


def test_a_reward_model_fitted_on_cuda_scores_ppo_rollouts_on_cuda(tmp_path):
    trained = train_on_gpu("rm.yaml", tmp_path)
    assert len(trained.losses("rm")) == 2 and len(trained.losses("ppo")) == 2
    scores = [m["reward/rm/mean"] for m in trained.metrics if "reward/rm/mean" in m]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores), scores
