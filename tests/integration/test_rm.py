"""An rm stage on the tiny model: a reward model that ranks held-out pairs, saved in HF format,
read back by the reward_model source; the policy is left untouched."""
from __future__ import annotations

import textwrap

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from feedback_rl import PluginContext, Rollout
from feedback_rl.rows.dataset import load
from feedback_rl.commands.train import train_recipe
from feedback_rl.rows.refs import GeneratedData
from frl_plugins.rewards.reward_model import RewardModelSource


def test_rm_stage_ranks_held_out_pairs_and_leaves_the_policy_alone(tmp_path):
    recipe = tmp_path / "rm.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: rm-fits
        seed: 0
        output_dir: {tmp_path / 'runs'}
        model: {{path: "builtin:tiny-gpt2", tiny: {{n_layer: 2, n_embd: 64}}}}
        stages:
          - name: rm
            optimizer: rm
            data:
              train: {{generator: sort_pairs, split: train}}
              eval: {{generator: sort_pairs, split: eval}}
            train: {{steps: 30, batch_size: 32, lr: 1.0e-3, warmup_steps: 3}}
        """))
    run, summary = train_recipe(recipe)
    assert summary["status"] == "finished"

    # the stage's output is the reward model, loadable by transformers as it is
    saved = AutoModelForSequenceClassification.from_pretrained(run.dir / "stages" / "rm")
    assert saved.config.num_labels == 1

    # the policy did not move
    base = AutoModelForCausalLM.from_pretrained(run.dir / "base_model")
    final = AutoModelForCausalLM.from_pretrained(run.dir / "final")
    assert all(torch.equal(p, dict(base.named_parameters())[n]) for n, p in final.named_parameters())

    # held-out pairwise accuracy, through the reward_model source reading `stage:rm`
    tok = AutoTokenizer.from_pretrained(run.dir / "stages" / "rm")
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    pairs = load(GeneratedData(generator="sort_pairs", split="eval"), tmp_path)[:200]
    source = RewardModelSource(RewardModelSource.Options(path="stage:rm", device="cpu"),
                               PluginContext(name="rm", run_dir=run.dir))
    rollouts = [Rollout(p["prompt"], p[key], p, k, ids(p["prompt"]), ids(p[key]) + [tok.eos_token_id])
                for k, p in enumerate(pairs) for key in ("chosen", "rejected")]
    scores = [s.value for s in source.score(rollouts)]
    accuracy = sum(c > r for c, r in zip(scores[::2], scores[1::2])) / len(pairs)
    print(f"held-out pairwise accuracy: {accuracy:.3f}")
    assert accuracy >= 0.9


def test_reward_model_source_names_a_missing_stage(tmp_path):
    import pytest

    from feedback_rl import UserError
    source = RewardModelSource(RewardModelSource.Options(path="stage:rm"), PluginContext(name="judge", run_dir=tmp_path))
    with pytest.raises(UserError, match=r"reward source 'judge': path: no reward model at .*stages/rm \(is there"):
        source.score([Rollout("p", "c", {}, 0, [5], [6])])
