"""``sampling: uncertain`` under a fitted reward model: people get the pairs whose predicted
preference sigmoid(r_a - r_b) is nearest 0.5, and the single items scored nearest the median."""
from __future__ import annotations

import torch

from feedback_rl import PluginContext, Rollout
from feedback_rl.config.shapes import buildable
from frl_plugins.rewards.human.source import HumanOptions, HumanSource


class StubRM:
    """Stands in for the refitted reward model: a fixed score per completion."""

    fitted = True
    stats: dict = {}

    def __init__(self, scores):
        self.scores = scores

    def values(self, rollouts):
        return [self.scores[r.completion] for r in rollouts]


def make(tmp_path, task, per_step):
    opts = HumanOptions(task=task, per_step=per_step, sampling="uncertain",
                        reward_model={"path": "builtin:tiny-gpt2", "refit_every": 10})
    return HumanSource(opts, PluginContext(name="people", run_dir=tmp_path, stage="grpo"))


def ro(prompt, completion, group, logprob=None):
    return Rollout(prompt=prompt, completion=completion, row={}, group=group, prompt_ids=[5], completion_ids=[6],
                   logprobs=None if logprob is None else torch.tensor([logprob]))


def test_pairs_nearest_an_even_preference_go_to_people(tmp_path):
    src = make(tmp_path, "pairwise", per_step=2)
    # r_a - r_b: 3.0 (p=.95), 0.1 (p=.52), -0.4 (p=.40), -6 (p=.002)
    src.rm = StubRM({"a0": 3.0, "b0": 0.0, "a1": 1.1, "b1": 1.0, "a2": 0.0, "b2": 0.4, "a3": -3.0, "b3": 3.0})
    rollouts = [ro(f"{g}+0=", f"{x}{g}", g) for g in range(4) for x in "ab"]
    scores = src.score(rollouts)
    assert [s.value for s in scores] == [src.rm.scores[r.completion] for r in rollouts]  # it scores every one
    asked = {src.store.next_item(f"p{k}")["prompt"] for k in range(2)}
    assert asked == {"1+0=", "2+0="}
    # hand-computed: |sigmoid(0.1) - .5| = .025 < |sigmoid(-0.4) - .5| = .0987 < |sigmoid(3) - .5| = .4526
    assert src.store.next_item("p3") is None


def test_single_items_nearest_the_median_score_go_to_people(tmp_path):
    src = make(tmp_path, "thumbs", per_step=2)
    src.rm = StubRM({"w": -5.0, "x": 0.9, "y": 1.0, "z": 1.2, "v": 9.0})  # median 1.0
    src.score([ro("1+1=", c, 0) for c in "wxyzv"])
    asked = {src.store.next_item(f"p{k}")["a"] for k in range(2)}
    assert asked == {"y", "x"}  # |1.0 - 1.0| = 0, |0.9 - 1.0| = .1; z is .2 away


def test_before_the_first_fit_it_abstains_and_ranks_by_the_policy(tmp_path):
    src = make(tmp_path, "pairwise", per_step=1)
    assert not src.pairwise  # with a reward model the engine asks it for scores
    assert buildable(HumanSource.judgments(src.options)) == {"scalar", "pairs", "binary"}
    sure = [ro("1+1=", "A", 0, -0.1), ro("1+1=", "B", 0, -5.0)]
    unsure = [ro("2+1=", "C", 1, -1.0), ro("2+1=", "D", 1, -1.1)]
    assert [s.status for s in src.score(sure + unsure)] == ["abstain"] * 4
    assert src.store.next_item("p")["prompt"] == "2+1="
