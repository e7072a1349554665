"""Episodes that call a tool, played with verifiers' TRAINING client (the bridge's default): token ids to the
endpoint's /inference/v1/generate, the tool call parsed out of the sampled ids by verifiers' own renderer.

What verifiers needs for that (renderers 0.1, `renderers/client.py: generate`, `renderers/default.py`): a renderer
with a tool parser. A model folder's name is in no renderer map, so without `taskset_agent(renderer=...)` verifiers
takes `DefaultRenderer` with none, and `generate` refuses every request that offers tools ("DefaultRenderer does
not support tools"): every episode of a taskset with tools was an error (measured: the same run without
`renderer` fails with that line). The `qwen3` tool parser reads Hermes `<tool_call>` JSON between the tokens
`<tool_call>` and `</tool_call>`, so the tiny model here has those two tokens added and a chat template that
renders the tools' names and an assistant's `tool_calls` as the Hermes block; with `{"name": "default",
"tool_parser": "qwen3"}` verifiers parses the call, the chat program runs it on the MCP server, and the next call
is the whole conversation rendered again (`DefaultRenderer` cannot extend a turn), which the endpoint appends
when it starts with the ids so far."""
from __future__ import annotations

from pathlib import Path

import pytest
from bridge_run import finished_two_steps, train
from teach_call import TAUGHT, answer_text, asked, call_text, teach
from tool_taskset import added, question
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl.modeling.tiny import build_tiny_gpt2

# the tiny template (feedback_rl/modeling/tiny.py) with the tools' names in a system turn and an assistant's
# tool_calls written as Hermes blocks, the arguments as JSON (verifiers hands the renderer the call it parsed)
TEMPLATE = (
    "{% if tools %}{{ '<|system|>\\ntools: ' + (tools | map(attribute='function.name') | join(', ')) + '\\n' }}"
    "{% endif %}"
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + (m['content'] or '') }}"
    "{% if m['role'] == 'assistant' %}{% for c in m['tool_calls'] or [] %}"
    "{{ '<tool_call>{\"name\": \"' + c['function']['name'] + '\", \"arguments\": ' + (c['function']['arguments'] "
    "| tojson) + '}</tool_call>' }}{% endfor %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
RENDERER = {"name": "default", "tool_parser": "qwen3"}
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {}}}]


def taught(folder: Path) -> Path:
    """The tiny model with `<tool_call>` and `</tool_call>` as tokens of their own and the template above, taught
    the first task's two replies on the prompts verifiers' renderer makes of them (the template's, through
    `apply_chat_template`, as `DefaultRenderer` renders)."""
    folder = build_tiny_gpt2(folder, n_layer=2, n_embd=64, n_positions=256)
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    model.resize_token_embeddings(len(tok))
    tok.chat_template = TEMPLATE
    reply = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731
    prompt = lambda turns: tok.apply_chat_template(turns, tools=TOOLS, add_generation_prompt=True,  # noqa: E731
                                                   tokenize=True, return_dict=False)
    turns = [{"role": "user", "content": question(*TAUGHT)}]
    called = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "add", "arguments": dict(zip("ab", TAUGHT))}}]}
    first, second = prompt(turns), prompt(turns + [called, {"role": "tool", "content": added(*TAUGHT)}])
    assert tok.convert_ids_to_tokens(reply(call_text(*TAUGHT)))[0] == "<tool_call>"
    return teach(model, tok, [(list(first), reply(call_text(*TAUGHT))), (list(second), reply(answer_text()))],
                 folder)


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vf-tool-renderer")
    return train(tmp, "tool_taskset", max_turns=4, model=taught(tmp / "model"), client="train", renderer=RENDERER,
                 max_tokens=60, temperature=0.5)


def test_grpo_trains_two_steps_on_tool_episodes_through_the_generate_route(tool_run):
    steps = finished_two_steps(tool_run)
    assert all(m["env/agent_calls_mean"] == 2.0 for m in steps)
    assert all(m["env/agent_splits"] == 0.0 and m["env/bridge_fallbacks"] == 0.0 for m in steps), steps


def test_verifiers_parsed_the_call_ran_the_tool_and_sent_its_result(tool_run):
    for e in tool_run.episodes:
        assert e["turns"] == 2 and [role for role, _ in e["messages"]] == ["user", "assistant", "tool", "assistant"]
        assert e["calls"][1] == [["add", dict(zip("ab", TAUGHT))]] and e["messages"][1][1] in (None, "")
        assert e["messages"][2][1] == added(*TAUGHT)   # the server's answer (its salt)
        assert e["reward"] == float(e["reply"] == added(*asked(e)))
    for r in tool_run.recorded:   # rollouts.jsonl: the tool turn is the ids verifiers' renderer wrote between
        turns = r["episode"]["turns"]
        assert [t["role"] for t in turns] == ["assistant", "environment", "assistant"], turns
        assert f"<|tool|>\n{added(*TAUGHT)}\n<|assistant|>\n" in turns[1]["content"]


def test_the_trained_ids_are_what_verifiers_sent_and_the_policy_sampled(tool_run):
    told = {e["session"]: e for e in tool_run.episodes}
    assert len(told) == len(tool_run.episodes)
    for r in tool_run.rollouts:
        e = told[r["uid"]]
        # ONE sequence, as verifiers holds the branch: the prompt, the call, the tool turn, the answer
        assert r["prompt_ids"] + r["completion_ids"] == e["ids"]
        assert [False] * len(r["prompt_ids"]) + [m == 1 for m in r["mask"]] == e["sampled"]
        spans = r["episode"]["spans"]
        assert [s[2] for s in spans] == ["assistant", "environment", "assistant"]
