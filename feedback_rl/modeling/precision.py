"""Mixed precision (``train.precision``): the optimizer's forward passes under autocast, everything else in fp32.

- ``fp32``: no autocast.
- ``bf16``: ``torch.autocast`` to bfloat16 around the optimizer's forward passes (``prepare`` and ``loss``).
  The weights stay in their dtype (fp32 master weights) and AdamW keeps its states like them;
  gradients arrive in fp32. ``sequence_logprobs`` upcasts the logits and runs log-softmax in fp32, so
  log-probs, advantages and losses are fp32. Runs on CPU and GPU.

On a CPU without native 16-bit matmuls (AVX512-BF16 or AMX for bf16, AMX-FP16 for fp16) autocast
emulates them and is slower than fp32 (3x on an AVX2-only EPYC): the run says so once.
- ``fp16``: autocast to float16 with a ``GradScaler`` (fp16 gradients underflow without one): the loss
  is scaled before backward, gradients unscaled before clipping, and a step whose gradients
  overflowed is skipped by the scaler (and the scale halved). CPU (torch 2.3+) and CUDA.

Generation is not autocast: the backend samples with the weights as they are.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from feedback_rl.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# torch.cpu's probes of the instructions that make 16-bit matmuls native on a CPU
CPU_NATIVE = {"bf16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"), "fp16": ("_is_amx_fp16_supported",)}


def native(name: str, device: torch.device) -> bool:
    """Whether ``name`` (bf16 or fp16) matmuls run natively on ``device``."""
    if device.type == "cuda":
        return name == "fp16" or torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in CPU_NATIVE[name])


class Precision:
    def __init__(self, name: str, device: torch.device, where: str = "train.precision"):
        self.name, self.device = name, device
        self.dtype = DTYPES.get(name)
        self.scaler = None
        if name == "fp16":
            try:
                self.scaler = torch.amp.GradScaler(device.type)
            except (RuntimeError, ValueError, AssertionError):
                raise UserError(f"{where}: fp16 needs a GradScaler, which torch has not for {device.type}; "
                                "use bf16 or fp32") from None

    @property
    def scales(self) -> bool:
        """fp16: an overflowed gradient is the scaler's to handle (it skips the step), not a health event."""
        return self.scaler is not None

    def warning(self) -> str | None:
        if self.dtype is not None and not native(self.name, self.device):
            return (f"train.precision {self.name}: this CPU has no native {self.name} matmuls "
                    f"({' or '.join(p[4:-10] for p in CPU_NATIVE[self.name])}); autocast emulates them, "
                    "slower than fp32 here")
        return None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, backward: Callable[[torch.Tensor], None]) -> None:
        backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def unscale(self, optimizer: Any) -> None:
        """Before clipping: the gradients in their true scale."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Any) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def adamw(params: list, device: torch.device, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW``, fused where the device has the fused kernel (CPU and CUDA in torch 2.4+):
    one kernel over every tensor instead of a loop of elementwise ops. Same update within float
    rounding, and the same state_dict, so checkpoints resume either way."""
    fused = device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)
