"""The rule checker on an episode reads its final answer (the last assistant turn), not the transcript: a
calculator episode whose tool result is right but whose answer is wrong is wrong, and the other way round."""
from __future__ import annotations

from pathlib import Path

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.rule import RuleSource

CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "6*7"}}</tool_call>'


def episode(result: str, answer: str) -> Rollout:
    turns = [{"role": "assistant", "content": CALL}, {"role": "tool", "content": result},
             {"role": "assistant", "content": answer}]
    transcript = "\n\n".join(f"[{t['role']}] {t['content']}" for t in turns)
    return Rollout(prompt="What is 6*7?", completion=transcript, row={"prompt": "What is 6*7?", "answer": "42"},
                   group=0, prompt_ids=[1], completion_ids=[2], episode={"turns": turns, "rewards": [None, 1.0]})


def scores(check: str, rollouts: list[Rollout], **options) -> list:
    source = RuleSource(RuleSource.Options(check=check, **options), PluginContext(name="rule", run_dir=Path("."), stage="s"))
    return [(s.status, s.value) for s in source.score(rollouts)]


def test_numeric_and_exact_checks_read_the_episodes_last_assistant_turn():
    right, wrong = episode("41", " 42 "), episode("42", "41")
    for check in ("numeric", "exact"):
        assert scores(check, [right, wrong]) == [("ok", 1.0), ("ok", 0.0)]


def test_a_regex_fullmatch_sees_only_the_final_answer():
    assert scores("regex", [episode("42", "42"), episode("42", "It is 42")], pattern=r"\d+") == \
        [("ok", 1.0), ("ok", 0.0)]


def test_a_single_completion_is_still_checked_whole():
    plain = Rollout(prompt="6*7=", completion="42", row={"answer": "42"}, group=0, prompt_ids=[1], completion_ids=[2])
    assert plain.answer == "42" and scores("numeric", [plain]) == [("ok", 1.0)]
