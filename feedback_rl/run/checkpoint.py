"""Checkpoints that continue a run exactly, written atomically.

A checkpoint is a folder ``runs/<run>/checkpoints/<tag>/`` holding the policy in HF safetensors
format (``policy/``, loadable by ``from_pretrained``), other trainable roles (``<role>.pt``), and
``trainer_state.pt``: optimizer and scheduler states, Python/NumPy/torch RNG states (and each CUDA
device's where there is one), the sampler position, the stage and step, every plugin's ``state_dict()``,
and the sizes of the run's JSONL logs (resume cuts them back, so no step is logged twice).

It is written under a temporary name and renamed into place only when complete; ``latest`` is
replaced atomically after the rename. A crash mid-save leaves the previous checkpoint as latest.

The end of every stage is a checkpoint too, whatever ``checkpoint.every`` says: it is tagged as the
start of the next stage (``01-grpo-step0000000``; after the last stage ``02-done``) and says
``start_stage``. It holds no optimizer state (the next stage builds its own, and reseeds every RNG from
the recipe's seed), and no second copy of the policy when the stage output is the policy: ``weights``
names ``stages/<name>`` instead.
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


def start_tag(stage_index: int, stages: list[str]) -> str:
    """The tag of the checkpoint taken before stage ``stage_index`` (sorts after the previous stage's)."""
    return tag(stage_index, stages[stage_index], 0) if stage_index < len(stages) else f"{stage_index:02d}-done"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # sampling and dropout on a GPU draw from each device's own generator
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    # a checkpoint from a CPU run has none; one from more devices than here restores those that exist
    if torch.cuda.is_available():
        for device, cuda in enumerate(state.get("cuda", [])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda, device)


def log_sizes(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in run_dir.glob("*.jsonl")}


def save(run_dir: Path, name: str, policy: torch.nn.Module, tokenizer: Any, roles: dict[str, torch.nn.Module],
         state: dict[str, Any], keep: int, policy_state: dict[str, torch.Tensor] | None = None,
         weights: Path | None = None) -> Path:
    """``weights``: a complete folder in the run already holding the policy (a stage output), named
    instead of written again."""
    root = folder(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}"
    final = root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if weights is None:
        policy.save_pretrained(tmp / "policy", state_dict=policy_state)  # gathered weights when sharded
        tokenizer.save_pretrained(tmp / "policy")
    else:
        state = {**state, "weights": str(weights.relative_to(run_dir))}
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


def policy_folder(path: Path, state: dict[str, Any]) -> Path:
    """Where the checkpoint's policy weights are: its own ``policy/``, or the stage output it names."""
    return path.parent.parent / state["weights"] if "weights" in state else path / "policy"


def stages_begun(path: Path | None) -> int:
    """How many stages a checkpoint holds results of, read from its tag: a stage's own checkpoints
    count it, the one taken before a stage does not."""
    if path is None:
        return 0
    index, _, rest = path.name.partition("-")
    step = rest.rsplit("-step", 1)[1] if "-step" in rest else "0"
    return int(index) + (int(step) > 0)


def resume_point(state: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
    """The stage to start at, and the state to continue it from (None: the stage starts afresh)."""
    if state is None:
        return 0, None
    if state.get("start_stage"):
        return state["stage_index"], None
    return state["stage_index"], state


def save_stage_end(run_dir: Path, stage_index: int, stages: list[str], policy: torch.nn.Module, tokenizer: Any,
                   state: dict[str, Any], keep: int, output: Path | None,
                   policy_state: dict[str, torch.Tensor] | None = None) -> Path:
    """The checkpoint at the end of stage ``stage_index``: a resumed run starts the next stage.
    ``output``: the stage output folder when it is the policy (then it is not copied)."""
    nxt = stage_index + 1
    return save(run_dir, start_tag(nxt, stages), policy, tokenizer, {},
                {**state, "stage_index": nxt, "step": 0, "start_stage": True}, keep, policy_state, output)


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
