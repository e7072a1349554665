"""Checkpoints that continue a run exactly, written atomically.

A checkpoint is a folder ``runs/<run>/checkpoints/<tag>/`` holding the policy in HF safetensors
format (``policy/``, loadable by ``from_pretrained``), other trainable roles (``<role>.pt``), and
``trainer_state.pt``: optimizer and scheduler states, Python/NumPy/torch RNG states (and every CUDA
device's, where there is CUDA), the sampler
position, the stage and step, every plugin's ``state_dict()``, and the sizes of the run's JSONL logs
(resume cuts them back, so no step is logged twice).

It is written under a temporary name and renamed into place only when complete; ``latest`` is
replaced atomically after the rename. A crash mid-save leaves the previous checkpoint as latest.
``COMPLETE``, written last, records every file's size and sha256 (and those of the stage output it
names): :func:`damage` checks them before a resume trusts the checkpoint, so flipped or lost bytes are
found before they are trained on (a size check alone misses a flipped byte).

The end of every stage is a checkpoint too, whatever ``checkpoint.every`` says: it is tagged as the
start of the next stage (``01-grpo-step0000000``; after the last stage ``02-done``) and says
``start_stage``. It holds no optimizer state (the next stage builds its own, and reseeds every RNG from
the recipe's seed), and no second copy of the policy when the stage output is the policy: ``weights``
names ``stages/<name>`` instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedback_rl.run.writes import save_file, save_folder, writing

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
    if torch.cuda.is_available():  # sampling and dropout on a GPU draw from its own generator, not the CPU's
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Every generator as saved. The CUDA ones only onto as many devices as they were saved from: on
    another count the saved states would land on other devices, so the devices keep the stage's seeding
    (and such a resume is not bit-identical)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def log_sizes(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in run_dir.glob("*.jsonl")}


def save(run_dir: Path, name: str, policy: torch.nn.Module, tokenizer: Any, roles: dict[str, torch.nn.Module],
         state: dict[str, Any], keep: int, policy_state: dict[str, torch.Tensor] | None = None,
         weights: Path | None = None) -> Path:
    """``weights``: a complete folder in the run already holding the policy (a stage output), named
    instead of written again."""
    root = folder(run_dir)
    final = root / name
    what = f"checkpoint {name}"

    def write(tmp: Path) -> None:
        nonlocal state
        if weights is None:
            with writing(tmp / "policy", what):
                policy.save_pretrained(tmp / "policy", state_dict=policy_state)  # gathered weights when sharded
                tokenizer.save_pretrained(tmp / "policy")
        else:
            state = {**state, "weights": str(weights.relative_to(run_dir))}
        for role, module in roles.items():
            with writing(tmp / f"{role}.pt", what):
                torch.save(module.state_dict(), tmp / f"{role}.pt")
        with writing(tmp / "trainer_state.pt", what):
            torch.save({**state, "rng": rng_state(), "logs": log_sizes(run_dir)}, tmp / "trainer_state.pt")
        manifest = {"name": name, "files": _digests(tmp),
                    "weights": _digests(run_dir / state["weights"], run_dir) if "weights" in state else {}}
        with writing(tmp / COMPLETE, what):
            (tmp / COMPLETE).write_text(json.dumps(manifest, indent=1))
            _fsync_dir(tmp)

    # a checkpoint that cannot complete is never resumed from: its half is removed (the space it took is
    # what a full disk needs back); a kill leaves it, and the next save or prune removes it
    save_folder(final, what, write, kind="checkpoint")
    save_file(root / "latest", what, lambda tmp: tmp.write_text(name))
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


def damage(path: Path) -> str | None:
    """What is wrong with a complete checkpoint's files (None: each has the size and sha256 it was saved
    with). A checkpoint from before COMPLETE held these records cannot be checked, and passes."""
    try:
        manifest = json.loads((path / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    run_dir = path.parent.parent
    for base, files in ((path, manifest.get("files", {})), (run_dir, manifest.get("weights", {}))):
        for rel, (size, sha) in files.items():
            f = base / rel
            if not f.is_file():
                return f"{f} is missing"
            if f.stat().st_size != size:
                return f"{f} has {f.stat().st_size} bytes, {size} when saved"
            if _sha256(f) != sha:
                return f"{f} changed since it was saved (its sha256 differs, same size)"
    return None


def intact(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint whose files are as saved, and a line for each newer damaged one
    passed over (``latest`` first: it is the newest by definition, then by tag)."""
    first = latest(run_dir)
    order = ([first] if first else []) + [p for p in reversed(complete(folder(run_dir))) if p != first]
    damaged = []
    for cand in order:
        problem = damage(cand)
        if problem is None:
            return cand, damaged
        damaged.append(f"checkpoint {cand.name} is damaged: {problem}")
    return None, damaged


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


def _digests(path: Path, relative_to: Path | None = None) -> dict[str, list]:
    """``{file: [size, sha256]}`` of every file under ``path``, named relative to ``relative_to`` (or ``path``)."""
    base = relative_to or path
    return {str(p.relative_to(base)): [p.stat().st_size, _sha256(p)]
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != COMPLETE}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
