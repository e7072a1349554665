"""A calculator episode as the core will run it, with scripted sampled ids: tools offered in the prompt, the
tool's answer rendered alone and appended, the sampled ids trained as they were."""
from __future__ import annotations

from chatml_bpe import CHATML, CHATML_TOOLS, chatml_tokenizer

from feedback_rl import PluginContext
from feedback_rl.episodes.tokens import EpisodeTokens, encode
from feedback_rl.episodes.tools import offer

ROW = {"prompt": [{"role": "user", "content": "What is 123 * 456?"}], "answer": "56088"}
CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "123 * 456"}}</tool_call>'


def run(registry, tmp_path, template):
    tok = chatml_tokenizer(template)
    cls = registry.get("environments", "calculator")
    episode = cls(cls.Options(), PluginContext("calculator", tmp_path)).reset(ROW, seed=0, episode_id="e0")
    messages, schemas, how = offer(tok, episode.messages, episode.tools)
    tokens = EpisodeTokens(tok, messages, tools=schemas)
    prompt = tokens.prompt_ids()
    said = []
    for text in (CALL, "The result is 56088."):
        ids = encode(tok, text) + [tok.eos_token_id]
        said.append(ids)
        tokens.add_sampled(ids, [-1.0] * len(ids))
        reply = episode.step(tokens.messages[-1])
        tokens.set_reward(reply.reward)
        if reply.done or reply.truncated:
            break
        assert tokens.add_environment(reply.messages)
    return tok, tokens, prompt, said, how


def test_the_tools_are_in_the_prompt_and_the_tool_result_is_appended_untrained(registry, tmp_path):
    for template, how in ((CHATML, "system_prompt"), (CHATML_TOOLS, "template")):
        tok, tokens, prompt, said, offered = run(registry, tmp_path, template)
        assert offered == how
        assert '"name": "calculate"' in tok.decode(prompt)
        (seq,) = tokens.segments
        tool_turn = encode(tok, "\n<|im_start|>tool\n56088<|im_end|>\n<|im_start|>assistant\n")
        assert seq.ids == prompt + said[0] + tool_turn + said[1]
        assert [t for t, m in zip(seq.ids, seq.mask) if m] == said[0] + said[1]
        assert tokens.rewards == [None, 1.0]
