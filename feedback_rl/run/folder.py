"""The run folder: ``runs/<name>/`` with the lock, metrics, rollouts and models.

A run's status is read from its folder alone: ``status.json`` (written at every start and end) and
``.running``, a file the training process holds an exclusive ``flock`` on for as long as it lives
(the kernel releases it when the process dies, SIGKILL included), so "running" and "killed" differ.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from feedback_rl.errors import RunFailed
from feedback_rl.run.writes import line as write_failed, save_file, writing

PACKAGES = ("feedback_rl", "torch", "transformers", "accelerate", "pluggy", "openai", "pydantic", "peft")
LOCK = "recipe.lock.yaml"
HELD = ".running"
ENDED = ("finished", "interrupted", "stopped", "failed")


@dataclass
class Run:
    name: str
    dir: Path

    @classmethod
    def create(cls, output_dir: Path, name: str) -> "Run":
        """A new folder; an existing one is never reused (``name``, ``name-2``, ``name-3``...).
        ``mkdir`` without ``exist_ok`` is atomic, so two runs started at once get two folders."""
        output_dir.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            path = output_dir / (name if n == 1 else f"{name}-{n}")
            try:
                with writing(path, "the run folder"):
                    path.mkdir()
                return cls(path.name, path)
            except FileExistsError:
                n += 1

    @property
    def rollouts_path(self) -> Path:
        return self.dir / "rollouts.jsonl"

    def write_lock(self, recipe: Any, plugins: dict[str, str]) -> Path:
        """The lock: the resolved recipe (every plugin option with its default), the data files' hashes,
        versions and commit. Written again it keeps its first ``created`` time."""
        path = self.dir / LOCK
        old = read_lock(self.dir) or {}
        lock = {
            "recipe": recipe.model_dump(mode="json"),
            "resolved": resolved(recipe),
            "data": data_hashes(recipe),
            "recipe_file": str(recipe.path),
            "created": old.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seed": recipe.seed,
            "git_commit": git_commit(recipe.base_dir),
            "python": platform.python_version(),
            "packages": {p: package_version(p) for p in PACKAGES},
            "plugins": plugins,
            "sources": old.get("sources", {}),  # what describe_sources recorded survives a rewrite
        }
        save_file(path, "the run's lock", lambda tmp: tmp.write_text(yaml.safe_dump(lock, sort_keys=False)))
        return path

    def describe_sources(self, stage: str, described: dict[str, Any]) -> None:
        """Record what each source says about itself (e.g. a judge template's hash) in the lock."""
        lock = read_lock(self.dir) or {}
        lock.setdefault("sources", {})[stage] = described
        save_file(self.dir / LOCK, "the run's lock", lambda tmp: tmp.write_text(yaml.safe_dump(lock, sort_keys=False)))

    def append_rollouts(self, records: list[dict]) -> None:
        with writing(self.rollouts_path, "the step's rollouts"), open(self.rollouts_path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")

    def write_status(self, status: dict) -> None:
        """``status.json``, replaced atomically; on a full disk rewritten in place (its blocks are already
        allocated), so that a failed run still says so. A status that cannot be written at all is an
        error of its own, unless the run is already failing for another reason: that error is the one to
        read (and ``frl runs`` shows the run as killed)."""
        failing = sys.exc_info()[1]  # called from a ``finally`` while the run fails
        path, text = self.dir / "status.json", json.dumps(status, indent=1)
        what = f"the run's status, {status.get('status')!r}"
        try:
            save_file(path, what, lambda tmp: tmp.write_text(text))
        except (RunFailed, OSError) as e:  # RunFailed: no room; OSError: any other failure to write it
            try:
                with open(path, "r+") as f:
                    f.write(text)
                    f.truncate()
            except OSError:
                if failing is None:
                    raise (e if isinstance(e, RunFailed) else write_failed(path, what, e.strerror or str(e))) from None

    def hold(self) -> "Held":
        """Mark this folder as in use by this process until :meth:`Held.release` (or its death)."""
        with writing(self.dir / HELD, "the mark that the run is in use"):
            fd = os.open(self.dir / HELD, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusy(self.dir, holder(self.dir)) from None
        try:
            with writing(self.dir / HELD, "the mark that the run is in use"):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except RunFailed:
            os.close(fd)
            raise
        return Held(fd)


class RunBusy(Exception):
    def __init__(self, run_dir: Path, who: str):
        super().__init__(f"{run_dir} is running ({who})")


@dataclass
class Held:
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder(run_dir: Path) -> str:
    try:
        pid, host = (run_dir / HELD).read_text().split()
        return f"pid {pid} on {host}"
    except (OSError, ValueError):
        return "another process"


def is_held(run_dir: Path) -> bool:
    """Whether a live process trains in this folder. Only reads: a folder without the file is not held."""
    try:
        fd = os.open(run_dir / HELD, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def status(run_dir: Path) -> str:
    """running, finished, interrupted, stopped, failed, or killed (it started and nothing ended it)."""
    if is_held(run_dir):
        return "running"
    try:
        said = json.loads((run_dir / "status.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        said = None
    return said if said in ENDED else "killed"


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    try:
        lock = yaml.safe_load((run_dir / LOCK).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return lock if isinstance(lock, dict) else None


def runs_of(output_dir: Path, name: str) -> list[Path]:
    """The run folders of recipe ``name`` (``name``, ``name-N``), oldest first (by the lock's start time)."""
    if not output_dir.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"(-(\d+))?")
    found = []
    for d in output_dir.iterdir():
        m = pattern.fullmatch(d.name)
        if m and d.is_dir() and (d / LOCK).is_file():
            created = (read_lock(d) or {}).get("created") or ""
            found.append((str(created), int(m.group(2) or 1), d))
    return [d for *_, d in sorted(found)]


def resolved(recipe: Any) -> dict[str, Any]:
    """The recipe as it runs: each plugin's options with their defaults filled in, so that naming a
    default explicitly is no change."""
    out = recipe.model_dump(mode="json")
    opts = getattr(recipe, "_options", None) or {}

    def fill(node: dict, key: tuple, keep: tuple[str, ...]) -> dict:
        if key not in opts:
            return node
        return {k: v for k, v in node.items() if k in keep} | opts[key].model_dump(mode="json")

    for k, lg in enumerate(out["loggers"]):
        out["loggers"][k] = fill(lg, ("logger", k), ("type",))
    core = ("name", "type", "weight", "gate", "tasks")
    for i, st in enumerate(out["stages"]):
        st["optimizer"] = fill(st["optimizer"], ("stage", i, "optimizer"), ("type",))
        st["rollout"]["backend_options"] = fill(st["rollout"]["backend_options"], ("backend", i), ())
        st["rewards"]["sources"] = [fill(s, ("source", i, j), core) for j, s in enumerate(st["rewards"]["sources"])]
        if st["eval"]["sources"] is not None:
            st["eval"]["sources"] = [fill(s, ("eval_source", i, j), core) for j, s in enumerate(st["eval"]["sources"])]
    return out


def data_hashes(recipe: Any) -> dict[str, str]:
    """sha256 of every local data file (or folder) a stage reads, by its key path."""
    out = {}
    for i, stage in enumerate(recipe.stages):
        for split in ("train", "eval"):
            ref = getattr(stage.data, split)
            if not isinstance(ref, str):
                continue
            path = Path(ref).expanduser()
            path = path if path.is_absolute() else recipe.base_dir / path
            if path.exists():
                out[f"stages[{i}].data.{split}"] = _sha256(path)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Each run folder under ``root``: status, last stage and step, best eval reward."""
    from feedback_rl.run.checkpoint import latest
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        metrics = d / "metrics.jsonl"
        if not metrics.exists() and not (d / LOCK).exists():
            continue
        last, best = {}, None
        for line in metrics.read_text().splitlines() if metrics.exists() else []:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            last = row
            value = row.get("eval/reward")
            if isinstance(value, (int, float)) and (best is None or value > best[0]):
                best = (value, row.get("stage"))
        ckpt = latest(d)
        out.append({"name": d.name, "status": status(d),
                    "stage": last.get("stage", ""), "step": last.get("step", 0),
                    "best_eval": f"{best[0]:.3f} ({best[1]})" if best else "",
                    "checkpoint": ckpt.name if ckpt else ""})
    return out
