"""`frl train` trains GRPO on verifiers v1 episodes that CALL A TOOL, through the core's rollout endpoint, offline.

`tasksets/tool_taskset.py` declares an MCP tool server (`AddTools`, a `vf.Toolset`) that verifiers starts itself,
from that file, on loopback. The `null` harness's chat program lists its tool (`add`), sends it as OpenAI `tools`
with each chat completion, runs each call of a reply on the server and sends the result back as a `tool` turn.
Here verifiers' eval client forwards those chat completions to the endpoint, which offers the tools the core's way
(the tiny template has no tools branch: the Hermes system prompt), samples, and answers a reply's
`<tool_call>` block as `tool_calls` (feedback_rl/serving/tool_replies.py); the chat program sends the reply back
as the assistant's message, then the tool's, and the session appends the tool turn alone. (verifiers' training
client parses calls out of the sampled ids with its own renderer: test_bridge_tool_renderer.py.)

The tiny model never writes a tool call by chance, so the test first teaches it one episode (teach_call.py) on
the exact ids the endpoint will prompt it with, made by the core's own session code."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import verifiers.v1 as vf
from bridge_run import finished_two_steps, train
from teach_call import TAUGHT, answer_text, asked, call_text, teach
from tool_taskset import AddTools, added, question
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.modeling.chat import render
from feedback_rl.modeling.tiny import build_tiny_gpt2
from feedback_rl.modeling.tool_offer import offer_schemas
from feedback_rl.serving.sessions import Session


def offered_tools() -> list[dict]:
    """The tools as the harness offers them: an MCP client's listing of the server, in OpenAI's shape, as the chat
    program makes it (verifiers/v1/harnesses/utils/mcp.py: connect_mcp); in-process here."""
    async def listed():
        from mcp import Client
        from mcp.server.mcpserver import MCPServer

        server = MCPServer("tools")
        AddTools(vf.ToolsetConfig()).register(server)
        async with Client(server) as client:
            return (await client.list_tools()).tools

    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}} for t in asyncio.run(listed())]


def taught(folder: Path) -> Path:
    """The tiny model (1,024 positions: the Hermes tools prompt is about 680 characters) taught its two replies of
    the first task's episode on the prompts the endpoint's session makes of them (the core's own code); at the
    recipe's temperature 0.5 it samples both (20 of 20 samples each, measured; at 1.0, 12 of 20 calls)."""
    folder = build_tiny_gpt2(folder, n_layer=2, n_embd=64, n_positions=1024)
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    reply = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731
    tools, turns = offered_tools(), [{"role": "user", "content": question(*TAUGHT)}]
    session = Session(tok, {tok.eos_token_id})
    first, call = session.chat(turns, tools), reply(call_text(*TAUGHT))
    said = session.sampled(call, None)
    second = session.chat(turns + [{"role": "assistant", "content": said},
                                   {"role": "tool", "content": added(*TAUGHT)}], tools)
    return teach(model, tok, [(first, call), (second, reply(answer_text()))], folder)


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vf-tools")
    return train(tmp, "tool_taskset", max_turns=4, model=taught(tmp / "model"), client="eval", max_tokens=80,
                 temperature=0.5)


def test_grpo_trains_two_steps_on_episodes_that_call_the_tasksets_tool(tool_run):
    steps = finished_two_steps(tool_run)
    # two calls of the policy per episode (the call, the answer), the second extending the first: no split
    assert all(m["env/agent_calls_mean"] == 2.0 and m["env/agent_splits"] == 0.0 for m in steps)
    assert all(m["env/bridge_fallbacks"] == 0.0 and m["env/tool_calls/ok"] == 1.0 for m in steps)


def test_each_episode_is_the_call_the_tools_result_and_the_answer(tool_run):
    for e in tool_run.episodes:   # verifiers' side
        assert e["turns"] == 2 and [role for role, _ in e["messages"]] == ["user", "assistant", "tool", "assistant"]
        (name, arguments), = e["calls"][1]   # the endpoint's tool_calls, as the chat program read them
        assert (name, arguments) == ("add", dict(zip("ab", TAUGHT)))
        # the tool turn is the server's answer to those arguments (the salt only the server adds)
        assert e["messages"][2][1] == added(*TAUGHT)
        assert e["reward"] == float(e["reply"] == added(*asked(e)))   # the taskset's reward, of the last reply
    assert sorted(e["reward"] for e in tool_run.episodes) == [0.0] * 4 + [1.0] * 4   # 4 + 5 is not 1005
    for r in tool_run.recorded:   # the run's rollouts.jsonl
        turns = r["episode"]["turns"]
        assert [t["role"] for t in turns] == ["assistant", "tool", "assistant"], turns
        assert turns[0]["content"] == call_text(*TAUGHT) and turns[1]["content"] == added(*TAUGHT)
        assert r["episode"]["tools_offered"] == "system_prompt" and r["scores"]["verifiers"]["status"] == "ok"


def test_the_trained_ids_are_what_the_policy_sampled_and_the_tool_turn_between(tool_run):
    tok = AutoTokenizer.from_pretrained(tool_run.folder.parents[1] / "model")
    told = {e["session"]: e for e in tool_run.episodes}
    assert len(told) == len(tool_run.episodes)
    for r in tool_run.rollouts:
        e = told[r["uid"]]
        ids = r["prompt_ids"] + r["completion_ids"]
        # ONE sequence: with a one-token-per-character tokenizer the whole conversation rendered again is the
        # same ids, so it says what they must be: the opening (tools offered), the call, the tool turn, the answer
        # (less the newline the template writes after the last turn's end, which was never sampled)
        turns, schemas, _ = offer_schemas(tok, [dict(zip(("role", "content"), m)) for m in e["messages"]],
                                          offered_tools())
        whole = tok(render(tok, turns, tools=schemas), add_special_tokens=False)["input_ids"]
        assert ids == whole[:-1] and tok.decode(whole[-1:]) == "\n"
        # trained exactly on the two replies verifiers was answered with (each to its stop token), not the tool turn
        spans = r["episode"]["spans"]
        assert [s[2] for s in spans] == ["assistant", "environment", "assistant"]
        replies = [tok.decode(r["completion_ids"][s:t]) for s, t, role, _ in spans if role == "assistant"]
        assert replies == [c + tok.eos_token for role, c in e["messages"] if role == "assistant"]
        for start, end, role, _ in spans:
            assert set(r["mask"][start:end]) == {1 if role == "assistant" else 0}
        assert sum(r["mask"]) == sum(end - start for start, end, role, _ in spans if role == "assistant")
        assert r["logprobs"] is not None   # the behaviour log-probs of what was sampled came with it
