"""A session of the rollout endpoint is one append-only token sequence, as an environment episode is: the ids a
call sampled are kept verbatim, the messages a later call adds are rendered alone and appended; a call that edits
the history, or token-in ids that do not extend the sequence, open a new segment and are counted."""
from __future__ import annotations

from chatml_bpe import chatml_tokenizer
from test_episode_tokens import sampled

from feedback_rl.episodes.tokens import encode
from feedback_rl.serving.sessions import Session

OPENING = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is 123 * 456?"}]
SAID = ["I will call the tool.", "<tool_call>{\"name\": \"calculate\"}</tool_call>", "The answer is 56088."]
HEARD = [[{"role": "user", "content": "Go on."}], [{"role": "tool", "content": "56088"}]]


def three_calls(tok):
    """An agent's three chat calls, each sending the whole conversation back (as an openai-client agent does):
    the opening, then each reply it was given plus the new messages."""
    s = Session(tok, {tok.eos_token_id})
    conversation, prompts, ids = list(OPENING), [], []
    for k in range(3):
        prompts.append(s.chat(list(conversation), []))
        ids.append(sampled(tok, SAID[k]))
        reply = s.sampled(ids[k], [-0.5 - k] * len(ids[k]))
        conversation.append({"role": "assistant", "content": reply})
        if k < 2:
            conversation += HEARD[k]
    return s, prompts, ids, conversation


def test_three_calls_train_on_the_sampled_ids_plus_the_appended_ids_never_a_rerendering():
    tok = chatml_tokenizer()
    s, prompts, ids, conversation = three_calls(tok)
    (seq,) = s.tokens.segments
    assert s.splits == 0 and s.calls == 3 and not s.tokens.bridge_fallback
    # each call is prompted by exactly the sequence so far: the previous prompt, the sampled ids, the new turn
    header = "<|im_start|>assistant\n"
    assert prompts[1] == prompts[0] + ids[0] + encode(tok, "\n<|im_start|>user\nGo on.<|im_end|>\n" + header)
    assert prompts[2] == prompts[1] + ids[1] + encode(tok, "\n<|im_start|>tool\n56088<|im_end|>\n" + header)
    assert seq.ids == prompts[2] + ids[2]
    assert [t for t, m in zip(seq.ids, seq.mask) if m] == ids[0] + ids[1] + ids[2]
    assert [lp for lp, m in zip(seq.logprobs, seq.mask) if m] == \
        [-0.5] * len(ids[0]) + [-1.5] * len(ids[1]) + [-2.5] * len(ids[2])
    # the whole conversation rendered again is the same text but other ids: re-tokenizing would train on
    # tokens the model never sampled
    whole = encode(tok, tok.apply_chat_template(conversation, tokenize=False))
    assert tok.decode(whole) == tok.decode(seq.ids) + "\n" and whole[: len(seq.ids)] != seq.ids


def test_a_call_that_edits_the_history_opens_a_new_segment_and_is_counted():
    tok = chatml_tokenizer()
    s = Session(tok, {tok.eos_token_id})
    first = s.chat(list(OPENING), [])
    reply = s.sampled(sampled(tok, SAID[0]), None)
    edited = [OPENING[0], {"role": "user", "content": "What is 12 * 456?"}, {"role": "assistant", "content": reply},
              {"role": "user", "content": "Go on."}]
    second = s.chat(edited, [])
    assert s.splits == 1 and s.tokens.bridge_fallback and len(s.tokens.segments) == 2
    assert s.tokens.segments[0].ids == first + sampled(tok, SAID[0])   # the first segment is untouched
    assert second == encode(tok, tok.apply_chat_template(edited, tokenize=False, add_generation_prompt=True))
    # a reply that was changed before it was sent back is an edit too
    s.sampled(sampled(tok, SAID[1]), None)
    s.chat(edited + [{"role": "assistant", "content": "something else"}, *HEARD[1]], [])
    assert s.splits == 2 and len(s.tokens.segments) == 3


def test_token_in_calls_extend_the_sequence_by_its_prefix_or_split():
    tok = chatml_tokenizer()
    s = Session(tok, {tok.eos_token_id})
    prompt = encode(tok, tok.apply_chat_template(OPENING, tokenize=False, add_generation_prompt=True))
    assert s.token_in(prompt) == prompt
    said = sampled(tok, SAID[0])
    s.sampled(said, [-1.0] * len(said))
    more = encode(tok, "\n<|im_start|>user\nGo on.<|im_end|>\n<|im_start|>assistant\n")
    assert s.token_in(prompt + said + more) == prompt + said + more and s.splits == 0
    (seq,) = s.tokens.segments
    assert [t for t, m in zip(seq.ids, seq.mask) if m] == said
    s.sampled(said, [-1.0] * len(said))
    s.token_in(prompt + more)   # not a prefix of what was sampled: a new segment, counted
    assert s.splits == 1 and len(s.tokens.segments) == 2 and s.tokens.segments[1].ids == prompt + more


def test_tools_offered_in_a_call_go_through_the_core_tools_path():
    tok = chatml_tokenizer()   # a template without a tools branch: the Hermes system prompt carries them
    s = Session(tok, {tok.eos_token_id})
    tool = {"type": "function", "function": {"name": "calculate", "description": "Evaluate.",
                                             "parameters": {"type": "object", "properties": {}}}}
    ids = s.chat(list(OPENING), [tool])
    assert s.offered == "system_prompt" and "<tools>" in tok.decode(ids) and '"calculate"' in tok.decode(ids)
    assert s.seen == OPENING   # the client's view of the conversation: the offer is the core's, not its
