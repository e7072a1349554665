"""An OpenEnv Environment played in this process through the `openenv` bridge: one instance per episode, each
step's reward kept as that step's, several episodes at once each with its own state."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("openenv", reason="the openenv tier: bash scripts/test.sh --openenv")

from feedback_rl import UserError  # noqa: E402
from feedback_rl.environments import play  # noqa: E402

from openenv_helpers import bridge  # noqa: E402

ROW = {"prompt": "Play the word game.", "multiplier": 2}


def scripted(*words):
    said = iter(words)
    return lambda messages: next(said)


def test_each_step_keeps_its_own_reward_and_done_ends_the_episode(tmp_path):
    env = bridge(tmp_path, env="word_game:WordGame", kwargs={"rounds": 3}, max_turns=5)
    try:
        out = play(env, ROW, scripted("a", "bb", "ccc", "never"), seed=4, episode_id="e7")
    finally:
        env.close()
    assert out.messages[:2] == [{"role": "user", "content": "Play the word game."},
                                {"role": "user", "content": "Say 3 words (episode e7, seed 4)."}]
    assert out.rewards == [1.0, 2.0, 3.0] and out.done and not out.truncated and out.error is None
    assert out.infos == [{"turn": 1, "letters": 1}, {"turn": 2, "letters": 3}, {"turn": 3, "letters": 6}]
    assert out.messages[3] == {"role": "user", "content": "Turn 1: 1 letters, 1 so far."}


def test_row_columns_reach_reset_and_the_prompt_can_be_left_out(tmp_path):
    env = bridge(tmp_path, env="word_game:WordGame", reset_columns=["multiplier"], show_prompt=False)
    try:
        out = play(env, ROW, scripted("abc", "d", "ef"))
    finally:
        env.close()
    assert out.rewards == [6.0, 2.0, 4.0]
    assert [m["content"] for m in out.messages[:1]] == ["Say 3 words (episode 0, seed 0)."]


def test_several_episodes_at_once_keep_their_own_state(tmp_path):
    env = bridge(tmp_path, env="word_game:WordGame", reset_columns=["multiplier"])
    episodes = [env.reset({"prompt": "go", "multiplier": m}, seed=k, episode_id=f"e{k}") for k, m in
                enumerate((1, 10, 100))]

    async def turn(words):
        return await asyncio.gather(*(ep.step_async({"role": "assistant", "content": w})
                                      for ep, w in zip(episodes, words)))
    try:
        first = asyncio.run(turn(["a", "bb", "ccc"]))
        second = asyncio.run(turn(["dddd", "e", "ff"]))   # a fresh loop each turn, as the core's episode loop does
    finally:
        for ep in episodes:
            ep.close()
        env.close()
    assert [r.reward for r in first] == [1.0, 20.0, 300.0]
    assert [r.reward for r in second] == [4.0, 10.0, 200.0]
    assert [r.info["letters"] for r in second] == [5, 3, 5] and all(r.info["turn"] == 2 for r in second)
    assert all(ep.session.env.closed for ep in episodes)


def test_the_environment_raising_is_the_episodes_error(tmp_path):
    env = bridge(tmp_path, env="word_game:WordGame")
    try:
        out = play(env, ROW, scripted("fine", "boom"))
    finally:
        env.close()
    assert out.rewards == [4.0, None] and out.error == "step 2: ValueError: the word 'boom' breaks the game"


def test_action_and_observation_functions_replace_the_defaults(tmp_path):
    env = bridge(tmp_path, env="word_game:WordGame", action="word_game:word_of", observation="word_game:turn_only",
                 show_prompt=False)
    try:
        out = play(env, ROW, scripted("hello there", "x", "yz"))
    finally:
        env.close()
    assert out.rewards == [5.0, 1.0, 2.0]
    assert out.messages == [{"role": "tool", "content": "turn=0"}, {"role": "assistant", "content": "hello there"},
                            {"role": "tool", "content": "turn=1"}, {"role": "assistant", "content": "x"},
                            {"role": "tool", "content": "turn=2"}, {"role": "assistant", "content": "yz"}]


@pytest.mark.parametrize("options, message", [
    ({"env": "word_game:Nope"}, "environment 'openenv': cannot import env 'word_game:Nope' (looked in "),
    ({"env": "word_game:WordGame", "action_field": "text"},
     "action_field 'text' is not a str field of action WordAction (its str fields: word)"),
    ({"env": "word_game:StrictWordGame", "reset_columns": ["multiplier", "level"]},
     "StrictWordGame.reset() takes no argument 'level' (reset_columns)"),
])
def test_a_wrong_name_is_one_line_naming_the_option(tmp_path, options, message):
    with pytest.raises(UserError) as err:
        bridge(tmp_path, **options)
    assert message in str(err.value) and "\n" not in str(err.value)
