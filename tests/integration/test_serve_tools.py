"""frl serve takes OpenAI ``tools``: offered in the prompt as training offers them, and a reply's Hermes
``<tool_call>`` comes back as ``tool_calls`` (finish_reason ``tool_calls``), whole or streamed, so an agent written
against the official client runs against a served model as it ran against the rollout endpoint while training.
Before, frl serve refused ``tools`` with a 400.

The model is the tiny GPT-2 taught one reply (a call of ``calculate``) to the tools prompt in a few steps here, so
the reply is known and the parsing is what is tested."""
from __future__ import annotations

import json

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.modeling.chat import render_prompt
from feedback_rl.modeling.tiny import build_tiny_gpt2
from frl_plugins.serve.server import ServerThread, build_app

CALCULATE = {"type": "function", "function": {
    "name": "calculate", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
ASK = [{"role": "user", "content": "What is 12 * 34?"}]
CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "12 * 34"}}</tool_call>'


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.manual_seed(0)
    folder = build_tiny_gpt2(tmp_path_factory.mktemp("m"), n_layer=2, n_embd=64, n_positions=1024)
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompt = tok(render_prompt(tok, ASK, tools=[CALCULATE]), add_special_tokens=False)["input_ids"]
    reply = tok(CALL, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    x, labels = torch.tensor([prompt + reply]), torch.tensor([[-100] * len(prompt) + reply])
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for _ in range(60):   # the greedy reply is the call after about 25 steps (measured)
        model(x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with ServerThread(build_app(model, tok, "tiny")) as server:
        yield openai.OpenAI(base_url=server.url, api_key="x", max_retries=0), tok, prompt


def test_a_reply_that_calls_a_tool_comes_back_as_tool_calls(served):
    client, tok, prompt = served
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[CALCULATE], temperature=0, max_tokens=120,
                                       extra_body={"return_token_ids": True})
    assert r.model_extra["prompt_token_ids"] == prompt   # the tools are in the prompt, as training renders them
    message = r.choices[0].message
    assert message.content == CALL and r.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls
    assert call.type == "function" and call.function.name == "calculate"
    assert json.loads(call.function.arguments) == {"expression": "12 * 34"}
    # the agent's next turn: the message sent back, then the tool's result; the reply is plain text again
    follow = client.chat.completions.create(
        model="tiny", tools=[CALCULATE], temperature=0, max_tokens=4,
        messages=ASK + [message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id,
                                                                "content": "408"}])
    assert follow.choices[0].message.tool_calls is None and follow.choices[0].finish_reason != "tool_calls"


def test_a_streamed_reply_carries_its_calls_on_its_last_piece(served):
    client, _, _ = served
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=[CALCULATE], temperature=0,
                                                 max_tokens=120, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert text == CALL and chunks[-1].choices[0].finish_reason == "tool_calls"
    assert [(t.index, t.function.name, json.loads(t.function.arguments)) for t in calls] == \
        [(0, "calculate", {"expression": "12 * 34"})]


def test_with_tool_choice_none_the_same_text_is_only_text(served):
    client, _, _ = served
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[CALCULATE], tool_choice="none",
                                       temperature=0, max_tokens=120)
    assert r.choices[0].message.content == CALL   # the same prompt, the same reply
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
