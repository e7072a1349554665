"""Datasets: JSONL files, synthetic generators or data-source plugins, checked row by row, and a resumable sampler."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .recipe import DataRef, GeneratedData, SourcedData
from .synthetic import GENERATORS


class Dataset(list):
    """Rows (dicts) and where they came from, for error messages."""

    def __init__(self, rows: list[dict], origin: str, lines: list[int] | None = None):
        super().__init__(rows)
        self.origin = origin
        self.lines = lines or list(range(1, len(rows) + 1))

    def require(self, fields: dict[str, type | tuple[type, ...]], purpose: str) -> "Dataset":
        """Every row has each field with the right type; else a one-line error with file and line."""
        if not self:
            raise UserError(f"{self.origin}: the dataset is empty; {purpose} needs at least one row")
        for row, line in zip(self, self.lines):
            for key, typ in fields.items():
                if key not in row:
                    raise UserError(f"{self.origin}:{line}: missing field '{key}' ({purpose} needs "
                                    f"{', '.join(fields)})")
                if not isinstance(row[key], typ) or (isinstance(row[key], bool) and typ in (int, float)):
                    want = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
                    raise UserError(f"{self.origin}:{line}: field '{key}' must be {want}, "
                                    f"got {type(row[key]).__name__}")
        return self


def load(ref: DataRef, base_dir: Path, registry: Any = None) -> Dataset:
    if isinstance(ref, GeneratedData):
        rows = GENERATORS[ref.generator](ref.split, ref.size, ref.holdout, ref.seed)
        return Dataset(rows, f"generator '{ref.generator}' ({ref.split})")
    if isinstance(ref, SourcedData):
        return _from_source(ref, base_dir, registry)
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    return read_jsonl(path)


def _from_source(ref: SourcedData, base_dir: Path, registry: Any) -> Dataset:
    from . import datasources
    if registry is None:
        from .plugins import default
        registry = default()[1]
    rows, origin = datasources.generate(ref.entries, base_dir, registry)
    if ref._train is not None:  # an eval never repeats a prompt of its stage's train rows
        seen = {datasources.prompt_key(r) for r in datasources.generate(ref._train.entries, base_dir, registry)[0]}
        kept = [r for r in rows if datasources.prompt_key(r) not in seen]
        if not kept:
            raise UserError(f"{origin}: every eval row is also in data.train; give data.eval another seed")
        if len(kept) < len(rows):
            origin += f" ({len(rows) - len(kept)} rows also in data.train dropped)"
        rows = kept
    return Dataset(rows, origin)


def read_jsonl(path: Path) -> Dataset:
    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(n)
    return Dataset(rows, str(path), lines)


class Sampler:
    """Shuffled passes over a dataset, seeded per epoch; its position is part of a checkpoint.

    An epoch boundary inside a batch continues into the next epoch's order (no skipped rows).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.epoch, self.index = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.index == self.size:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm()
            n = min(k - len(out), self.size - self.index)
            out += self._order[self.index: self.index + n]
            self.index += n
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._perm()
