"""A dataset row's ``tools`` column (TRL's: the function schemas of a tool-use conversation) is offered as an
episode offers its tools: through the template's tools branch, else the Hermes description in the system turn.
Before, the column was dropped without a word, so SFT demonstrations of tool calls trained without the tool
description the episodes that follow them show."""
from __future__ import annotations

import json

import episode_tools
import pytest
from chatml_bpe import CHATML, CHATML_TOOLS, chatml_tokenizer

from feedback_rl.episodes.tokens import EpisodeTokens
from feedback_rl.episodes.tools import offer, tool
from feedback_rl.errors import UserError
from feedback_rl.modeling.chat import check_rows, encode_example, encode_prompt
from feedback_rl.modeling.tool_offer import row_tools

ADD = tool(episode_tools.add)
ASK = [{"role": "user", "content": "What is 2 + 3?"}]
CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
DEMO = ASK + [{"role": "assistant", "content": CALL}, {"role": "tool", "name": "add", "content": "5"},
              {"role": "assistant", "content": "5"}]


def opening(tok) -> list[int]:
    """The ids an episode with the ADD tool opens with (the core's episode path)."""
    messages, schemas, _ = offer(tok, ASK, [ADD])
    return EpisodeTokens(tok, messages, tools=schemas).prompt_ids()


@pytest.mark.parametrize("template", [CHATML, CHATML_TOOLS], ids=["hermes", "tools_branch"])
def test_a_demonstration_with_tools_trains_after_the_prompt_an_episode_opens_with(template):
    tok = chatml_tokenizer(template)
    enc = encode_example(tok, None, DEMO, tools=[ADD.schema])
    assert enc.prompt_ids == opening(tok)
    assert '"name": "add"' in tok.decode(enc.prompt_ids)       # described, not dropped
    bare = encode_example(tok, None, DEMO)
    assert enc.completion_ids == bare.completion_ids and enc.completion_mask == bare.completion_mask
    # a GRPO prompt row with the same column is prompted the same way
    assert encode_prompt(tok, ASK, tools=[ADD.schema]) == opening(tok)
    # a JSON string (as hub datasets store the column) and the bare {name, ...} form are read the same
    assert encode_example(tok, None, DEMO, tools=json.dumps([ADD.schema])).prompt_ids == enc.prompt_ids
    assert encode_example(tok, None, DEMO, tools=[ADD.schema["function"]]).prompt_ids == enc.prompt_ids


def test_a_bad_tools_column_is_one_line_naming_the_line():
    tok = chatml_tokenizer(CHATML)

    class Rows(list):
        origin, lines = "demos.jsonl", [1, 2]
    good = {"messages": DEMO, "tools": [ADD.schema]}
    for bad, why in (("{not json", "field 'tools' is a string but not JSON"),
                     ({"name": "add"}, "field 'tools' must be a list of function schemas, got dict"),
                     ([{"type": "function"}], "field 'tools' item 0: expected a function schema")):
        with pytest.raises(UserError, match=f"^demos.jsonl:2: {why}"):
            check_rows(Rows([good, {"messages": DEMO, "tools": bad}]), tok, 4096)
    with pytest.raises(UserError, match="the row's tools applies to conversations, but the prompt is a plain str"):
        encode_prompt(tok, "What is 2 + 3?", tools=[ADD.schema])
    assert row_tools(None) is None and row_tools("") == []
