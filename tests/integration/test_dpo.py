"""Offline DPO on the tiny model: the implicit reward ranks held-out chosen over rejected."""
import json
import math
import textwrap

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.tokens import sequence_logprobs
from feedback_rl.modeling.batching import tokenize
from feedback_rl.commands.train import train_recipe
from feedback_rl.rows.synthetic import sort_pairs


def sequence_logps(model, tokenizer, prompts, completions):
    batch = tokenize(tokenizer, prompts, completions)
    with torch.no_grad():
        return (sequence_logprobs(model, batch) * batch.target_mask).sum(-1)


def heldout_accuracy(policy, reference, tokenizer, rows):
    """Fraction of eval pairs where (log pi - log ref)(chosen) > (log pi - log ref)(rejected)."""
    prompts = [r["prompt"] for r in rows]
    margin = torch.zeros(len(rows))
    for model, sign in ((policy, 1.0), (reference, -1.0)):
        margin += sign * (sequence_logps(model, tokenizer, prompts, [r["chosen"] for r in rows])
                          - sequence_logps(model, tokenizer, prompts, [r["rejected"] for r in rows]))
    return (margin > 0).float().mean().item()


def test_offline_dpo_ranks_heldout_chosen_over_rejected(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: dpo-learns
        seed: 0
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: dpo
            optimizer: {{type: dpo, beta: 0.1}}
            data: {{train: {{generator: sort_pairs, split: train, holdout: 300}}}}
            train: {{steps: 40, batch_size: 32, lr: 1.0e-3}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    steps = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if "rewards/accuracy" in s]
    assert len(train) == 40 and all(math.isfinite(s["loss"]) for s in train)
    assert train[0]["rewards/margin"] == 0.0      # the policy starts as its own reference
    assert abs(train[0]["loss"] - math.log(2)) < 1e-5

    tokenizer = AutoTokenizer.from_pretrained(run.dir / "final")
    reference = AutoModelForCausalLM.from_pretrained(run.dir / "base_model").eval()
    policy = AutoModelForCausalLM.from_pretrained(run.dir / "final").eval()
    rows = sort_pairs("eval", 300, 300, 0)
    assert heldout_accuracy(reference, reference, tokenizer, rows) == 0.0   # no margin at the start
    acc = heldout_accuracy(policy, reference, tokenizer, rows)
    assert acc > 0.9, acc
