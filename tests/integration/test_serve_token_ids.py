"""frl serve answers vLLM's ``return_token_ids``: each choice's generated ids (their text is the reply) and the
prompt's ids, where vLLM puts them (the chat response's ``prompt_token_ids``, each completion choice's)."""
from __future__ import annotations

import openai
import pytest

from feedback_rl.server import chat_prompt
from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app


@pytest.fixture(scope="module")
def served():
    model, tokenizer = load_local("builtin:tiny-gpt2")
    with ServerThread(build_app(model, tokenizer, "tiny")) as server:
        yield openai.OpenAI(base_url=server.url, api_key="x", max_retries=0), tokenizer


def test_chat_returns_the_sampled_ids_and_the_prompts_when_asked(served):
    client, tok = served
    messages = [{"role": "user", "content": "1+1="}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, seed=3,
                                       extra_body={"return_token_ids": True})
    ids = r.choices[0].model_extra["token_ids"]
    assert 1 <= len(ids) <= 6 and tok.decode(ids, skip_special_tokens=True) == r.choices[0].message.content
    assert r.model_extra["prompt_token_ids"] == tok(chat_prompt(tok, messages), add_special_tokens=False)["input_ids"]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    assert "token_ids" not in (plain.choices[0].model_extra or {}) and "prompt_token_ids" not in (plain.model_extra or {})


def test_completions_put_the_prompt_ids_on_each_choice(served):
    client, tok = served
    r = client.completions.create(model="tiny", prompt=["12+", "3+4="], max_tokens=3, n=2,
                                  extra_body={"return_token_ids": True})
    assert [c.model_extra["prompt_token_ids"] for c in sorted(r.choices, key=lambda c: c.index)] == \
        [tok("12+")["input_ids"]] * 2 + [tok("3+4=")["input_ids"]] * 2
    for c in r.choices:
        assert tok.decode(c.model_extra["token_ids"], skip_special_tokens=True) == c.text
