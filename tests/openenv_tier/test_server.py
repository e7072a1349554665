"""An OpenEnv server (OpenEnv's create_app, served by uvicorn on 127.0.0.1) played through the `openenv` bridge
with OpenEnv's WebSocket client: one session per episode keeps the episode's state on the server, each step's
reward arrives with its step, several episodes at once stay apart."""
from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("openenv", reason="the openenv tier: bash scripts/test.sh --openenv")

from feedback_rl import UserError  # noqa: E402
from feedback_rl.environments import play  # noqa: E402

from openenv_helpers import bridge, word_game_server  # noqa: E402
from word_game import SLOW  # noqa: E402

ROW = {"prompt": "Play the word game.", "multiplier": 3}


@pytest.fixture(scope="module")
def url():
    with word_game_server(max_concurrent_envs=8) as url:
        yield url


def scripted(*words):
    said = iter(words)
    return lambda messages: next(said)


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_a_served_episode_keeps_its_state_and_each_steps_reward(tmp_path, url, scheme):
    # the action's one str field comes from the server's /schema; an http:// url is the same server
    env = bridge(tmp_path, url=url.replace("ws://", f"{scheme}://"), reset_columns=["multiplier"])
    try:
        out = play(env, ROW, scripted("a", "bb", "ccc"), seed=5, episode_id="s1")
    finally:
        env.close()
    assert out.messages[1] == {"role": "user", "content": "Say 3 words (episode s1, seed 5)."}
    assert out.rewards == [3.0, 6.0, 9.0] and out.done and out.error is None
    # turn and letters count up across steps: one environment played the whole episode (HTTP /step would
    # have built a fresh one per call, at turn 1 every time)
    assert out.infos == [{"turn": 1, "letters": 1}, {"turn": 2, "letters": 3}, {"turn": 3, "letters": 6}]
    assert out.messages[-2] == {"role": "user", "content": "Turn 2: 2 letters, 3 so far."}


def test_several_served_episodes_step_together_and_stay_apart(tmp_path, url):
    env = bridge(tmp_path, url=url, reset_columns=["multiplier"])
    episodes = [env.reset({"prompt": "go", "multiplier": m}, seed=k, episode_id=f"e{k}")
                for k, m in enumerate((1, 10, 100, 1000))]

    async def turn(words):
        return await asyncio.gather(*(ep.step_async({"role": "assistant", "content": w})
                                      for ep, w in zip(episodes, words)))
    try:
        first = asyncio.run(turn(["a", "bb", "ccc", "dddd"]))
        second = asyncio.run(turn(["xyz", "x", "", "xy"]))   # a fresh loop each turn, as the core's loop does
    finally:
        for ep in episodes:
            ep.close()
        env.close()
    assert [r.reward for r in first] == [1.0, 20.0, 300.0, 4000.0]
    assert [r.reward for r in second] == [3.0, 10.0, 0.0, 2000.0]
    assert [r.info for r in second] == [{"turn": 2, "letters": n} for n in (4, 3, 3, 6)]


def test_the_steps_of_a_turn_wait_on_the_server_together(tmp_path, url):
    env = bridge(tmp_path, url=url)
    episodes = [env.reset({"prompt": "go"}, seed=k, episode_id=f"e{k}") for k in range(4)]

    async def turn():
        return await asyncio.gather(*(ep.step_async({"role": "assistant", "content": "zzz"}) for ep in episodes))
    try:
        start = time.monotonic()
        replies = asyncio.run(turn())
        took = time.monotonic() - start
    finally:
        for ep in episodes:
            ep.close()
        env.close()
    assert [r.reward for r in replies] == [3.0] * 4
    # one after the other would take 4 x SLOW; together about SLOW (the rest is slack for a loaded machine)
    assert took < 3 * SLOW, took


def test_a_server_error_is_the_episodes_error(tmp_path, url):
    env = bridge(tmp_path, url=url)
    try:
        out = play(env, ROW, scripted("fine", "boom"))
    finally:
        env.close()
    assert out.rewards == [4.0, None]
    assert out.error.startswith("step 2: RuntimeError: Server error: the word 'boom' breaks the game")


def test_hooks_see_the_same_fields_from_a_server(tmp_path, url):
    env = bridge(tmp_path, url=url, action="word_game:word_of", observation="word_game:turn_only")
    try:
        out = play(env, ROW, scripted("hello there", "x", "yz"))
    finally:
        env.close()
    assert out.rewards == [5.0, 1.0, 2.0]
    assert [m["content"] for m in out.messages if m["role"] == "tool"] == ["turn=0", "turn=1", "turn=2"]


def test_more_episodes_than_the_server_takes_says_so(tmp_path):
    with word_game_server(max_concurrent_envs=2) as small:
        env = bridge(tmp_path, url=small)
        episodes = [env.reset({"prompt": "go"}, seed=k, episode_id=f"e{k}") for k in range(2)]
        try:
            with pytest.raises(RuntimeError, match="takes fewer sessions than the episodes of a step .* start "
                                                   "it with a larger max_concurrent_envs"):
                env.reset({"prompt": "go"}, seed=2, episode_id="e2")
        finally:
            for ep in episodes:
                ep.close()
            env.close()


def test_a_server_that_is_not_there_is_one_line(tmp_path):
    with word_game_server() as gone:
        pass
    with pytest.raises(UserError, match=r"^environment 'openenv' \(ws://127\.0\.0\.1:\d+\): cannot read the "
                                        r"server's action schema at /schema \(.*\); is the server running\?$"):
        bridge(tmp_path, url=gone)
