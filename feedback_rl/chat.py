"""Rendering prompts and examples into token ids, once, for generation and for offline rows.

(Plain text only for now: conversations and chat templates come with the real-data work.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Encoded:
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_mask: list[int] | None = None


def render_prompt(tokenizer: Any, prompt: Any, system_prompt: str | None = None) -> str:
    return prompt


def encode_prompt(tokenizer: Any, prompt: Any, system_prompt: str | None = None) -> list[int]:
    return tokenizer(render_prompt(tokenizer, prompt, system_prompt), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer: Any, prompt: Any, completion: Any, system_prompt: str | None = None,
                   add_eos: bool = True) -> Encoded:
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Encoded(encode_prompt(tokenizer, prompt, system_prompt), ids)
