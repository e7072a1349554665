"""An episode whose chat template forced a split trains every segment, as one episode.

The core packs each later segment after the feedback's rows (``TokenBatch.owner`` / ``next_segment``); GRPO
gives every segment its episode's advantage (group statistics over episodes, not segments), PPO runs GAE from
one segment into the next with the score at the episode's end, DPO and KTO sum an episode's log-probs over its
segments. The check: an episode split where the re-rendered prompt happens to be exactly the ids so far (the
environment's turn moves from the completion, mask 0, into the next segment's prompt) has the same loss as the
episode in one sequence, in all four optimizers. Counting a segment as a group member, scoring every segment,
stopping GAE at a segment's end or scoring segments apart each changes it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from feedback_rl import SamplingParams
from feedback_rl.base import Environment, EnvironmentOptions, Episode, Generation, Reply
from feedback_rl.loop.batch import build, for_optimizer
from feedback_rl.loop.episodes import play_episodes
from feedback_rl.types import ScalarFeedback
from frl_plugins.optimizers.grpo import group_advantages
from frl_plugins.optimizers.ppo import episode_gae, gae
from test_episode_losses import OPTIMIZERS, feedback, optimizer_on_tiny, rollouts


def split_after_first_turn(r):
    """``r`` as two segments: its first sampled turn, then the rest prompted by every id before it."""
    mask = r.completion_mask
    a = mask.index(0)                # the first environment token
    b = mask.index(1, a)             # the second turn's first sampled token
    lp = r.logprobs
    later = dataclasses.replace(r, prompt_ids=r.prompt_ids + r.completion_ids[:b], completion_ids=r.completion_ids[b:],
                                completion_mask=mask[b:], logprobs=lp[b:], uid=r.uid + "/s1", segments=[])
    return dataclasses.replace(r, completion_ids=r.completion_ids[:a], completion_mask=mask[:a], logprobs=lp[:a],
                               segments=[later])


def loss_of(name, tiny_model_dir, tmp_path, split: bool, same_prompt: bool = False) -> tuple[float, object]:
    opt, tok, models = optimizer_on_tiny(name, tiny_model_dir, tmp_path)
    rs = rollouts(tok)
    if same_prompt:   # KTO's reference point reads first segments: with one prompt it has no mismatched pairs
        rs = [dataclasses.replace(r, prompt_ids=rs[0].prompt_ids, prompt=rs[0].prompt) for r in rs]
    if split:   # episodes 0 and 3 (three turns each) split after their first turn
        rs = [split_after_first_turn(r) if k in (0, 3) else r for k, r in enumerate(rs)]
    fb = feedback(name, rs)
    with torch.no_grad():
        batch = for_optimizer(opt, fb, models)
        prepared = opt.prepare(batch, models)
        loss, _ = opt.loss(next(iter(opt.minibatches(prepared))), models)
    return float(loss), batch


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_an_episode_split_into_segments_trains_as_the_episode_in_one_sequence(name, tiny_model_dir, tmp_path):
    same_prompt = name == "kto"
    whole, one = loss_of(name, tiny_model_dir, tmp_path, split=False, same_prompt=same_prompt)
    split, batch = loss_of(name, tiny_model_dir, tmp_path, split=True, same_prompt=same_prompt)
    assert len(batch.tokens) == 6 and len(one.tokens) == 4 and len(batch.rollouts) == 4
    assert batch.metrics["env/segments_trained"] == 2.0
    assert batch.tokens.target_mask.sum() == one.tokens.target_mask.sum()   # every sampled token, once
    assert split == pytest.approx(whole, abs=1e-5)


def test_an_optimizer_that_does_not_train_segments_gets_first_segments_and_a_count(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rs = [split_after_first_turn(r) if k in (0, 3) else r for k, r in enumerate(rollouts(tok))]
    fb = ScalarFeedback(rs, torch.tensor([1.0, 0.0, 0.25, 0.75]))
    batch = build(fb, torch.nn.Linear(1, 1), tok, segments=False)
    assert len(batch.tokens) == 4 and batch.tokens.owner is None
    assert batch.metrics["env/segments_untrained"] == 2.0
    batch = build(fb, torch.nn.Linear(1, 1), tok)
    assert batch.tokens.owner.tolist() == [0, 1, 2, 3, 0, 3]
    assert batch.tokens.next_segment.tolist() == [4, -1, -1, 5, -1, -1]
    assert bool(batch.has_behaviour.all())   # each segment's behaviour log-probs are its own


def test_group_statistics_count_episodes_not_segments():
    # three episodes of one group, scores 1, 0, 0; the first in two segments. By hand: mean 1/3, unbiased std
    # sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3); advantages 2/sqrt(3), -1/sqrt(3), -1/sqrt(3)
    from feedback_rl.tokens import TokenBatch
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 0]), "group", eps=0.0)
    rows = TokenBatch(torch.zeros(4, 2, dtype=torch.long), torch.ones(4, 2), torch.ones(4, 2),
                      owner=torch.tensor([0, 1, 2, 0]), next_segment=torch.tensor([3, -1, -1, -1]))
    s = 3 ** -0.5
    assert rows.spread(adv).tolist() == pytest.approx([2 * s, -s, -s, 2 * s])
    assert rows.per_episode(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [5.0, 2.0, 3.0]
    assert rows.episodes == 3


def test_gae_runs_from_a_segment_into_the_next_as_in_one_sequence():
    gamma, lam = 0.9, 0.8
    # one sequence: sampled, sampled, environment, environment, sampled, sampled (score 1 at the end)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 9.0, 9.0, 0.75, 0.5]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    want, want_returns = gae(rewards, values, mask, gamma, lam)
    # by hand, last token first: d5 = 1 - .5 = .5; d4 = .9*.5 - .75 = -.3; d1 = .9*.75 - .25 = .425;
    # d0 = .9*.25 - .5 = -.275. A5 = .5; A4 = -.3 + .72*.5 = .06; A1 = .425 + .72*.06 = .4682;
    # A0 = -.275 + .72*.4682 = .062104
    assert want[0, [0, 1, 4, 5]].tolist() == pytest.approx([0.062104, 0.4682, 0.06, 0.5])
    # two rows, padded: the first turn, then the second after a prompt of 2 tokens (environment's, mask 0)
    mask2 = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    values2 = torch.tensor([[0.5, 0.25, 0.0, 0.0], [3.0, 3.0, 0.75, 0.5]])
    rewards2 = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    adv, returns = episode_gae(rewards2, values2, mask2, gamma, lam, torch.tensor([1, -1]))
    assert adv[0, :2].tolist() == pytest.approx(want[0, :2].tolist())
    assert adv[1, 2:].tolist() == pytest.approx(want[0, 4:].tolist())
    assert returns[0, :2].tolist() == pytest.approx(want_returns[0, :2].tolist())
    # a segment's end is not the episode's end: stopping there would give d1 = -.25, A1 = -.25
    alone, _ = gae(rewards2, values2, mask2, gamma, lam)
    assert alone[0, 1].item() == pytest.approx(-0.25)


# ------------------------------------------------------------------ the real path: a template that splits
FORGETFUL = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
             "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'].split('</think>')[-1] }}"
             "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SAID = ["<think>hm</think>Five.", "<think>ok</think>Seven.", "<think>so</think>Six."]


class Thinking:
    """Says SAID[turn] (one token per character, then the stop) with log-prob -(turn + 1) / 10 per token."""

    holds_weights = True

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def ids(self, text):
        return [self.tok.convert_tokens_to_ids(c) for t in self.tok.tokenize(text) for c in t] + [self.tok.eos_token_id]

    def generate(self, model, tokenizer, prompt_ids, sampling):
        turn = len(self.calls)
        self.calls.append([list(p) for p in prompt_ids])
        ids = self.ids(SAID[turn])
        return [Generation(list(p), ids, torch.full((len(ids),), -(turn + 1) / 10), False) for p in prompt_ids]


class Again(Episode):
    def __init__(self):
        super().__init__([{"role": "user", "content": "Guess."}])
        self.turns = 0

    def step(self, message):
        self.turns += 1
        if self.turns == 3:
            return Reply(reward=1.0, done=True)
        return Reply([{"role": "user", "content": "Again."}], reward=0.0)


class AgainEnv(Environment):
    name = "again"

    def reset(self, row, seed, episode_id):
        return Again()


def test_a_template_that_drops_earlier_reasoning_gives_one_segment_per_turn_each_trained_on_its_sampled_ids():
    from chatml_bpe import chatml_tokenizer
    tok = chatml_tokenizer(FORGETFUL)
    backend = Thinking(tok)
    env = AgainEnv(EnvironmentOptions(max_turns=3), None)
    (r,), metrics = play_episodes(backend, torch.nn.Linear(1, 1), tok, env, [{}], SamplingParams(max_new_tokens=40),
                                  1, 3, 4096)
    assert metrics["env/bridge_fallbacks"] == 1.0 and r.episode["segments"] == 3 and len(r.segments) == 2
    for turn, seg in enumerate([r] + r.segments):
        # each segment: prompted by exactly what the backend was given, trained on exactly what it sampled
        assert seg.prompt_ids == backend.calls[turn][0]
        assert [i for i, m in zip(seg.completion_ids, seg.completion_mask) if m] == backend.ids(SAID[turn])
        assert seg.logprobs.tolist() == pytest.approx([-(turn + 1) / 10] * len(seg.completion_ids))
    # the later prompts are the conversation rendered again: the earlier reasoning is gone from them
    assert "<think>hm</think>" not in tok.decode(r.segments[0].prompt_ids)
    batch = build(ScalarFeedback([r], torch.tensor([1.0])), torch.nn.Linear(1, 1), tok)
    assert batch.tokens.owner.tolist() == [0, 0, 0] and batch.tokens.next_segment.tolist() == [1, 2, -1]
    assert int(batch.tokens.target_mask.sum()) == sum(len(backend.ids(s)) for s in SAID)
