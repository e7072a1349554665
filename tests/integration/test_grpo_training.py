"""A GRPO stage on the tiny model: it changes every trainable tensor and raises the mean reward, with
rollouts generated then trained and one step off (``rollout.overlap: 1``)."""
import json
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from feedback_rl.commands.train import train_recipe


@pytest.mark.parametrize("overlap", [0, 1])
def test_grpo_changes_every_parameter_and_raises_the_reward(tmp_path, overlap):
    recipe = tmp_path / "r.yaml"
    # reward: the completion contains a digit; a random tiny model hits it about a third of the time
    recipe.write_text(textwrap.dedent(f"""\
        name: grpo-moves
        seed: 3
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: {{type: grpo, beta: 0.0, loss_type: dapo}}
            data: {{train: {{generator: addition}}}}
            rewards:
              sources:
                - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
            rollout: {{num_generations: 8, max_new_tokens: 4, overlap: {overlap}}}
            train: {{steps: 40, batch_size: 8, lr: 3.0e-3}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    steps = [json.loads(l) for l in (run.dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [s["reward/digit/mean"] for s in steps if "reward/digit/mean" in s]
    assert len(rewards) == 40
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.25, (first, last)

    base = AutoModelForCausalLM.from_pretrained(run.dir / "base_model")
    final = AutoModelForCausalLM.from_pretrained(run.dir / "final")
    before, after = dict(base.named_parameters()), dict(final.named_parameters())
    unchanged = [n for n, p in after.items() if torch.equal(p, before[n])]
    assert not unchanged, unchanged
