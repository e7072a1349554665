"""Tools through the rollout endpoint: ``tools=`` in OpenAI's shape are offered by the core's tools path, a reply's
Hermes ``<tool_call>`` comes back as OpenAI ``tool_calls`` (finish_reason ``tool_calls``), and the agent's usual
loop (send the assistant message back, then the tool's result) extends the session without a split. The turns
are written by the scripted backend the calculator test uses (an untrained tiny model calls no tool)."""
from __future__ import annotations

import json

import pytest
from scripted_tool_backend import ScriptedToolBackend

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.agents import AgentRunner
from feedback_rl.modeling.tiny import build_tiny_gpt2
from feedback_rl.models import context_length, load_model

CALCULATE = {"type": "function", "function": {
    "name": "calculate", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
SEEN: list[dict] = []


def agent(row, client):
    messages = [{"role": "user", "content": f"What is {row['expression']}?"}]
    first = client.chat.completions.create(model="m", messages=messages, tools=[CALCULATE])
    message = first.choices[0].message
    call = message.tool_calls[0]
    result = str(eval(json.loads(call.function.arguments)["expression"]))   # the agent's own tool
    messages += [message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = client.chat.completions.create(model="m", messages=messages, tools=[CALCULATE])
    SEEN.append({"finish": [first.choices[0].finish_reason, final.choices[0].finish_reason],
                 "call": call.function.name, "content": message.content})
    return float(final.choices[0].message.content == result)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    # the Hermes tools prompt is long in a one-token-per-character tokenizer
    model, tokenizer = load_model(str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny"), n_positions=1024)))
    context = PluginContext("scripted", tmp_path_factory.mktemp("r"))
    backend = ScriptedToolBackend(ScriptedToolBackend.Options(), context)
    r = AgentRunner(agent, backend, model, tokenizer, SamplingParams(max_new_tokens=96),
                    context=context_length(model.config), timeout_s=60, wait_s=0.05)
    yield r
    r.close()


def test_tool_calls_come_back_in_openais_shape_and_the_tool_result_extends_the_session(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FRL_SCRIPT_LOG", str(tmp_path / "script.jsonl"))
    rollouts, metrics = runner.play([{"expression": "12*34"}, {"expression": "7+8"}], num_generations=2, version=0)
    assert metrics["env/agent_splits"] == 0.0 and metrics["env/errors"] == 0.0
    assert metrics["env/tool_calls/ok"] == 1.0   # one ok call per episode, from the first reply
    assert len(SEEN) == 4 and all(s["finish"] == ["tool_calls", "stop"] and s["call"] == "calculate" for s in SEEN)
    assert all(s["content"].startswith("<tool_call>") for s in SEEN)   # the sampled text stays the content
    assert sorted(r.episode["rewards"][-1] for r in rollouts) == [0.0, 0.0, 1.0, 1.0]   # the script errs every other
    for r in rollouts:
        assert r.episode["tools_offered"] == "system_prompt" and '"calculate"' in r.prompt
        assert [t["role"] for t in r.episode["turns"]] == ["assistant", "tool", "assistant"]
        roles = [role for _, _, role, _ in r.episode["spans"]]
        assert roles == ["assistant", "environment", "assistant"]
