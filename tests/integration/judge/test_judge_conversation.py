"""The judge sees a conversational prompt as readable text, as turns, and as the policy saw it."""
from __future__ import annotations

import json

from conftest import make_judge
from feedback_rl import Rollout
from feedback_rl.modeling.chat import render_prompt
from feedback_rl.modeling.tiny import char_tokenizer

TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def test_template_variables_for_a_conversation(fake_server, tmp_path):
    rendered = render_prompt(char_tokenizer(), TURNS)
    judge = make_judge(fake_server.url, tmp_path, template="P={prompt}|T={prompt_turns}|R={prompt_rendered}|"
                                                           "C={completion}|A={answer}")
    r = Rollout(prompt=rendered, completion="4", row={"prompt": TURNS, "answer": "4"}, group=0, prompt_ids=[],
                completion_ids=[])
    plain = Rollout(prompt="2+2=", completion="4", row={"prompt": "2+2=", "answer": "4"}, group=1, prompt_ids=[],
                    completion_ids=[])
    try:
        judge.score([r, plain])
        sent = [t["messages"][-1]["content"] for t in judge.explain(2)]
    finally:
        judge.close()
    p, t, rest = sent[0].split("|", 2)
    assert p == "P=system: Be brief.\nuser: What is 2+2?"
    assert json.loads(t.removeprefix("T=")) == TURNS
    assert rest == f"R={rendered}|C=4|A=4" and rendered.startswith("<|system|>\nBe brief.\n<|user|>")
    # a plain-string prompt is itself, in every form
    assert sent[1] == 'P=2+2=|T=[{"role": "user", "content": "2+2="}]|R=2+2=|C=4|A=4'
