"""Tools: schemas from Python functions, offered through the template or a Hermes system prompt, calls parsed
with an outcome each, run in a subprocess with a time limit, a memory limit and no network."""
from __future__ import annotations

import socket

import episode_tools
import pytest
from chatml_bpe import CHATML, CHATML_TOOLS, chatml_tokenizer

from feedback_rl.episodes.sandbox import answer_calls, network_isolation, run_tool, tool_messages
from feedback_rl.episodes.tool_calls import parse_tool_calls
from feedback_rl.episodes.tools import offer, tool
from feedback_rl.modeling.tool_offer import HERMES_TOOLS, renders_tools
from feedback_rl.errors import UserError

ADD = tool(episode_tools.add)
ASK = [{"role": "user", "content": "What is 2 + 3?"}]


def test_a_tool_schema_comes_from_the_function_and_its_docstring():
    assert ADD.name == "add" and ADD.schema["function"]["parameters"]["properties"]["a"] == \
        {"type": "integer", "description": "the first"}
    with pytest.raises(UserError, match="tool episode_tools.undocumented: .*"):
        tool(episode_tools.undocumented)

    def inner(x: int) -> int:
        """Inner.

        Args:
            x: x
        """
        return x
    with pytest.raises(UserError, match="must be a module-level function"):
        tool(inner)


def test_tools_go_through_a_template_with_a_tools_branch():
    tok = chatml_tokenizer(CHATML_TOOLS)
    assert renders_tools(tok)
    messages, schemas, how = offer(tok, ASK, [ADD])
    assert how == "template" and messages == ASK and schemas == [ADD.schema]
    assert '"name": "add"' in tok.apply_chat_template(messages, tools=schemas, tokenize=False)


def test_a_template_without_a_tools_branch_gets_them_in_the_system_turn_never_dropped():
    tok = chatml_tokenizer(CHATML)
    assert not renders_tools(tok)  # it ignores tools= silently: the text is the same with and without
    messages, schemas, how = offer(tok, ASK, [ADD])
    assert how == "system_prompt" and schemas is None and messages[1:] == ASK
    assert messages[0]["role"] == "system" and '<tools>\n{"type": "function", "function": {"name": "add"' in \
        messages[0]["content"] and "<tool_call>" in messages[0]["content"]
    # an existing system turn keeps its text, the tools follow it
    messages, _, _ = offer(tok, [{"role": "system", "content": "Be brief."}] + ASK, [ADD])
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools") and len(messages) == 2
    assert HERMES_TOOLS.startswith("# Tools")


def test_each_call_in_a_turn_is_parsed_with_its_outcome():
    text = ('Let me add. <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call> and '
            '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 1}"}</tool_call>'
            '<tool_call>{"name": "mul", "arguments": {}}</tool_call><tool_call>{name: add}</tool_call>'
            '<tool_call>[1]</tool_call><tool_call>{"name": "add", "arguments": {"a": 1')
    calls = parse_tool_calls(text, {"add"})
    assert [c.outcome for c in calls] == ["ok", "ok", "unknown_tool", "invalid_json", "invalid_json", "unclosed"]
    assert calls[0].arguments == {"a": 2, "b": 3} and calls[1].arguments == {"a": 1, "b": 1}
    assert "no tool named 'mul' (tools: add)" in calls[2].problem
    assert parse_tool_calls("The answer is 5.", {"add"}) == []


def test_a_call_runs_in_a_subprocess_and_errors_go_back_to_the_model():
    assert run_tool(ADD, {"a": 2, "b": 3}).content == "5"
    wrong = run_tool(ADD, {"a": 2})
    assert not wrong.ok and wrong.outcome == "error" and wrong.content.startswith("error: TypeError:") \
        and "'b'" in wrong.content
    calls = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 40, "b": 2}}</tool_call>'
                             '<tool_call>{"name": "sub", "arguments": {}}</tool_call>', {"add"})
    assert tool_messages(answer_calls(calls, [ADD])) == [
        {"role": "tool", "name": "add", "content": "42"},
        {"role": "tool", "name": "sub", "content": "error: there is no tool named 'sub' (tools: add)"}]


def test_a_call_past_its_time_limit_is_stopped():
    slow = run_tool(tool(episode_tools.nap), {"seconds": 30}, seconds=1.0)
    assert slow.outcome == "timeout" and "time limit of 1 s" in slow.content


def test_a_call_past_its_memory_limit_fails_inside_the_tool():
    assert run_tool(tool(episode_tools.hog), {"megabytes": 16}, memory_mb=512).content == str(16 * 1024 * 1024)
    big = run_tool(tool(episode_tools.hog), {"megabytes": 2048}, memory_mb=512)
    assert not big.ok and "MemoryError" in big.content


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server.getsockname()[1]
    server.close()


def test_a_tool_has_no_network(listener):
    guarded = run_tool(tool(episode_tools.dial), {"port": listener, "raw": False})
    assert not guarded.ok and "network access is disabled in tool calls" in guarded.content
    # past the guard (as C code would go), only a network namespace stops it
    raw = run_tool(tool(episode_tools.dial), {"port": listener, "raw": True})
    if network_isolation() == "namespace":
        assert not raw.ok and raw.outcome == "error"
    else:
        assert raw.content == "connected"


def test_a_call_sees_no_secrets_writes_into_a_throwaway_folder_and_answers_briefly(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.chdir(tmp_path)
    seen = run_tool(tool(episode_tools.peek), {"name": "OPENAI_API_KEY"}).content
    assert seen.startswith("None in ") and str(tmp_path) not in seen and not (tmp_path / "scratch.txt").exists()
    long = run_tool(tool(episode_tools.chatter), {"n": 5000}, max_chars=100).content
    assert long == "y" * 100 + "... (4900 more characters cut)"
