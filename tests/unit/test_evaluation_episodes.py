"""Held-out eval of a stage with an environment plays episodes (loop/evaluation.py): one greedy episode per eval
row, through the same loop as training, scored by the eval sources; the episodes' metrics as ``eval/env/...``."""
from __future__ import annotations

import math

import torch
from chatml_bpe import chatml_tokenizer
from test_episode_loop import char_ids

from feedback_rl.base import Environment, EnvironmentOptions, Episode, Generation, Reply
from feedback_rl.config.recipe import SourceSpec
from feedback_rl.loop.evaluation import EpisodeEval, evaluate
from feedback_rl.loop.rewards import Mixer, Slot
from frl_plugins.rewards.environment import EnvironmentSource


class Greedy:
    """Says "go" to every prompt; records each call's prompts and whether it was asked to decode greedily."""

    holds_weights = True

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate(self, model, tokenizer, prompt_ids, sampling):
        self.calls.append((len(prompt_ids), sampling.greedy))
        ids = char_ids(self.tok, "go")
        return [Generation(list(p), ids, torch.zeros(len(ids)), False) for p in prompt_ids]


class Steps(Episode):
    """Done after ``row['turns']`` turns with reward ``row['score']``; each turn before it is a tool call."""

    def __init__(self, row):
        super().__init__([{"role": "user", "content": "Go."}])
        self.row, self.turns = row, 0

    def step(self, message):
        self.turns += 1
        if self.turns >= self.row["turns"]:
            return Reply(reward=self.row["score"], done=True)
        return Reply([{"role": "user", "content": "Again."}], info={"tool_calls": [{"outcome": "ok"}]})


class StepsEnv(Environment):
    name = "steps"

    def reset(self, row, seed, episode_id):
        return Steps(row)


def slot(name):
    return Slot(SourceSpec(name=name, type="environment"), EnvironmentSource(None, None))


ROWS = [{"turns": 1, "score": 0.0}, {"turns": 3, "score": 1.0}, {"turns": 2, "score": 1.0},
        {"turns": 4, "score": 0.5}, {"turns": 5, "score": 1.0}]


def run(rows, batch_size, max_turns=4):
    tok = chatml_tokenizer()
    backend = Greedy(tok)
    env = StepsEnv(EnvironmentOptions(max_turns=max_turns), None)
    out = evaluate(backend, torch.nn.Linear(1, 1), tok, rows, Mixer([slot("env")]), max_new_tokens=16,
                   batch_size=batch_size, episodes=EpisodeEval(env, max_turns, 4096, seed=0))
    return backend, out


def test_eval_of_an_environment_stage_scores_one_greedy_episode_per_row():
    backend, out = run(ROWS, batch_size=2)
    # rows 2 at a time: each batch's live episodes share a backend call per turn, every one greedy
    assert [n for n, _ in backend.calls] == [2, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1] and all(g for _, g in backend.calls)
    # the last row ran out of turns (4 < 5): truncated before any step reward, so it scores 0, a failure that
    # counts in the held-out accuracy (it used to abstain and leave the mean)
    assert math.isclose(out["eval/env"], (0.0 + 1.0 + 1.0 + 0.5 + 0.0) / 5)
    assert out["eval/reward"] == out["eval/env"]


def test_eval_episode_metrics_are_means_over_all_rows_whatever_the_batch_size():
    _, whole = run(ROWS, batch_size=100)
    _, batched = run(ROWS, batch_size=2)
    assert whole["eval/env/turns_mean"] == (1 + 3 + 2 + 4 + 4) / 5
    assert whole["eval/env/done_rate"] == 4 / 5
    assert whole["eval/env/tool_call_rate"] == 4 / 5              # every episode that lasted past its first turn
    assert whole["eval/env/tool_calls_per_episode"] == (0 + 2 + 1 + 3 + 4) / 5   # the last: 4 turns, each answered "Again."
    for key in ("eval/env/turns_mean", "eval/env/done_rate", "eval/env/tool_call_rate", "eval/env",
                "eval/env/tool_calls/ok", "eval/env/errors"):
        assert math.isclose(batched[key], whole[key]), key
