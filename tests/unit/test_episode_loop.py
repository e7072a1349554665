"""The batched episode loop (loop/episodes.py): every live episode's next turn in one backend call, the sampled
ids trained verbatim (mask 1, behaviour log-probs kept), the environment's turns appended with mask 0, and the
ways an episode ends (done, max_turns, context overflow, an environment that raises)."""
from __future__ import annotations

import asyncio

import pytest
import torch
from chatml_bpe import chatml_tokenizer

from feedback_rl.base import Environment, EnvironmentOptions, Episode, Generation, Reply, SamplingParams
from feedback_rl.errors import UserError
from feedback_rl.loop.episodes import play_episodes
from frl_plugins.rewards.environment import EnvironmentSource

SAID = ["Let me think.", "Still thinking.", "It is 7."]
TAIL = [11, 12, 13]  # sampled after the stop token: the loop cuts them off


def char_ids(tok, text):
    """Ids as a model may sample them: one token per character (splits BPE would never make), then the stop."""
    return [tok.convert_tokens_to_ids(c) for t in tok.tokenize(text) for c in t] + [tok.eos_token_id]


class Scripted:
    """A backend that says SAID[turn] to every prompt, with log-prob -(turn + 1) / 10 per token; it records
    the prompts of each call."""

    holds_weights = True

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate(self, model, tokenizer, prompt_ids, sampling):
        turn = len(self.calls)
        self.calls.append([list(p) for p in prompt_ids])
        ids = char_ids(self.tok, SAID[turn]) + TAIL
        return [Generation(list(p), ids, torch.full((len(ids),), -(turn + 1) / 10), False) for p in prompt_ids]


class Countdown(Episode):
    """Ends done after ``row['turns']`` turns, reward 1.0 then; each earlier turn is answered 'Again.'."""

    def __init__(self, row):
        super().__init__([{"role": "user", "content": "Say something."}])
        self.row, self.turns, self.last = row, 0, row["turns"]

    def step(self, message):
        self.turns += 1
        if self.row.get("fail_at") == self.turns:
            raise RuntimeError("the environment broke")
        if self.turns >= self.last:
            return Reply(reward=1.0, done=True, info={"said": message["content"]})
        return Reply([{"role": "user", "content": "Again."}], reward=0.25, info={"said": message["content"]})


class CountdownEnv(Environment):
    name = "countdown"

    def reset(self, row, seed, episode_id):
        return Countdown(row)


def play(rows, max_turns=3, context=4096, num_generations=1):
    tok = chatml_tokenizer()
    backend = Scripted(tok)
    env = CountdownEnv(EnvironmentOptions(max_turns=max_turns), None)
    rollouts, metrics = play_episodes(backend, torch.nn.Linear(1, 1), tok, env, rows, SamplingParams(max_new_tokens=40),
                                      num_generations, max_turns, context)
    return tok, backend, rollouts, metrics


def test_live_episodes_share_one_backend_call_per_turn_and_finished_ones_leave_it():
    _, backend, rollouts, metrics = play([{"turns": 1}, {"turns": 3}, {"turns": 2}])
    assert [len(c) for c in backend.calls] == [3, 2, 1]
    assert [len(r.episode["rewards"]) for r in rollouts] == [1, 3, 2]
    assert metrics["env/turns_mean"] == 2.0 and metrics["env/done_rate"] == 1.0
    assert metrics["env/bridge_fallbacks"] == 0.0


def test_trained_ids_are_the_sampled_ids_verbatim_plus_the_environment_ids_with_mask_zero():
    tok, backend, rollouts, _ = play([{"turns": 3}])
    r = rollouts[0]
    ids, mask, lp = r.completion_ids, r.completion_mask, r.logprobs.tolist()
    sampled = [i for i, m in zip(ids, mask) if m == 1]
    assert sampled == sum((char_ids(tok, s) for s in SAID), [])  # cut at the stop, never re-tokenized
    # each turn was generated from exactly the ids built so far: prompt + completion up to that point
    whole = r.prompt_ids + ids
    for call in backend.calls:
        assert whole[:len(call[0])] == call[0]
    assert backend.calls[0][0] == r.prompt_ids
    env_text = tok.decode([i for i, m in zip(ids, mask) if m == 0])
    assert env_text.count("Again.") == 2 and "Say something." not in env_text
    assert [x for x, m in zip(lp, mask) if m == 0] == [0.0] * mask.count(0)
    per_turn = [round(x, 6) for x, m in zip(lp, mask) if m == 1]
    assert per_turn == [round(-(t + 1) / 10, 6) for t, s in enumerate(SAID) for _ in char_ids(tok, s)]
    spans = r.episode["spans"]
    assert [s[2] for s in spans] == ["assistant", "environment", "assistant", "environment", "assistant"]
    assert all(set(mask[a:b]) == {int(role == "assistant")} for a, b, role, _ in spans)
    assert r.episode["rewards"] == [0.25, 0.25, 1.0] and not r.truncated
    assert [t["role"] for t in r.episode["turns"]] == ["assistant", "user", "assistant", "user", "assistant"]
    assert "[assistant] It is 7." in r.completion and "[user] Again." in r.completion


