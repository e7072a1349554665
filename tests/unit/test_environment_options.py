"""Options of the built-in environments that size them for a small model: the calculator's demonstrations and
its tool left out of the prompt, the guess_number question."""
from __future__ import annotations

import pytest

from feedback_rl import PluginContext
from feedback_rl.environments import play
from feedback_rl.errors import UserError
from feedback_rl.rows.datasources import generate


def make(registry, name, tmp_path, **options):
    cls = registry.get("environments", name)
    return cls(cls.Options(**options), PluginContext(name=name, run_dir=tmp_path))


def say(*turns):
    it = iter(turns)
    return lambda messages: next(it)


def replay(demo):
    """The demonstration's assistant turns, said in order."""
    it = iter(t["content"] for t in demo["messages"] if t["role"] == "assistant")
    return lambda messages: next(it)


@pytest.mark.parametrize("described", [True, False])
def test_a_calculator_demonstration_is_the_transcript_of_an_episode_played_that_way(registry, tmp_path, described):
    demos, _ = generate({"calculator_demos": 2, "size": 40, "seed": 3, "tool_rate": 0.5, "instruction": "",
                         "describe_tools": described}, tmp_path, registry)
    env = make(registry, "calculator", tmp_path, describe_tools=described)
    calling = [d for d in demos if len(d["messages"]) == 4]
    assert 10 <= len(calling) <= 30   # about half call the tool
    for demo in demos:
        question = demo["messages"][0]["content"]
        expression = question.removeprefix("What is ").removesuffix("?")
        row = {"prompt": [demo["messages"][0]], "answer": demo["messages"][-1]["content"]}
        out = play(env, row, replay(demo))
        assert out.messages == demo["messages"]
        # described as the episode describes it: the same schemas in the row's tools column, or none
        assert demo.get("tools", []) == [t.schema for t in out.tools]
        # the demonstrated answer is the exact result: a call earns 1.0; so does an answer given at once
        a, op, b = expression.split()
        assert out.rewards[-1] == 1.0 and op == "*" and int(a) * int(b) == int(row["answer"])
    again, _ = generate({"calculator_demos": 2, "size": 40, "seed": 3, "tool_rate": 0.5, "instruction": "",
                         "describe_tools": described}, tmp_path, registry)
    assert again == demos


def test_a_calculator_without_described_tools_offers_none_and_still_answers_calls(registry, tmp_path):
    row = {"prompt": [{"role": "user", "content": "What is 12 * 34?"}], "answer": "408"}
    call = '<tool_call>{"name": "calculate", "arguments": {"expression": "12 * 34"}}</tool_call>'
    hidden = play(make(registry, "calculator", tmp_path, describe_tools=False), row, say(call, "408"))
    shown = play(make(registry, "calculator", tmp_path), row, say(call, "408"))
    assert hidden.tools == [] and [t.name for t in shown.tools] == ["calculate"]
    assert hidden.messages[2]["content"] == shown.messages[2]["content"] == "408"
    assert hidden.rewards == shown.rewards == [None, 1.0]


def test_the_calculator_question_follows_the_instruction_option(registry, tmp_path):
    bare, _ = generate({"calculator": 2, "size": 3, "seed": 0, "instruction": ""}, tmp_path, registry)
    full, _ = generate({"calculator": 2, "size": 3, "seed": 0}, tmp_path, registry)
    assert [r["prompt"][0]["content"] for r in bare] == [f"What is {r['expression']}?" for r in full]
    assert all(r["prompt"][0]["content"].endswith("as a number alone.") for r in full)


def test_the_guess_number_question_names_the_range(registry, tmp_path):
    rows, _ = generate({"guess_number": 7, "size": 2, "seed": 0, "question": "Guess 1-{high}."}, tmp_path, registry)
    assert [r["prompt"][0]["content"] for r in rows] == ["Guess 1-7.", "Guess 1-7."]
    with pytest.raises(UserError, match=r"question.*only \{high\} may be named in braces"):
        generate({"guess_number": 7, "question": "Guess 1-{top}."}, tmp_path, registry)


def test_demonstrated_answers_follow_the_answer_format_and_keep_the_number_last(registry, tmp_path):
    demos, _ = generate({"calculator_demos": 1, "size": 5, "seed": 0, "answer_format": "It is {answer}."},
                        tmp_path, registry)
    assert all(d["messages"][-1]["content"] == f"It is {d['messages'][-1]['content'][6:-1]}." for d in demos)
    assert all(d["messages"][-1]["content"][6:-1].isdigit() for d in demos)
    with pytest.raises(UserError, match="the answer must be the last number written"):
        generate({"calculator_demos": 1, "answer_format": "{answer} times 2"}, tmp_path, registry)
