"""Any source drives any optimizer: one rule source feeds GRPO (scalar), DPO (pairs) and KTO (binary)."""
import json
import math
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from feedback_rl.commands.train import train_recipe


@pytest.mark.parametrize("optimizer", ["grpo", "dpo", "kto"])
def test_one_rule_source_trains_each_feedback_shape(tmp_path, optimizer):
    recipe = tmp_path / "r.yaml"
    # reward: the completion contains a digit; a random tiny model hits it about a third of the time,
    # so groups have both outcomes (pairs for DPO, desirable and undesirable rows for KTO)
    recipe.write_text(textwrap.dedent(f"""\
        name: any-{optimizer}
        seed: 1
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: online
            optimizer: {optimizer}
            data: {{train: {{generator: addition}}}}
            rewards:
              sources:
                - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
            feedback: {{binary_threshold: 0.5}}
            rollout: {{num_generations: 4, max_new_tokens: 4}}
            train: {{steps: 4, batch_size: 8, lr: 1.0e-3}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"
    steps = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if s.get("feedback/size", 0) > 0 and "loss" in s]
    assert trained, f"{optimizer}: no step had feedback"
    assert all(math.isfinite(s["loss"]) for s in trained)
    assert all("reward/digit/mean" in s for s in steps if "feedback/size" in s)

    base = AutoModelForCausalLM.from_pretrained(run.dir / "base_model")
    final = AutoModelForCausalLM.from_pretrained(run.dir / "final")
    before = dict(base.named_parameters())
    changed = [n for n, p in final.named_parameters() if not torch.equal(p, before[n])]
    assert changed, f"{optimizer}: no parameter changed"
