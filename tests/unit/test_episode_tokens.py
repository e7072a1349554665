"""An episode is one append-only token sequence: sampled ids verbatim, environment turns rendered alone and
appended; a template that cannot be extended turn by turn splits the episode and says so."""
from __future__ import annotations

import pytest
from chatml_bpe import CHATML, chatml_tokenizer

from feedback_rl.episodes.tokens import EpisodeTokens, encode

OPENING = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is 123 * 456?"}]
SAID = ["I will call the tool.", "<tool_call>{\"name\": \"calculate\"}</tool_call>", "The answer is 56088."]
HEARD = [[{"role": "user", "content": "Go on."}], [{"role": "tool", "content": "56088"}]]


def sampled(tok, text):
    """Ids as a model may sample them: one token per character (a split BPE never makes), then the stop."""
    return [tok.convert_tokens_to_ids(t) for t in tok.tokenize(text) for t in _chars(tok, t)] + [tok.eos_token_id]


def _chars(tok, token):
    return [c for c in token] if all(tok.convert_tokens_to_ids(c) != tok.unk_token_id for c in token) else [token]


def play(tok, turns=3):
    ep = EpisodeTokens(tok, OPENING)
    pieces, ids = [ep.prompt_ids()], []
    for k in range(turns):
        ids.append(sampled(tok, SAID[k]))
        assert ep.prompt_ids() == sum(pieces, [])  # each turn is generated from exactly the ids built so far
        ep.add_sampled(ids[k], [-0.5 - k] * len(ids[k]), reward=float(k))
        pieces.append(ids[k])
        if k < turns - 1:
            before = len(ep.prompt_ids())
            assert ep.add_environment(HEARD[k])
            pieces.append(ep.prompt_ids()[before:])
    return ep, pieces, ids


def test_three_turns_train_on_the_sampled_ids_plus_the_appended_environment_ids():
    tok = chatml_tokenizer()
    ep, pieces, ids = play(tok)
    (seq,) = ep.segments
    assert seq.ids == sum(pieces, []) and not ep.bridge_fallback
    # each environment turn is exactly its own rendering, tokenized alone: the newline the template writes after
    # <|im_end|> (which the model did not sample), the turn, and the next assistant header
    assert pieces[2] == encode(tok, "\n<|im_start|>user\nGo on.<|im_end|>\n<|im_start|>assistant\n")
    assert pieces[4] == encode(tok, "\n<|im_start|>tool\n56088<|im_end|>\n<|im_start|>assistant\n")
    trained = [t for t, m in zip(seq.ids, seq.mask) if m]
    assert trained == ids[0] + ids[1] + ids[2]
    assert [lp for lp, m in zip(seq.logprobs, seq.mask) if m] == \
        [-0.5] * len(ids[0]) + [-1.5] * len(ids[1]) + [-2.5] * len(ids[2])
    assert [s.role for s in seq.spans] == ["prompt", "assistant", "environment", "assistant", "environment",
                                           "assistant"]
    assert [seq.ids[s.start:s.end] for s in seq.spans] == pieces
    assert [s.turn for s in seq.spans] == [-1, 0, 0, 1, 1, 2]  # each span knows its turn's step reward
    assert ep.room(len(seq.ids) + 5) == 5 and ep.room(len(seq.ids)) == 0
    assert ep.rewards == [0.0, 1.0, 2.0] and ep.turns == 3
    # the same text as the whole conversation rendered again, but not the same ids: re-rendering would train
    # on tokens the model never produced
    whole = tok.apply_chat_template(ep.messages, tokenize=False)
    assert tok.decode(seq.ids) + "\n" == whole
    assert encode(tok, whole)[: len(seq.ids)] != seq.ids


def test_the_environment_sees_the_decoded_turns_without_the_stop_token():
    ep, _, _ = play(chatml_tokenizer())
    assert [m["content"] for m in ep.messages if m["role"] == "assistant"] == SAID


