"""The judge reads an episode with its roles: the transcript (one [role] block per turn), the turns as JSON, and
the final answer, pointwise and pairwise, from a real server on loopback."""
from __future__ import annotations

import json

from conftest import make_judge
from feedback_rl import Rollout

CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "6*7"}}</tool_call>'
TURNS = [{"role": "assistant", "content": CALL}, {"role": "tool", "content": "42"},
         {"role": "assistant", "content": "42"}]


def episode(turns, group=0):
    transcript = "\n\n".join(f"[{t['role']}] {t['content']}" for t in turns)
    return Rollout(prompt="<|user|>\nWhat is 6*7?\n<|assistant|>\n", completion=transcript,
                   row={"prompt": "What is 6*7?", "answer": "42"}, group=group, prompt_ids=[1], completion_ids=[2],
                   episode={"turns": turns, "rewards": [None, 1.0]})


def test_a_pointwise_judge_gets_the_episodes_turns_with_their_roles_and_its_final_answer(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, template="P={prompt}|T={turns}|F={final_answer}|C={completion}")
    try:
        scores = judge.score([episode(TURNS)])
        sent = judge.explain(1)[0]["messages"][-1]["content"]
    finally:
        judge.close()
    assert scores[0].is_ok
    p, t, f, c = sent.split("|", 3)
    assert p == "P=What is 6*7?" and f == "F=42"
    assert json.loads(t.removeprefix("T=")) == TURNS
    assert c == f"C=[assistant] {CALL}\n\n[tool] 42\n\n[assistant] 42"


def test_a_pairwise_judge_gets_both_episodes_turns_in_both_orders(fake_server, tmp_path):
    other = TURNS[:2] + [{"role": "assistant", "content": "41"}]
    judge = make_judge(fake_server.url, tmp_path, mode="pairwise", template="A={turns_a}|B={turns_b}")
    try:
        judge.compare([(episode(TURNS), episode(other))])
        sent = [t["messages"][-1]["content"] for t in judge.explain(2)]
    finally:
        judge.close()
    shown = [[json.loads(part[2:]) for part in s.split("|")] for s in sent]
    assert shown == [[TURNS, other], [other, TURNS]]


def test_a_single_completion_is_one_assistant_turn_and_its_own_final_answer(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, template="T={turns}|F={final_answer}")
    plain = Rollout(prompt="6*7=", completion="42", row={"prompt": "6*7="}, group=0, prompt_ids=[], completion_ids=[])
    try:
        judge.score([plain])
        sent = judge.explain(1)[0]["messages"][-1]["content"]
    finally:
        judge.close()
    assert sent == 'T=[{"role": "assistant", "content": "42"}]|F=42'


def test_frl_validates_a_template_that_names_the_turns_and_the_final_answer(tmp_path):
    from feedback_rl import PluginContext
    from feedback_rl.rows.dataset import Dataset
    from frl_plugins.rewards.judge import JudgeSource
    rows = Dataset([{"prompt": "What is 6*7?", "answer": "42"}], "rows.jsonl")
    ctx = PluginContext(name="judge", run_dir=tmp_path, recipe_dir=tmp_path)
    for mode, template in (("pointwise", "{turns} {final_answer} {answer}"), ("pairwise", "{turns_a} {turns_b}")):
        options = JudgeSource.Options(base_url="http://127.0.0.1:9/v1", model="m", mode=mode, template=template)
        JudgeSource.preflight(options, ctx, rows)   # raises a UserError naming a variable it does not know
