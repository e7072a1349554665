"""Model roles: the engine builds each role an optimizer asks for, once per stage."""
from __future__ import annotations

from typing import Any

import torch

from .base import Models
from .models import frozen_copy


def build_models(roles: set[str], policy: torch.nn.Module, tokenizer: Any) -> Models:
    """The policy plus each requested role. The reference is the stage's starting policy, frozen;
    none is built when not asked for (e.g. GRPO with beta 0)."""
    models = Models(policy=policy, tokenizer=tokenizer)
    if "reference" in roles:
        models.reference = frozen_copy(policy)
    return models
