"""PPO, DPO and KTO train on guess_number episodes through `frl train` (the tiny model samples them): PPO on the
episodes with their masks (a critic, GAE over the sampled tokens only), DPO on the best and the worst episode of
a row's group, KTO on episodes labelled by the environment's score. tests/unit/test_episode_losses.py shows the
environment's tokens carry no loss in each."""
from __future__ import annotations

import json

from test_episodes_train import frl_train


def trained(metrics):
    return [m for m in metrics if "env/turns_mean" in m]


def several_turns(logged):
    """Rollouts whose episode lasted more than one turn: an environment turn (mask 0) sits inside them."""
    return [r for r in logged if len(r["episode"]["turns"]) > 1]


def test_ppo_trains_on_guess_number_episodes_with_a_critic(tmp_path):
    run, metrics, logged = frl_train("guess-number-grpo.yaml", tmp_path, "stages.grpo.train.steps=2",
                                     "stages.grpo.optimizer={type: ppo, ppo_epochs: 1, kl_coef: 0.05}",
                                     "stages.grpo.train.batch_size=2")
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = trained(metrics)
    assert len(steps) == 2
    for m in steps:
        assert {"value_loss", "policy_loss", "explained_variance", "kl/sequence"} <= m.keys()
        assert m["feedback/size"] == 8.0 and m["reward/env/error_rate"] == 0.0
    assert several_turns(logged)


def test_dpo_trains_on_the_best_and_the_worst_episode_of_a_group(tmp_path):
    run, metrics, logged = frl_train("guess-number-grpo.yaml", tmp_path, "stages.grpo.train.steps=3",
                                     "stages.grpo.optimizer={type: dpo, beta: 0.1}")
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = trained(metrics)
    assert len(steps) == 3
    # a pair per group whose episodes' scores differ: as many as rollouts.jsonl shows
    for m in steps:
        step = [r for r in logged if r["step"] == m["step"]]
        groups = {}
        for r in step:
            groups.setdefault(r["group"], set()).add(r["reward"])
        assert m["feedback/size"] == sum(len(v) > 1 for v in groups.values())
    paired = [m for m in steps if m["feedback/size"] > 0]
    assert paired, "no group had episodes of different scores"
    assert all({"loss", "rewards/accuracy", "rewards/margin"} <= m.keys() for m in paired)
    assert several_turns(logged)


def test_kto_trains_on_episodes_labelled_by_the_environments_score(tmp_path):
    run, metrics, logged = frl_train("guess-number-grpo.yaml", tmp_path, "stages.grpo.train.steps=2",
                                     "stages.grpo.optimizer={type: kto, beta: 0.1}", "stages.grpo.train.batch_size=2",
                                     "stages.grpo.feedback.binary_threshold=0.25")
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = trained(metrics)
    assert len(steps) == 2
    for m in steps:
        step = [r for r in logged if r["step"] == m["step"]]
        assert m["feedback/size"] == len(step) == 8
        assert m["desirable_frac"] == sum(r["reward"] >= 0.25 for r in step) / 8
        assert {"loss", "kto/z0"} <= m.keys()
    assert several_turns(logged)
