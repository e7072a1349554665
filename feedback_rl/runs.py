"""The run folder: ``runs/<name>/`` with the lock, metrics, rollouts and models."""
from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

PACKAGES = ("feedback_rl", "torch", "transformers", "accelerate", "pluggy", "openai", "pydantic", "peft")


@dataclass
class Run:
    name: str
    dir: Path

    @classmethod
    def create(cls, output_dir: Path, name: str) -> "Run":
        """A new folder; an existing run's folder is never overwritten (``name-2``, ``name-3``...)."""
        output_dir.mkdir(parents=True, exist_ok=True)
        path, n = output_dir / name, 1
        while path.exists() and any(path.iterdir()):
            n += 1
            path = output_dir / f"{name}-{n}"
        path.mkdir(parents=True, exist_ok=True)
        return cls(path.name, path)

    @property
    def rollouts_path(self) -> Path:
        return self.dir / "rollouts.jsonl"

    def write_lock(self, recipe: Any, plugins: dict[str, str]) -> Path:
        lock = {
            "recipe": recipe.model_dump(mode="json"),
            "recipe_file": str(recipe.path),
            "seed": recipe.seed,
            "git_commit": git_commit(recipe.base_dir),
            "python": platform.python_version(),
            "packages": {p: package_version(p) for p in PACKAGES},
            "plugins": plugins,
        }
        path = self.dir / "recipe.lock.yaml"
        path.write_text(yaml.safe_dump(lock, sort_keys=False))
        return path

    def describe_sources(self, stage: str, described: dict[str, Any]) -> None:
        """Record what each source says about itself (e.g. a judge template's hash) in the lock."""
        path = self.dir / "recipe.lock.yaml"
        lock = yaml.safe_load(path.read_text()) if path.exists() else {}
        lock.setdefault("sources", {})[stage] = described
        path.write_text(yaml.safe_dump(lock, sort_keys=False))

    def append_rollouts(self, records: list[dict]) -> None:
        with open(self.rollouts_path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")

    def write_status(self, status: dict) -> None:
        (self.dir / "status.json").write_text(json.dumps(status, indent=1))


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
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        metrics = d / "metrics.jsonl"
        if not metrics.exists():
            continue
        status = json.loads((d / "status.json").read_text()) if (d / "status.json").exists() else {}
        last, best = {}, None
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            last = row
            value = row.get("eval/reward")
            if isinstance(value, (int, float)) and (best is None or value > best[0]):
                best = (value, row.get("stage"))
        out.append({"name": d.name, "status": status.get("status", "running or killed"),
                    "stage": last.get("stage", ""), "step": last.get("step", 0),
                    "best_eval": f"{best[0]:.3f} ({best[1]})" if best else "",
                    "checkpoint": (d / "checkpoints" / "latest").read_text().strip()
                    if (d / "checkpoints" / "latest").exists() else ""})
    return out
