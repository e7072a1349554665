"""Through `frl train`: with a chat template that rewrites earlier assistant turns (as Qwen3's drops their
reasoning), every guess_number episode splits per turn, and GRPO and PPO train every segment: the steps log
``env/segments_trained``, rollouts.jsonl says how many segments each episode had, and the run finishes."""
from __future__ import annotations

import json

import pytest

from test_episodes_train import frl_train

# the tiny model's template, but an assistant turn followed by others keeps only its first character
FORGETFUL = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' }}"
    "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'][:1] }}{% else %}{{ m['content'] }}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


@pytest.mark.parametrize("optimizer", ["{type: grpo, beta: 0.0}", "{type: ppo, ppo_epochs: 1, kl_coef: 0.05}"])
def test_every_segment_of_a_split_episode_trains(optimizer, tmp_path):
    (tmp_path / "forgetful.jinja").write_text(FORGETFUL)
    run, metrics, logged = frl_train("guess-number-grpo.yaml", tmp_path, "stages.grpo.train.steps=2",
                                     "stages.grpo.train.batch_size=2", f"stages.grpo.optimizer={optimizer}",
                                     f"model.chat_template={tmp_path / 'forgetful.jinja'}")
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2
    split = [r for r in logged if r["episode"]["segments"] > 1]
    assert split, "no episode split: the template did not force one"
    assert all(r["episode"]["bridge_fallback"] for r in split)
    # each step trained every later segment of its episodes
    for m in steps:
        later = sum(r["episode"]["segments"] - 1 for r in logged if r["step"] == m["step"])
        assert m.get("env/segments_trained", 0.0) == later and "env/segments_untrained" not in m
    assert sum(m["env/segments_trained"] for m in steps) > 0
