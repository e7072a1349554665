"""The wall-time limit per episode (``environment: {max_seconds: S}``): an episode whose environment hangs ends
truncated when its time is up, with the reason in ``episode["end"]`` and counted in ``env/end/max_seconds``, while
the other episodes of the batch play on; the step does not wait for the hung environment."""
from __future__ import annotations

import asyncio
import time

import pytest
import torch
from chatml_bpe import chatml_tokenizer
from test_episode_loop import Scripted

from feedback_rl.base import Environment, EnvironmentOptions, Episode, Reply, SamplingParams
from feedback_rl.loop.episodes import play_episodes

HANG_S = 60.0


class Sleepy(Episode):
    """Answers 'Again.' then ends done on its second turn; with ``row['hang']`` its second step sleeps for a
    minute (an environment waiting on a server that never answers)."""

    def __init__(self, row):
        super().__init__([{"role": "user", "content": "Say something."}])
        self.row, self.turns, self.closed = row, 0, False

    async def step_async(self, message):
        self.turns += 1
        if self.turns == 2 and self.row.get("hang"):
            await asyncio.sleep(HANG_S)
        if self.turns == 2:
            return Reply(reward=1.0, done=True)
        return Reply([{"role": "user", "content": "Again."}], reward=0.0)


class SleepyEnv(Environment):
    name = "sleepy"

    def reset(self, row, seed, episode_id):
        return Sleepy(row)


def play(rows, max_seconds):
    tok = chatml_tokenizer()
    env = SleepyEnv(EnvironmentOptions(max_turns=3, max_seconds=max_seconds), None)
    start = time.monotonic()
    rollouts, metrics = play_episodes(Scripted(tok), torch.nn.Linear(1, 1), tok, env, rows,
                                      SamplingParams(max_new_tokens=40), 1, 3, 4096)
    return rollouts, metrics, time.monotonic() - start


def test_an_episode_whose_environment_hangs_ends_truncated_at_its_time_limit():
    rollouts, metrics, took = play([{"hang": True}, {}], max_seconds=1.0)
    assert took < 10, f"the step waited {took:.1f}s for a hung environment"
    hung, fine = rollouts
    assert hung.truncated and hung.episode["truncated"] and not hung.episode["done"]
    assert hung.episode["end"] == "max_seconds" and hung.episode["error"] is None
    assert hung.episode["rewards"] == [0.0, None]       # the second turn was sampled; its cancelled step gave none
    assert fine.episode["end"] == "done" and fine.episode["rewards"] == [0.0, 1.0]
    assert metrics["env/end/max_seconds"] == 0.5 and metrics["env/end/done"] == 0.5


def test_an_episode_past_its_time_before_a_turn_is_not_given_one(monkeypatch):
    # time runs 10 s per look at the clock: the episode is past its 5 s before its first turn is generated
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr("feedback_rl.loop.episodes.time.monotonic", lambda: float(next(clock)))
    rollouts, metrics, _ = play([{}], max_seconds=5.0)
    assert rollouts[0].episode["end"] == "max_seconds" and rollouts[0].truncated
    assert rollouts[0].episode["rewards"] == [] and rollouts[0].completion_ids == []


@pytest.mark.parametrize("max_seconds", [None, 30.0])
def test_without_a_limit_or_within_it_episodes_end_as_the_environment_says(max_seconds):
    rollouts, metrics, _ = play([{}, {}], max_seconds=max_seconds)
    assert [r.episode["end"] for r in rollouts] == ["done", "done"] and metrics["env/end/done"] == 1.0


def test_the_recipe_takes_max_seconds_and_frl_validate_names_a_bad_one(tmp_path):
    import subprocess
    import sys

    from test_recipe_environment import RECIPE, check
    assert check(tmp_path, RECIPE.replace("max_turns: 3", "max_turns: 3, max_seconds: 2.5")).options(
        "environment", 0).max_seconds == 2.5
    (tmp_path / "r.yaml").write_text(RECIPE.replace("max_turns: 3", "max_turns: 3, max_seconds: 0"))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "r.yaml:8: stages[0].environment.max_seconds: " in out.stderr, out.stderr


def test_every_end_reason_is_a_metric_of_every_step_so_ranks_average_the_same_keys():
    from feedback_rl.loop.episodes import ENDS
    _, metrics, _ = play([{}], max_seconds=None)
    assert {k: v for k, v in metrics.items() if k.startswith("env/end/")} == \
        {f"env/end/{k}": float(k == "done") for k in ENDS}
