"""Feedback built from rows and from text-only judgments: the same encoding the offline path uses."""
from __future__ import annotations

import pytest

from feedback_rl import Preference, Rollout
from feedback_rl.data import encode_prompt
from feedback_rl.loop.feedback import OFFLINE, build, from_rows


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_offline_pairs_take_their_margin_from_the_row_and_none_is_zero(tok):
    """Every offline pair used to get margin 1.0, so a reward model's margin term shifted every pair alike."""
    rows = [{"prompt": "1+1=", "chosen": "2", "rejected": "3", "margin": 2.5},
            {"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    pairs = from_rows("pairs", rows, tok)
    assert pairs.margins == [2.5, 0.0]
    assert {r.policy_version for r in pairs.chosen + pairs.rejected} == {OFFLINE}


def test_a_text_only_judgment_is_encoded_with_the_stages_system_prompt_as_offline_rows_are(tok):
    turns = [{"role": "user", "content": "1+1="}]
    system = "Answer with digits."
    a = Rollout(prompt="", completion="2", row={"prompt": turns}, group=0, prompt_ids=[], completion_ids=[])
    b = Rollout(prompt="", completion="3", row={"prompt": turns}, group=0, prompt_ids=[], completion_ids=[])
    pairs = build("pairs", [], [], [Preference(a, b, winner=0)], pointwise=False, tokenizer=tok,
                  system_prompt=system)
    offline = from_rows("pairs", [{"prompt": turns, "chosen": "2", "rejected": "3"}], tok, system)
    assert pairs.chosen[0].prompt_ids == offline.chosen[0].prompt_ids == encode_prompt(tok, turns, system)
    assert pairs.chosen[0].completion_ids == offline.chosen[0].completion_ids
