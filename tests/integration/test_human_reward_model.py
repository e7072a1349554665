"""The human source refits a Bradley-Terry reward model on people's labels (here the simulated
annotator's: the correct sum wins, else the closer number); once fitted it scores every rollout, so a
GRPO stage can train on it."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch
import yaml

from feedback_rl import PluginContext, Rollout
from feedback_rl.models import load_model
from feedback_rl.rows.synthetic import addition
from frl_plugins.rewards.human.annotator import decide
from frl_plugins.rewards.human.source import HumanOptions, HumanSource

RM = {"path": "builtin:tiny-gpt2", "refit_every": 100, "steps": 40, "lr": 3e-4, "batch_size": 32, "holdout": 0.25}


@pytest.fixture(scope="module")
def tok():
    return load_model("builtin:tiny-gpt2")[1]


def candidates(rows, tok, seed):
    """Per prompt, the correct sum and a wrong answer (junk, a wrong magnitude, or a near miss)."""
    rng = random.Random(seed)

    def wrong(ans: str) -> str:
        kind = rng.randrange(3)
        if kind == 0:
            return rng.choice(["ab", "+", "x=", "7+", "=="])
        if kind == 1:
            return str(rng.randrange(100, 1000) if len(ans) <= 2 else rng.randrange(10))
        return str(max(0, int(ans) + rng.choice([-3, -2, -1, 1, 2, 3, 10, -10])))

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    out = []
    for g, r in enumerate(rows):
        pair = [r["answer"], wrong(r["answer"])]
        rng.shuffle(pair)
        out += [Rollout(prompt=r["prompt"], completion=c, row=r, group=g, prompt_ids=ids(r["prompt"]),
                        completion_ids=ids(c) + [tok.eos_token_id]) for c in pair]
    return out


def label_all(src):
    n = 0
    while item := src.store.next_item("sim"):
        src.store.submit(item["id"], "sim", decide(item))
        n += 1
    return n


def make(run_dir, db, **rm):
    opts = HumanOptions(per_step=1000, max_pending=10000, db=str(db), reward_model={**RM, **rm})
    return HumanSource(opts, PluginContext(name="people", run_dir=run_dir, stage="grpo", seed=0))


def rm_accuracy(src, rollouts):
    """Share of prompts whose correct sum the source scores above the wrong answer."""
    scores = src.rm.values(rollouts)  # src.score would also send them to people
    right = 0
    for k in range(0, len(rollouts), 2):
        good = 0 if rollouts[k].completion == rollouts[k].row["answer"] else 1
        right += scores[k + good] > scores[k + 1 - good]
    return right / (len(rollouts) // 2)


def test_the_refitted_reward_model_learns_the_annotators_preference(tmp_path, tok):
    torch.manual_seed(0)
    src = make(tmp_path, tmp_path / "labels.sqlite")
    rows = addition("train", 200, 500, 0)
    first = candidates(rows[:100], tok, 1)
    assert {s.status for s in src.score(first)} == {"abstain"}  # nothing fitted yet
    assert label_all(src) == 100 and src.collect()
    assert src.metrics()["rm/refits"] == 1
    fresh = candidates(addition("eval", 200, 500, 0), tok, 2)  # prompts no label was made on
    after_100 = rm_accuracy(src, fresh)
    src.score(candidates(rows[100:], tok, 3))
    label_all(src)
    src.collect()
    m = src.metrics()
    after_200 = rm_accuracy(src, fresh)
    print(f"RM pairwise accuracy on 200 unseen prompts: {after_100:.3f} after 100 labels, "
          f"{after_200:.3f} after 200; train {m['rm/train_accuracy']:.3f}, "
          f"held-out labels {m['rm/heldout_accuracy']:.3f} ({m['rm/heldout_pairs']:.0f} pairs)")
    assert m["rm/refits"] == 2 and m["rm/pairs"] == 200
    assert m["rm/heldout_accuracy"] > 0.7 and after_200 > 0.7   # chance is 0.5

    resumed = make(tmp_path, tmp_path / "labels.sqlite")  # a checkpoint restores the same RM
    resumed.load_state_dict(src.state_dict())
    assert resumed.rm.values(fresh[:8]) == pytest.approx(src.rm.values(fresh[:8]))
    assert resumed.collect() == [] and resumed.metrics()["rm/refits"] == 2


def test_a_grpo_stage_trains_on_the_human_reward_model(tmp_path, tok):
    db = tmp_path / "labels.sqlite"
    src = make(tmp_path, db)  # people labelled 100 pairs before this run started
    src.score(candidates(addition("train", 100, 0, 0), tok, 1))
    label_all(src)
    src.close()
    recipe = tmp_path / "grpo-human.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "grpo-human", "seed": 0, "output_dir": str(tmp_path / "runs"),
        "model": {"path": "builtin:tiny-gpt2", "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2}},
        "loggers": ["jsonl"],
        "stages": [{
            "name": "grpo", "optimizer": {"type": "grpo", "beta": 0.0},
            "data": {"train": {"generator": "addition", "split": "train"}},
            "rewards": {"sources": [{"name": "people", "type": "human", "task": "pairwise", "db": str(db),
                                     "per_step": 2, "reward_model": {**RM, "refit_every": 50, "steps": 20}}]},
            "rollout": {"num_generations": 4, "max_new_tokens": 3},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-4},
        }],
    }))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if m.get("stage") == "grpo" and "reward/people/abstain_rate" in m]
    assert steps[0]["reward/people/abstain_rate"] == 1.0        # step 1: no RM yet; labels arrive at collect
    assert steps[0]["source/people/rm/refits"] == 1
    later = steps[1:]
    assert all(m["reward/people/abstain_rate"] == 0.0 for m in later)  # the RM scores every rollout
    assert all(m["reward/people/std"] > 0 for m in later)
    assert any(m["feedback/size"] > 0 and "loss" in m for m in later)  # GRPO stepped on RM scores
