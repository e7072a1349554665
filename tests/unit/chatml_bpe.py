"""A real byte-level BPE tokenizer with a ChatML chat template, trained in a second on a few sentences (nothing
downloaded): the shape of SmolLM2's and Qwen's tokenizers, for tests of what tokenization does across turns."""
from __future__ import annotations

from functools import lru_cache

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ChatML with Qwen2.5's tools branch: the function schemas go into the system turn
CHATML_TOOLS = (
    "{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n"
    "{% endif %}# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% for m in messages %}{% if not (loop.first and m['role'] == 'system') %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% else %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% endif %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = [
    "What is 123 * 456? The answer is 56088.",
    "I will call the calculator tool with the expression.",
    "<tool_call>{\"name\": \"calculate\", \"arguments\": {\"expression\": \"123 * 456\"}}</tool_call>",
    "Guess a number between 1 and 100. Higher. Lower. Correct, you found it in 4 turns.",
    "system user assistant tool result error the of and a to in is you that it",
] * 20


@lru_cache(maxsize=None)
def _trained():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return tok.to_str()


def chatml_tokenizer(template: str = CHATML):
    """A fresh fast tokenizer (tests may change its template): EOS is ``<|im_end|>``, as in ChatML models."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_trained()), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=template)
