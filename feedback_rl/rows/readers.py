"""Data files into rows: JSON lines, a JSON array, CSV, Parquet; UTF-8 with or without a byte-order mark.

Each reader returns a :class:`Table`: the rows, the line (text formats) or row number each came from, and
for tabular formats the column names. A mistake is one :class:`UserError` line naming the file and line.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from feedback_rl.errors import UserError


@dataclass
class Table:
    rows: list[dict]
    positions: list[int]           # 1-based: a line number (unit "line") or a row number (unit "row")
    unit: str = "line"
    columns: list[str] | None = None  # tabular formats: every row has exactly these keys
    textual: bool = False          # CSV: every value is text; a typed field is parsed when it is required


def json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def names(items: Any) -> str:
    """Column or key names for a one-line message: odd ones (a newline, an empty name) quoted."""
    return ", ".join(x if isinstance(x, str) and x.isprintable() and x.strip() == x and x else repr(x)
                     for x in items) or "none"


def read_file(path: Path) -> Table:
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a data file; read a save_to_disk folder or a folder of data "
                        f"files with {{dataset: {path}}}")
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{path}: unknown data file type '{path.suffix}'; expected one of {', '.join(READERS)}")
    table = reader(path)
    if not table.rows:
        what = "only a header line" if table.textual else "the file is empty"
        raise UserError(f"{path}: no rows ({what})")
    return table


def decode(path: Path) -> str:
    """The file as text; a non-UTF-8 byte is named by line and offset."""
    data = path.read_bytes()
    if data.startswith(b"PAR1"):
        raise UserError(f"{path}: a Parquet file, read as text because of its '{path.suffix}' name; name it .parquet")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{path}: is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1)
        raise UserError(f"{path}:{line}: not UTF-8: byte 0x{data[at]:02x} at byte {column} of the line "
                        f"(byte {at} of the file); save the file as UTF-8") from None


def read_jsonl(path: Path) -> Table:
    return _json_lines(path, decode(path))


def _json_lines(path: Path, text: str) -> Table:
    rows, lines = [], []
    for n, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: each line must be a JSON object, got {json_kind(row)}")
        rows.append(row)
        lines.append(n)
    return Table(rows, lines)


def read_json(path: Path) -> Table:
    """One array of objects, or one object per line (JSON lines under a .json name)."""
    text = decode(path)
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return Table([], [])
    if text[start] == "[":
        return _json_array(path, text, start)
    if text.strip().count("\n"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            raise UserError(f"{path}: holds one JSON object over several lines; a .json data file is one array "
                            "of objects, or one object per line")
    return _json_lines(path, text)


def _json_array(path: Path, text: str, start: int) -> Table:
    decoder, rows, lines = json.JSONDecoder(), [], []
    line, seen = 1, 0   # the line at offset `seen`, counted forward as items are read

    def line_at(pos: int) -> int:
        nonlocal line, seen
        line, seen = line + text.count("\n", seen, pos), pos
        return line

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    i = skip(start + 1)
    while i < len(text) and text[i] != "]":
        try:
            row, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{line_at(i)}: item {len(rows) + 1} of the array must be a JSON object, "
                            f"got {json_kind(row)}")
        rows.append(row)
        lines.append(line_at(i))
        i = skip(end)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
        elif i < len(text) and text[i] != "]":
            raise UserError(f"{path}:{line_at(i)}: invalid JSON: expected ',' or ']' after item {len(rows)}")
    if i >= len(text):
        raise UserError(f"{path}:{line_at(len(text))}: invalid JSON: the array is not closed (no ']')")
    if text[i + 1:].strip():
        raise UserError(f"{path}:{line_at(skip(i + 1))}: invalid JSON: more after the array's closing ']'")
    return Table(rows, lines)


def read_csv(path: Path) -> Table:
    text = decode(path)
    csv.field_size_limit(sys.maxsize // 2)   # a conversation in one cell can pass the 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows, lines, end = [], [], 0
    try:
        for fields in reader:
            line, end = end + 1, reader.line_num   # a quoted field may span lines: report where the row starts
            if not fields:
                continue
            if header is None:
                header = fields
                twice = sorted({c for c in header if header.count(c) > 1})
                if twice:
                    raise UserError(f"{path}:{line}: the header names column {twice[0]!r} twice")
                continue
            if len(fields) != len(header):
                raise UserError(f"{path}:{line}: {len(fields)} field{'s' * (len(fields) != 1)}, but the header "
                                f"has {len(header)} ({names(header)})")
            rows.append(dict(zip(header, fields)))
            lines.append(line)
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: invalid CSV: {e}") from None
    return Table(rows, lines, "line", header, textual=True)


def read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    columns: dict[str, list] = {}
    for name in table.column_names:
        try:
            columns[name] = table.column(name).to_pylist()
        except (UnicodeDecodeError, pa.ArrowException) as e:   # a column of a type Python cannot hold
            raise UserError(f"{path}: column {name!r}: {str(e).splitlines()[0]}") from None
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return Table(rows, list(range(1, len(rows) + 1)), "row", table.column_names)


READERS: dict[str, Callable[[Path], Table]] = {
    ".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv, ".parquet": read_parquet}