def test_a_turn_cut_before_its_stop_token_gets_the_whole_closing_untrained():
    tok = chatml_tokenizer()
    ep = EpisodeTokens(tok, OPENING)
    cut = sampled(tok, "I will")[:-1]
    ep.add_sampled(cut, [-1.0] * len(cut))
    before = len(ep.prompt_ids())
    assert ep.add_environment(HEARD[0])
    assert ep.prompt_ids()[before:] == encode(tok, "<|im_end|>\n<|im_start|>user\nGo on.<|im_end|>\n"
                                                   "<|im_start|>assistant\n")
    assert ep.segments[0].mask[before:] == [0] * (len(ep.prompt_ids()) - before)


# Qwen3's habit: earlier assistant turns lose their reasoning once a later turn exists
FORGETFUL = CHATML.replace("{{ m['content'] }}", "{% if m['role'] == 'assistant' and not loop.last %}"
                           "{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}")


def test_a_template_that_rewrites_earlier_turns_splits_the_episode_per_turn():
    tok = chatml_tokenizer(FORGETFUL)
    ep = EpisodeTokens(tok, OPENING)
    first = sampled(tok, "<think>123 * 456</think>I will call the tool.")
    ep.add_sampled(first, [-1.0] * len(first))
    assert ep.add_environment(HEARD[0]) is False and ep.bridge_fallback
    # the next turn is prompted by the conversation rendered as the template wants it, in a sequence of its own
    rerendered = tok.apply_chat_template(ep.messages, tokenize=False, add_generation_prompt=True)
    assert "<think>" not in rerendered and ep.prompt_ids() == encode(tok, rerendered)
    second = sampled(tok, SAID[2])
    ep.add_sampled(second, [-2.0] * len(second))
    one, two = ep.segments
    assert [t for t, m in zip(one.ids, one.mask) if m] == first and one.spans[-1].role == "assistant"
    assert two.ids == encode(tok, rerendered) + second and two.prompt_length == len(encode(tok, rerendered))
    assert [(s.role, s.turn) for s in two.spans] == [("prompt", 0), ("assistant", 1)]
    # and once split, it stays split: every later turn is a sequence of its own
    assert ep.add_environment(HEARD[1]) is False and len(ep.segments) == 3


def test_the_template_is_checked_against_the_real_conversation_not_only_the_probe():
    # renders the first user turn differently once more turns follow: the probe alone would not see it
    template = CHATML.replace("{{ m['content'] }}", "{% if loop.index == 2 and messages|length > 3 %}[seen] "
                              "{% endif %}{{ m['content'] }}")
    tok = chatml_tokenizer(template)
    ep = EpisodeTokens(tok, OPENING)
    ep.add_sampled(sampled(tok, SAID[0]), [0.0] * len(sampled(tok, SAID[0])))
    assert ep.add_environment(HEARD[0]) is False


def test_mismatched_logprobs_are_refused():
    tok = chatml_tokenizer()
    with pytest.raises(ValueError, match="2 sampled ids but 1 log-probs"):
        EpisodeTokens(tok, OPENING).add_sampled([5, 6], [0.0])


def test_logprobs_come_as_a_backend_returns_them_a_tensor_or_none():
    import torch
    tok = chatml_tokenizer()
    ep = EpisodeTokens(tok, OPENING)
    ids = sampled(tok, SAID[0])
    ep.add_sampled(ids, torch.full((len(ids),), -0.25))
    assert ep.segments[0].logprobs[-len(ids):] == [-0.25] * len(ids)
    ep.add_environment(HEARD[0])
    ep.add_sampled(ids, None)  # one turn without them: the segment has none, rather than zeros that lie
    assert ep.segments[0].logprobs is None
    ep.add_environment(HEARD[1])
    assert ep.segments[0].logprobs is None and len(ep.segments[0].mask) == len(ep.segments[0].ids)
