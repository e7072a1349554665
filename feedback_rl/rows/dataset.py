"""Datasets: rows from a data file, the `datasets` library, a generator or a data-source plugin, checked row by row; a resumable sampler.

Rows are plain text or conversations in TRL's conversational format: ``prompt``, ``messages``, ``chosen``,
``rejected`` and ``completion`` may be lists of ``{role, content}`` turns. docs/data.md lists every format.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from feedback_rl.rows import readers
from feedback_rl.errors import UserError, did_you_mean
from feedback_rl.rows.refs import DataRef, FileData, GeneratedData, HubData, RowSelection, SourcedData
from feedback_rl.rows.synthetic import GENERATORS


class Turns:
    """A field type for :meth:`Dataset.require`: a list of ``{role, content}`` turns."""


TEXT_OR_TURNS = (str, Turns)
# the columns TRL's conversational format allows as turn lists; their structure is checked when read
CONVERSATIONAL = ("prompt", "messages", "chosen", "rejected", "completion")
_WANT = {str: "text", bool: "true or false", int: "an integer", float: "a number", list: "a list", dict: "a mapping",
         Turns: "a list of {role, content} turns"}


class Dataset(list):
    """Rows (dicts) and where they came from, for error messages."""

    def __init__(self, rows: list[dict], origin: str, lines: list[int] | None = None, unit: str = "line",
                 columns: list[str] | None = None, textual: bool = False):
        super().__init__(rows)
        self.origin = origin
        self.lines = lines or list(range(1, len(rows) + 1))
        self.unit = unit            # "line": lines[k] is a line of the file; "row": a row number
        self.columns = columns      # tabular sources (CSV, Parquet, `datasets`): the column names
        self.textual = textual      # CSV: values are text, parsed when a typed field is required

    def where(self, k: int) -> str:
        return f"{self.origin}:{self.lines[k]}" if self.unit == "line" else f"{self.origin}: row {self.lines[k]}"

    def require(self, fields: dict[str, type | tuple[type, ...]], purpose: str) -> "Dataset":
        """Every row has each field with the right type (``Turns``: a turn list); else one line with file and line."""
        if not self:
            raise UserError(f"{self.origin}: the dataset is empty; {purpose} needs at least one row")
        field = "field" if self.columns is None else "column"
        for key in fields:
            if self.columns is not None and key not in self.columns:
                raise UserError(f"{self.origin}: no column '{key}'{did_you_mean(key, self.columns)} ({purpose} "
                                f"needs {', '.join(fields)}); its columns: {readers.names(self.columns)} (rename one with "
                                f"columns: {{{key}: NAME}})")
        for k, row in enumerate(self):
            for key, typ in fields.items():
                if key not in row:
                    raise UserError(f"{self.where(k)}: missing {field} '{key}' ({purpose} needs {', '.join(fields)})")
                types = typ if isinstance(typ, tuple) else (typ,)
                if self.textual and isinstance(row[key], str) and str not in types:
                    row[key] = _parse(row[key], types, f"{self.where(k)}: column '{key}'")
                value = row[key]
                if Turns in types and isinstance(value, list):
                    check_turns(value, self.where(k), key)
                elif not _is(value, types):
                    want = " or ".join(_WANT.get(t, t.__name__) for t in types)
                    raise UserError(f"{self.where(k)}: {field} '{key}' must be {want}, got {readers.json_kind(value)}")
        return self


def _is(value: Any, types: tuple) -> bool:
    real = tuple(t for t in types if t is not Turns)
    if isinstance(value, bool) and bool not in real:
        return False   # JSON true is not the number 1
    return isinstance(value, real)


def _parse(text: str, types: tuple, where: str) -> Any:
    """A CSV cell as the typed value a field needs."""
    low = text.strip().lower()
    if bool in types and low in ("true", "false", "1", "0", "yes", "no"):
        return low in ("true", "1", "yes")
    for t in (int, float):
        if t in types:
            try:
                return t(text)
            except ValueError:
                pass
    want = " or ".join(_WANT.get(t, t.__name__) for t in types)
    raise UserError(f"{where} must be {want}, got {text!r}")


def check_turns(turns: list, where: str, key: str) -> None:
    if not turns:
        raise UserError(f"{where}: '{key}' is an empty list of turns")
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise UserError(f"{where}: {key}[{t}] must be a {{role, content}} turn, got {readers.json_kind(turn)}")
        for part in ("role", "content"):
            if part not in turn:
                raise UserError(f"{where}: {key}[{t}] has no '{part}' (a turn is {{role, content}}; it has: "
                                f"{readers.names(turn)})")
            if not isinstance(turn[part], str):
                raise UserError(f"{where}: {key}[{t}].{part} must be text, got {readers.json_kind(turn[part])}")


def load(ref: DataRef, base_dir: Path, registry: Any = None) -> Dataset:
    """The rows a recipe's data reference names; every problem with the data itself is a UserError here."""
    if isinstance(ref, GeneratedData):
        rows = GENERATORS[ref.generator](ref.split, ref.size, ref.holdout, ref.seed)
        return Dataset(rows, f"generator '{ref.generator}' ({ref.split})")
    if isinstance(ref, HubData):
        return _from_datasets(ref, base_dir)
    if isinstance(ref, SourcedData):
        return _checked(_from_source(ref, base_dir, registry))
    path = Path(ref.path if isinstance(ref, FileData) else ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    table = readers.read_file(path)
    rows, positions, columns = table.rows, table.positions, table.columns
    if isinstance(ref, FileData):
        present = columns or list(dict.fromkeys(key for row in rows for key in row))
        renamed = _renamed_columns(present, ref.columns, str(path))
        columns = renamed if columns else None
        keep = _pick(len(rows), ref, str(path))
        rows, positions = [_rename(rows[i], ref.columns) for i in keep], [positions[i] for i in keep]
    return _checked(Dataset(rows, str(path), positions, table.unit, columns, table.textual))


def _from_datasets(ref: HubData, base_dir: Path) -> Dataset:
    from feedback_rl.rows.hf_dataset import open_dataset
    ds, origin = open_dataset(ref, base_dir)
    if len(ds) == 0:
        raise UserError(f"{origin}: no rows")
    columns = _renamed_columns(list(ds.column_names), ref.columns, origin)
    keep = _pick(len(ds), ref, origin)
    rows = [_rename(row, ref.columns) for row in ds.select(keep).to_list()]
    return _checked(Dataset(rows, origin, [i + 1 for i in keep], "row", columns))


def _renamed_columns(present: list[str], renames: dict[str, str], origin: str) -> list[str]:
    for target, source in renames.items():
        if source not in present:
            raise UserError(f"{origin}: columns.{target}: no column '{source}'{did_you_mean(source, present)}; "
                            f"the columns are: {readers.names(present)}")
    sources = set(renames.values())
    return [c for c in present if c not in sources and c not in renames] + list(renames)


def _rename(row: dict, renames: dict[str, str]) -> dict:
    if not renames:
        return row
    sources = set(renames.values())
    out = {k: v for k, v in row.items() if k not in sources}
    out.update({target: row[source] for target, source in renames.items() if source in row})
    return out


def _pick(n: int, sel: RowSelection, origin: str) -> list[int]:
    """The row indices ``sel`` keeps: shuffled by seed, the first ``holdout`` for eval, the rest for train."""
    if sel.holdout >= n:
        raise UserError(f"{origin}: holdout {sel.holdout} leaves no rows to train on (there are {n})")
    order = list(range(n))
    if sel.shuffle:
        random.Random(sel.seed).shuffle(order)
    part = order[:sel.holdout] if sel.part == "eval" else order[sel.holdout:]
    return part[:sel.size] if sel.size is not None else part


def _checked(data: Dataset) -> Dataset:
    """Conversational columns holding a list must hold well-formed turns."""
    for k, row in enumerate(data):
        for key in CONVERSATIONAL:
            if isinstance(row.get(key), list):
                check_turns(row[key], data.where(k), key)
    return data


def _from_source(ref: SourcedData, base_dir: Path, registry: Any) -> Dataset:
    from feedback_rl.rows import datasources
    if registry is None:
        from feedback_rl.plugins import default
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