def test_max_turns_and_context_overflow_end_an_episode_truncated():
    _, _, rollouts, _ = play([{"turns": 5}], max_turns=2)
    assert rollouts[0].truncated and len(rollouts[0].episode["rewards"]) == 2
    _, backend, rollouts, _ = play([{"turns": 5}], context=len(play([{"turns": 1}])[1].calls[0][0]) + 60)
    assert rollouts[0].truncated and len(backend.calls) == 1 and not rollouts[0].episode["done"]


def test_an_environment_that_raises_is_an_error_score_not_a_zero():
    _, _, rollouts, metrics = play([{"turns": 3, "fail_at": 2}, {"turns": 1}])
    assert "the environment broke" in rollouts[0].episode["error"] and metrics["env/errors"] == 1.0
    scores = EnvironmentSource(EnvironmentSource.Options(), None).score(rollouts)
    assert scores[0].status == "error" and scores[1].status == "ok" and scores[1].value == 1.0


def test_the_environment_source_sums_step_rewards_and_abstains_on_a_plain_completion():
    _, _, rollouts, _ = play([{"turns": 3}], num_generations=2)
    assert [r.group for r in rollouts] == [0, 0]
    source = EnvironmentSource(EnvironmentSource.Options(), None)
    assert [s.value for s in source.score(rollouts)] == [1.5, 1.5]
    plain = rollouts[0].__class__(prompt="p", completion="c", row={}, group=0, prompt_ids=[1], completion_ids=[2])
    assert source.score([plain])[0].status == "abstain"


def test_a_row_the_environment_cannot_open_is_one_line_naming_the_environment_and_row():
    with pytest.raises(UserError) as e:
        play([{"turns": 1}, {}])  # the second row lacks 'turns'
    assert str(e.value) == "environment 'countdown' could not open an episode of row 1 (KeyError: 'turns')"


class SlowOpening(CountdownEnv):
    """Opens each episode after waiting on I/O (a server's WebSocket session, say); counts how many wait at once,
    and which episodes were closed."""

    def __init__(self, *a):
        super().__init__(*a)
        self.waiting = self.most = 0
        self.closed: list[int] = []

    async def reset_async(self, row, seed, episode_id):
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        await asyncio.sleep(0.01)
        self.waiting -= 1
        if row.get("broken"):
            raise ConnectionError("the server went away")
        episode = Countdown(row)
        episode.close = lambda: self.closed.append(seed)
        return episode


def test_an_environment_that_waits_to_open_opens_every_episode_of_the_step_at_once():
    tok = chatml_tokenizer()
    env = SlowOpening(EnvironmentOptions(max_turns=3), None)
    rollouts, _ = play_episodes(Scripted(tok), torch.nn.Linear(1, 1), tok, env, [{"turns": 1}, {"turns": 2}],
                                SamplingParams(max_new_tokens=40), 3, 3, 4096)
    assert env.most == 6 and len(rollouts) == 6 and sorted(env.closed) == list(range(6))
    # one that cannot be opened is one line naming its row, and the episodes that did open are closed
    env = SlowOpening(EnvironmentOptions(max_turns=3), None)
    with pytest.raises(UserError) as e:
        play_episodes(Scripted(tok), torch.nn.Linear(1, 1), tok, env, [{"turns": 1}, {"broken": True}],
                      SamplingParams(max_new_tokens=40), 2, 3, 4096)
    assert str(e.value) == ("environment 'countdown' could not open an episode of row 1 "
                            "(ConnectionError: the server went away)")
    assert sorted(env.closed) == [0, 1]


def test_an_episode_with_tools_logs_every_tool_call_outcome_zeros_too_so_ranks_average_the_same_keys():
    from feedback_rl.episodes.tool_calls import OUTCOMES
    from feedback_rl.loop.episodes import episode_metrics as _metrics

    class Ep:
        offered, infos, done, error, end = "system_prompt", [{"tool_calls": [{"outcome": "ok"}]}], True, None, "done"

        class tokens:
            turns, bridge_fallback = 1, False

    m = _metrics([Ep()])
    assert {f"env/tool_calls/{k}" for k in OUTCOMES} <= set(m) and m["env/tool_calls/ok"] == 1.0
    assert m["env/tool_calls/unclosed"] == 0.0


def test_an_episode_cut_by_a_limit_before_any_reward_scores_zero_and_one_that_ended_without_any_abstains():
    # guess_number rewards only a solved game: an episode the context cut first used to abstain and so drop out
    # of its group's reward instead of counting as the failure it is
    source = EnvironmentSource(EnvironmentSource.Options(), None)

    def episode(**kw):
        from feedback_rl import Rollout
        return Rollout(prompt="p", completion="c", row={}, group=0, prompt_ids=[1], completion_ids=[2],
                       episode={"rewards": [None, None], "error": None, **kw})
    cut, ended = source.score([episode(truncated=True, done=False), episode(truncated=False, done=True)])
    assert (cut.status, cut.value) == ("ok", 0.0) and ended.status == "abstain"
