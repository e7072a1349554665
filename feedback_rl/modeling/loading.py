"""Loading models: the built-in tiny GPT-2, a local HF folder, a hub id, or a GGUF file."""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch

from feedback_rl.modeling import chat

from feedback_rl.modeling import hub

from feedback_rl.modeling import lora
from feedback_rl.errors import UserError
from feedback_rl.modeling.spec import ModelSpec
from feedback_rl.modeling.model_files import BUILTIN, packaged_gguf
from feedback_rl.modeling.tiny import CHAT_TEMPLATE
from feedback_rl.modeling.vocab import tokenizer_difference

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:  # GGUF loading draws its own bar (plain tqdm, which disable_progress_bar does not reach)
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        return
    if not getattr(gguf_utils.tqdm, "frl_quiet", False):
        quiet = functools.partial(gguf_utils.tqdm, disable=True)
        quiet.frl_quiet = True
        gguf_utils.tqdm = quiet


def resolve_path(spec: ModelSpec, base_dir: Path, build_dir: Path, seed: int) -> tuple[str, dict[str, Any]]:
    """Where to load the model from, and extra ``from_pretrained`` keyword arguments."""
    path = spec.path
    if path.startswith("builtin:"):
        kind = path.split(":", 1)[1]
        if kind not in BUILTIN:
            raise UserError(f"model.path: unknown built-in model '{kind}' (available: {', '.join(BUILTIN)})")
        if kind != "tiny-gpt2":
            gguf = packaged_gguf(kind, "model.path")
            return str(gguf.parent), {"gguf_file": gguf.name}
        from feedback_rl.modeling.tiny import build_tiny_gpt2
        return str(build_tiny_gpt2(build_dir, seed=seed, **spec.tiny.model_dump())), {}
    local = Path(path).expanduser()
    if not local.is_absolute() and (base_dir / local).exists():
        local = base_dir / local
    if local.suffix == ".gguf":   # transformers dequantises a GGUF file found in its folder
        return str(local.parent), {"gguf_file": local.name}
    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    if not local.exists():
        hub.require_model(path, filename=spec.gguf_file)   # a hub id: offline, fail now rather than after retries
        return path, kwargs
    return str(local), kwargs


def load_policy(spec: ModelSpec, base_dir: Path, build_dir: Path, seed: int) -> tuple[torch.nn.Module, Any]:
    """The policy and its tokenizer. With ``spec.lora`` the policy gets a fresh LoRA adapter; a folder
    holding an adapter (a LoRA checkpoint or stage output) loads its base, then the adapter, trainable."""
    from transformers import AutoModelForCausalLM
    located = _locate(spec, base_dir, build_dir, seed)
    tokenizer = load_tokenizer(spec, base_dir, build_dir, seed, located)
    where, kwargs, adapter = located
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[spec.dtype], **kwargs)
    except OSError as e:
        raise _cannot_load(spec, where, adapter, e) from None
    if "gguf_file" in kwargs:
        _forget_gguf(model)
    if adapter is not None:
        model = lora.load_adapter(model, adapter, trainable=True)
    elif spec.lora is not None:
        model = lora.wrap(model, spec.lora)
    return model, tokenizer


def _forget_gguf(model: torch.nn.Module) -> None:
    """A GGUF file's weights are dequantised to ``model.dtype`` as they load, yet the model still says it is
    quantised and refuses ``save_pretrained``: it is a plain model now, so it says so (stage outputs,
    checkpoints and ``final/`` are ordinary HF folders)."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None


def load_tokenizer(spec: ModelSpec, base_dir: Path, build_dir: Path, seed: int,
                   located: tuple[str, dict[str, Any], str | None] | None = None) -> Any:
    """The policy's tokenizer alone, set up as :func:`load_policy` sets it up (rows are checked with it
    before any weights load)."""
    from transformers import AutoTokenizer
    where, kwargs, adapter = located or _locate(spec, base_dir, build_dir, seed)
    try:
        has_tokenizer = adapter and (Path(adapter) / "tokenizer_config.json").exists()
        tokenizer = AutoTokenizer.from_pretrained(adapter if has_tokenizer else where, **kwargs)
    except OSError as e:
        raise _cannot_load(spec, where, adapter, e) from None
    return setup_tokenizer(tokenizer, spec, base_dir)


def _locate(spec: ModelSpec, base_dir: Path, build_dir: Path, seed: int) -> tuple[str, dict[str, Any], str | None]:
    """(where the weights are, ``from_pretrained`` keyword arguments, the adapter folder or None)."""
    quiet_transformers()  # before a built-in model is built and saved
    where, kwargs = resolve_path(spec, base_dir, build_dir, seed)
    adapter = None
    if not kwargs and lora.is_adapter_folder(where):
        adapter, where = where, lora.base_path(where)
    elif Path(where).exists():
        where = str(Path(where).resolve())  # an adapter saved later names its base by this path
    return where, kwargs, adapter


def _cannot_load(spec: ModelSpec, where: str, adapter: str | None, e: OSError) -> UserError:
    what = f"the base '{where}' of the adapter '{spec.path}'" if adapter else f"'{spec.path}'"
    return UserError(f"model.path: cannot load {what}: {str(e).splitlines()[0]}")


def setup_tokenizer(tokenizer: Any, spec: ModelSpec, base_dir: Path) -> Any:
    """The one place a loaded tokenizer is set up: a pad token, and the chat template (the recipe's
    ``model.chat_template`` over the tokenizer's own). The template lives on the tokenizer, so every
    ``save_pretrained`` (stage outputs, checkpoints, ``final/``, ``frl export``) writes it."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.chat_template is not None:
        tokenizer.chat_template = chat.read_template(spec.chat_template, base_dir)
    elif spec.path == "builtin:tiny-gpt2" and not chat.has_template(tokenizer):
        tokenizer.chat_template = CHAT_TEMPLATE  # a tiny model built before it had a template
    return tokenizer


def context_length(config: Any) -> int | None:
    """How many positions the model reads (GPT-2 names it ``n_positions``, most others
    ``max_position_embeddings``; multimodal configs keep it in their ``text_config``)."""
    config = getattr(config, "text_config", None) or config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen, eval-mode copy (the reference policy of a stage)."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def load_model(path: str, dtype: str = "float32", cache_dir: Path | None = None,
               tokenizer: Any = None) -> tuple[torch.nn.Module, Any]:
    """A causal LM and its tokenizer from ``builtin:tiny-gpt2``, an HF folder, a hub id or a ``.gguf`` file.

    ``tokenizer``: the tokenizer whose ids the model will read (the policy's, for a model that scores
    its rollouts); a model whose own tokenizer reads any id otherwise is refused in one line."""
    if not path.startswith("builtin:") and _is_local(path) and not Path(path).expanduser().exists():
        raise UserError(f"model not found: {path}")
    cache = cache_dir or Path.home() / ".cache" / "feedback_rl" / "tiny-gpt2-seed0"
    model, own = load_policy(ModelSpec(path=path, dtype=dtype), Path.cwd(), cache, seed=0)
    if tokenizer is not None and (difference := tokenizer_difference(tokenizer, own, ("the policy's", "its own"))):
        raise UserError(f"model {path}: its tokenizer is not the policy's, so it would read the policy's token "
                        f"ids as other tokens: {difference}")
    tokenizer = own
    model.eval()
    return model, tokenizer


def _is_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.endswith(".gguf") or Path(path).exists()
