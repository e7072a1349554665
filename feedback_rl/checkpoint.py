"""Checkpoints that continue a run exactly, written atomically.

A checkpoint is a folder ``runs/<run>/checkpoints/<tag>/`` holding the policy in HF safetensors
format (``policy/``, loadable by ``from_pretrained``), other trainable roles (``<role>.pt``), and
``trainer_state.pt``: optimizer and scheduler states, Python/NumPy/torch RNG states, the sampler
position, the stage and step, every plugin's ``state_dict()``, and the sizes of the run's JSONL logs
(resume cuts them back, so no step is logged twice).

It is written under a temporary name and renamed into place only when complete; ``latest`` is
replaced atomically after the rename. A crash mid-save leaves the previous checkpoint as latest.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

COMPLETE = "COMPLETE"


def folder(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def tag(stage_index: int, stage: str, step: int) -> str:
    return f"{stage_index:02d}-{stage}-step{step:07d}"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def log_sizes(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in run_dir.glob("*.jsonl")}


def save(run_dir: Path, name: str, policy: torch.nn.Module, tokenizer: Any, roles: dict[str, torch.nn.Module],
         state: dict[str, Any], keep: int, policy_state: dict[str, torch.Tensor] | None = None) -> Path:
    root = folder(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}"
    final = root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save_pretrained(tmp / "policy", state_dict=policy_state)  # gathered weights when sharded
    tokenizer.save_pretrained(tmp / "policy")
    for role, module in roles.items():
        torch.save(module.state_dict(), tmp / f"{role}.pt")
    torch.save({**state, "rng": rng_state(), "logs": log_sizes(run_dir)}, tmp / "trainer_state.pt")
    (tmp / COMPLETE).write_text(name)
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    pointer = root / "latest.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "latest")
    _prune(root, keep)
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: the ``latest`` pointer, else the newest complete folder."""
    root = folder(run_dir)
    pointer = root / "latest"
    if pointer.exists():
        cand = root / pointer.read_text().strip()
        if (cand / COMPLETE).exists():
            return cand
    done = complete(root)
    return done[-1] if done else None


def complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / COMPLETE).exists())


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "trainer_state.pt", weights_only=False)


def truncate_logs(run_dir: Path, sizes: dict[str, int]) -> None:
    """Cut each JSONL log back to its size at the checkpoint (lines written after it are replayed);
    a log the checkpoint did not know was started after it, and is emptied."""
    for path in run_dir.glob("*.jsonl"):
        size = sizes.get(path.name, 0)
        if path.stat().st_size > size:
            with open(path, "r+b") as f:
                f.truncate(size)


def _prune(root: Path, keep: int) -> None:
    for old in complete(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
