"""LoRA through peft: wrap a policy with an adapter, load an adapter folder, read merged weights.

A LoRA policy is a ``peft.PeftModel``: the base weights are frozen and only the adapter requires grad
(the engine's optimizer keeps only parameters that require grad). ``save_pretrained`` on it writes the
adapter alone (``adapter_config.json``, which names the base model's folder, and the adapter weights);
:func:`load_adapter` reads such a folder back, trainable, so checkpoints and stage outputs resume and
chain like full models.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from feedback_rl.errors import UserError

# the attention and MLP projections: GPT-2 (Conv1D: c_attn, c_proj, c_fc) and llama-style models
DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc", "q_proj", "k_proj", "v_proj", "o_proj",
                   "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel
    return isinstance(model, PeftModel)


def wrap(model: torch.nn.Module, spec: Any) -> torch.nn.Module:
    """``model`` with a fresh LoRA adapter from a recipe's ``model.lora`` (the base is frozen)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D
    targets = spec.target_modules
    if targets is None:
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in DEFAULT_TARGETS if t in present] or "all-linear"
    if isinstance(targets, list):
        chosen = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in targets]
        if not chosen:
            raise UserError(f"model.lora.target_modules: none of {targets} is a module of "
                            f"{type(model).__name__}")
        fan_in_fan_out = any(isinstance(m, Conv1D) for m in chosen)  # GPT-2 stores weights transposed
    else:
        fan_in_fan_out = any(isinstance(m, Conv1D) for m in model.modules())
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        fan_in_fan_out=fan_in_fan_out, bias="none", task_type="CAUSAL_LM")
    try:
        with _quiet():
            return get_peft_model(model, config)
    except ValueError as e:
        raise UserError(f"model.lora: {str(e).splitlines()[0]}") from None


def base_path(folder: str | Path) -> str:
    """The base model an adapter folder was trained on. A local base that is gone is looked for by its
    folder name beside the adapter's ancestors (a run folder moved with its ``base_model/``)."""
    import json
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{folder / ADAPTER_CONFIG}: no base_model_name_or_path")
    local = Path(base).expanduser()
    if not local.is_absolute() and (folder / local).exists():
        return str(folder / local)
    if local.is_absolute() and not local.exists():
        for parent in folder.resolve().parents:
            if (parent / local.name / "config.json").is_file():
                return str(parent / local.name)
        raise UserError(f"{folder / ADAPTER_CONFIG}: the base model {base} is gone")
    return base


def load_adapter(base: torch.nn.Module, folder: str | Path, trainable: bool = True) -> torch.nn.Module:
    """``base`` with the adapter saved in ``folder`` (trainable: continue training it)."""
    from peft import PeftModel
    with _quiet():
        return PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)


@contextlib.contextmanager
def _quiet():
    # peft calls transformers' deprecated `is_gradient_checkpointing`: noise our users cannot act on
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@torch.no_grad()
def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``module`` (a model or a trunk inside a LoRA model) with every adapter folded in,
    under the plain model's key names; the model itself is not changed."""
    from peft.tuners.lora import LoraLayer
    deltas = {}
    for name, m in module.named_modules():
        if isinstance(m, LoraLayer):
            for a in m.active_adapters:
                if a in m.lora_A:
                    key = f"{name}.base_layer.weight" if name else "base_layer.weight"
                    deltas[key] = deltas.get(key, 0) + m.get_delta_weight(a)
    out = {}
    for key, value in module.state_dict().items():
        if "lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        out[re.sub(r"(^|\.)base_layer\.", r"\1", key)] = value
    return out


def adapter_trained(model: torch.nn.Module) -> bool:
    """Whether the adapter changes the model: a fresh LoRA adapter's B matrices are zero."""
    return any(p.any() for n, p in model.named_parameters() if "lora_B" in n)


def plain_trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer trunk (no LM head) of a model, looking through a LoRA wrapper: on a PeftModel,
    ``base_model`` is peft's LoraModel, not the trunk."""
    if is_lora(model):
        return model.get_base_model().base_model
    return model.base_model


class AdapterOff(torch.nn.Module):
    """The reference of a LoRA policy: the same module run with its adapter switched off, without
    gradients. It holds the policy without registering it, so it adds no parameters, its
    ``state_dict`` is empty, and no second copy of the weights exists."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "_policy", policy)

    @property
    def config(self) -> Any:
        return self._policy.config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        policy = self._policy
        was_training = policy.training
        policy.eval()  # like a frozen copy: no dropout in the reference
        try:
            with torch.no_grad(), policy.disable_adapter():
                return policy(*args, **kwargs)
        finally:
            policy.train(was_training)


def restart(model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """Fold a trained adapter into the base weights (in place: no second copy) and put a fresh adapter
    of the same shape on top. A stage that starts this way has the previous stage's model as its
    base, so its adapter-off reference is that model, as a full fine-tune's frozen copy would be.

    The caller saves the folded base (rank 0, into the run folder); the new adapter's config names it, so
    this stage's checkpoints and outputs load back onto the right weights (:func:`rewrap`, once it is written).
    """
    import copy as _copy
    config = _copy.deepcopy(model.peft_config[model.active_adapter])
    with _quiet():
        base = model.merge_and_unload()
    return base, config


def rewrap(base: torch.nn.Module, config: Any, base_folder: Path) -> torch.nn.Module:
    """``base`` (saved in ``base_folder``) with a fresh adapter configured like ``config``."""
    from peft import get_peft_model
    base.name_or_path = str(base_folder)  # what peft writes into adapter_config.json
    base.config._name_or_path = str(base_folder)
    config.base_model_name_or_path = str(base_folder)
    with _quiet():
        return get_peft_model(base, config)
