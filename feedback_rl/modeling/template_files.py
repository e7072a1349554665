"""Whether a model's tokenizer has a chat template, found by looking at its files: no tokenizer loads, no network.

``frl validate`` uses it to refuse conversational rows that nothing could render, before any model loads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def has_chat_template(model: Any, base_dir: Path) -> bool | None:
    """Whether the tokenizer of ``model`` (the recipe's ``ModelSpec``) will have a chat template, from its files
    alone (the recipe's ``model.chat_template`` wins, as in ``setup_tokenizer``); None where only loading it
    would tell (a GGUF file, a hub id not in the cache)."""
    if model.chat_template is not None or model.path.startswith("builtin:"):
        return True  # the built-in models carry their own
    return _template_at(model.path, base_dir, model.gguf_file)


def _template_at(path: str, base_dir: Path, gguf_file: str | None = None) -> bool | None:
    from feedback_rl.modeling.lora import base_path
    local = Path(path).expanduser()
    if not local.is_absolute() and (base_dir / local).exists():
        local = base_dir / local
    if not local.exists():
        return _template_in_cache(path)
    if not local.is_dir() or gguf_file is not None:
        return None  # a GGUF file's template sits in its metadata
    if (local / "adapter_config.json").is_file() and not (local / "tokenizer_config.json").is_file():
        return _template_at(base_path(local), local)  # an adapter without a tokenizer uses its base's
    if (local / "chat_template.jinja").is_file() or (local / "chat_template.json").is_file():
        return True
    return _template_in_config(local / "tokenizer_config.json")


def _template_in_config(config: Path) -> bool | None:
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return None  # a config it cannot read: loading the tokenizer will say what is wrong


def _template_in_cache(repo: str) -> bool | None:
    """A hub id's template, from the cache: False only when its tokenizer_config.json holds none and the cache
    knows the repository has no chat_template.jinja (a file merely not downloaded yet may still hold one)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        config, jinja = (try_to_load_from_cache(repo, name) for name in ("tokenizer_config.json",
                                                                          "chat_template.jinja"))
    except Exception:  # noqa: BLE001 - not a repo id, or no cache: loading will tell
        return None
    if isinstance(jinja, str):
        return True
    in_config = _template_in_config(Path(config)) if isinstance(config, str) else None
    if in_config is False and jinja is None:
        return None  # chat_template.jinja was never asked for: unknown
    return in_config
