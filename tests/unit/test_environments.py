"""The built-in environments played with scripted assistant turns, their data sources, and the episode driver's
rules (limits, environment errors)."""
from __future__ import annotations

import json
import re

import pytest

from feedback_rl import Environment, PluginContext
from feedback_rl.environments import Episode, Reply, play
from feedback_rl.errors import UserError
from feedback_rl.rows.datasources import generate


def make(registry, name, tmp_path, **options):
    cls = registry.get("environments", name)
    return cls(cls.Options(**options), PluginContext(name=name, run_dir=tmp_path))


def script(*turns):
    it = iter(turns)
    return lambda messages: next(it)


def call(expression):
    return f'<tool_call>{json.dumps({"name": "calculate", "arguments": {"expression": expression}})}</tool_call>'


# --------------------------------------------------------------------------- calculator

def test_calculator_rows_are_repeatable_and_hold_the_exact_answer(registry, tmp_path):
    rows, _ = generate({"calculator": 3, "size": 5, "seed": 2}, tmp_path, registry)
    again, _ = generate({"calculator": 3, "size": 5, "seed": 2}, tmp_path, registry)
    other, _ = generate({"calculator": 3, "size": 5, "seed": 3}, tmp_path, registry)
    assert rows == again and rows != other
    for row in rows:
        a, op, b = row["expression"].split()
        assert op == "*" and len(a) == len(b) == 3 and row["answer"] == str(int(a) * int(b))
        assert row["prompt"][0]["content"].startswith(f"What is {row['expression']}?")


def test_calculator_rewards_the_answer_the_tool_computed(registry, tmp_path):
    env = make(registry, "calculator", tmp_path)
    row = {"prompt": [{"role": "user", "content": "What is 123 * 456?"}], "answer": "56088"}
    out = play(env, row, script("Let me compute. " + call("123 * 456"), "The result is 56,088."))
    assert [t.name for t in out.tools] == ["calculate"]
    assert out.messages[2] == {"role": "tool", "name": "calculate", "content": "56088"}
    assert out.rewards == [None, 1.0] and out.done and not out.truncated and out.error is None
    assert out.infos[0]["tool_calls"][0]["outcome"] == "ok" and out.infos[1]["answer"] == "56088"


def test_calculator_gives_zero_for_a_wrong_or_missing_answer(registry, tmp_path):
    env = make(registry, "calculator", tmp_path)
    row = {"prompt": "What is 123 * 456?", "answer": "56088"}
    assert play(env, row, script("About 56000.")).rewards == [0.0]
    assert play(env, row, script("I do not know.")).rewards == [0.0]


def test_calculator_answers_broken_calls_with_their_problem(registry, tmp_path):
    env = make(registry, "calculator", tmp_path, max_turns=3)
    row = {"prompt": "What is 2 + 2?", "answer": "4"}
    out = play(env, row, script('<tool_call>{"name": "calculate", "arguments": {"expression": "2 +',
                                call("__import__('os').system('true')"), call("2 + 2")))
    tool_turns = [m["content"] for m in out.messages if m["role"] == "tool"]
    assert tool_turns[0] == "error: <tool_call> was not closed with </tool_call>"
    assert tool_turns[1].startswith("error: ValueError: only numbers") and tool_turns[2] == "4"
    assert [i["tool_calls"][0]["outcome"] for i in out.infos] == ["unclosed", "error", "ok"]
    assert out.truncated and not out.done and out.turns == 3  # max_turns reached before a final answer


# --------------------------------------------------------------------------- guess_number

def bisect(messages):
    """Plays higher/lower by bisection, reading the environment's answers back."""
    low, high = 1, int(re.search(r"from 1 to (\d+)", messages[0]["content"]).group(1))
    guess = None
    for m in messages[1:]:
        if m["role"] == "assistant":
            guess = int(m["content"].split()[-1])
        elif m["content"] == "Higher.":
            low = guess + 1
        elif m["content"] == "Lower.":
            high = guess - 1
    return f"My guess is {(low + high) // 2}"


def test_guess_number_is_solved_by_bisection_and_fewer_turns_earn_more(registry, tmp_path):
    env = make(registry, "guess_number", tmp_path, max_turns=8)
    rows, _ = generate({"guess_number": 100, "size": 30, "seed": 0}, tmp_path, registry)
    assert len({r["secret"] for r in rows}) > 10 and all(1 <= r["secret"] <= 100 for r in rows)
    for row in rows:
        out = play(env, row, bisect)
        assert out.done and out.turns <= 7 and out.rewards[-1] == 1.0 - (out.turns - 1) / 8
        assert out.rewards[:-1] == [None] * (out.turns - 1)
    first = play(env, {**rows[0], "secret": 50}, bisect)
    assert first.turns == 1 and first.rewards == [1.0]


def test_guess_number_truncates_an_unsolved_episode_with_zero(registry, tmp_path):
    env = make(registry, "guess_number", tmp_path, max_turns=3)
    row = {"prompt": "Guess from 1 to 10.", "secret": 7, "high": 10}
    out = play(env, row, script("1", "no idea", "200"))
    assert [m["content"] for m in out.messages if m["role"] == "user"][1:] == [
        "Higher.", "Answer with one whole number from 1 to 10."]
    assert out.truncated and not out.done and out.rewards == [None, None, 0.0]


# --------------------------------------------------------------------------- the driver's rules

class Broken(Environment):
    name = "broken"

    def reset(self, row, seed, episode_id):
        class Fails(Episode):
            def step(self, message):
                raise RuntimeError("the game server went away")
        return Fails([{"role": "user", "content": "hi"}])


class Endless(Environment):
    name = "endless"

    def reset(self, row, seed, episode_id):
        class Talks(Episode):
            def step(self, message):
                return Reply([{"role": "user", "content": "go on"}], reward=0.5)
        return Talks([{"role": "user", "content": "hi"}])


def test_an_environment_error_ends_the_episode_as_an_error_not_a_zero(tmp_path):
    out = play(Broken(Broken.Options(), PluginContext("broken", tmp_path)), {}, lambda m: "x")
    assert out.error == "step 1: RuntimeError: the game server went away" and out.rewards == [None]


def test_an_episode_that_never_ends_is_truncated_at_max_turns(tmp_path):
    env = Endless(Endless.Options(max_turns=4), PluginContext("endless", tmp_path))
    out = play(env, {}, lambda m: "x")
    assert out.truncated and out.turns == 4 and out.rewards == [0.5] * 4


def test_an_environment_option_is_checked_like_any_plugin_option(registry):
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        registry.get("environments", "calculator").Options(max_turns=0)
    with pytest.raises(UserError, match="unknown environment 'calculater' \\(did you mean 'calculator'\\?\\)"):
        registry.get("environments", "calculater")



def test_the_calculate_tool_is_exact_and_refuses_anything_but_arithmetic():
    from frl_plugins.environments.calculator.tool import calculate
    assert calculate("123 * 456") == "56088" and calculate("(7 - 2) ** 3 / 4") == "31.25"
    assert calculate("-(3 + 4) * 2") == "-14" and calculate("8 / 2") == "4"
    assert calculate("123456789 * 987654321") == "121932631112635269"  # past float precision: ints stay exact
    for bad, why in (("2 ** 101", "exponent 101 is too large"), ("__import__('os')", "only numbers"),
                     ("1 +", "not an arithmetic expression"), ("'a' * 3", "only numbers")):
        with pytest.raises(ValueError, match=why):
            calculate(bad)
