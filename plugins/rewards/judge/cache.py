"""The judge's on-disk cache: SQLite, keyed on (model, template hash, input), so reruns pay nothing twice."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(model: str, template_hash: str, request: dict[str, Any]) -> str:
    """The request (messages and sampling settings) with the model and template hash, hashed."""
    blob = json.dumps([model, template_hash, request], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """Raw replies of successful calls (parsing happens on read, so a parser fix needs no new calls)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
                         "prompt_tokens INTEGER, completion_tokens INTEGER, created REAL DEFAULT (strftime('%s','now')))")

    def get(self, key: str) -> tuple[str, int, int] | None:
        with self._lock:
            row = self._db.execute("SELECT reply, prompt_tokens, completion_tokens FROM replies WHERE key = ?",
                                   (key,)).fetchone()
        return tuple(row) if row else None

    def put(self, key: str, reply: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, reply, prompt_tokens, completion_tokens) "
                             "VALUES (?, ?, ?, ?)", (key, reply, prompt_tokens, completion_tokens))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
