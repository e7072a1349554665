"""The labeling queue: items waiting for people, annotators, labels and their history, in SQLite.

WAL mode, so the trainer, the web app and the terminal labeler (separate processes) read and write
one file at once. Every write is one ``BEGIN IMMEDIATE`` transaction: a crash loses nothing that
was acknowledged. A label is unique per (item, annotator): resubmitting it stores nothing new,
changing it updates the row and appends to ``label_history``. A training run holds its own cursor
over label ids and change ids in its checkpoint (:meth:`LabelStore.take`): labels taken after the
last checkpoint are taken again on resume, so the checkpointed model sees each label once.
``consumed`` and ``cursors`` record who took what, as information.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("pairwise", "thumbs", "rating")
CHOICES = {"pairwise": ("a", "b", "tie"), "thumbs": ("up", "down"), "rating": ("1", "2", "3", "4", "5")}
LEASE_S = 60.0  # an item handed to one annotator is not handed to another for this long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    prompt TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    want INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    leased_by TEXT,
    leased_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT UNIQUE NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (item_id, annotator)
);
CREATE TABLE IF NOT EXISTS label_history (
    id INTEGER PRIMARY KEY,
    label_id INTEGER NOT NULL,
    old_choice TEXT NOT NULL,
    new_choice TEXT NOT NULL,
    changed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS skips (
    item_id INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    PRIMARY KEY (item_id, annotator)
);
CREATE TABLE IF NOT EXISTS cursors (
    consumer TEXT PRIMARY KEY,
    last_label_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consumed (
    consumer TEXT NOT NULL,
    label_id INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (consumer, label_id)
);
CREATE TABLE IF NOT EXISTS item_keys (
    key TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id)
);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item_id);
"""


class LabelError(ValueError):
    """A submission the store refuses (unknown item, wrong choice); the web app answers 4xx."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Label:
    id: int
    item_id: int
    annotator: str
    choice: str
    task: str
    prompt: str
    a: str
    b: str | None
    meta: dict[str, Any]


_LABELS = ("SELECT l.id, l.item_id, l.annotator, l.choice, i.task, i.prompt, i.a, i.b, i.meta "
           "FROM labels l JOIN items i ON i.id=l.item_id ")


def _label(r: sqlite3.Row) -> Label:
    return Label(r["id"], r["item_id"], r["annotator"], r["choice"], r["task"], r["prompt"], r["a"], r["b"],
                 json.loads(r["meta"]))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LabelStore:
    """One SQLite file; safe to share between threads (a connection per thread) and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # idempotent; executescript manages its own transaction

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: Any, *_: Any) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _tx(self) -> "LabelStore._Tx":
        return self._Tx(self._conn())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ annotators
    def add_annotator(self, name: str, rotate: bool = False) -> str:
        """Create an annotator, or with ``rotate`` give an existing one a new token (the old one stops
        working at once); returns the token, which is stored only as a hash. An existing name without
        ``rotate`` is refused: replacing the token silently would lock out whoever labels with it."""
        if not name or not name.strip():
            raise LabelError("annotator name is empty")
        token = secrets.token_urlsafe(24)
        with self._tx() as db:
            exists = db.execute("SELECT 1 FROM annotators WHERE name=?", (name,)).fetchone() is not None
            if exists and not rotate:
                raise LabelError(f"annotator '{name}' already exists; --rotate gives them a new token "
                                 "(their current one then stops working)", 409)
            if rotate and not exists:
                raise LabelError(f"no annotator '{name}' to rotate (leave out --rotate to create one)", 404)
            db.execute("INSERT INTO annotators(name, token_sha256, created) VALUES (?,?,?) "
                       "ON CONFLICT(name) DO UPDATE SET token_sha256=excluded.token_sha256",
                       (name, token_hash(token), time.time()))
        return token

    def annotator_for(self, token: str | None) -> str | None:
        if not token:
            return None
        row = self._conn().execute("SELECT name FROM annotators WHERE token_sha256=?",
                                   (token_hash(token),)).fetchone()
        return row["name"] if row else None

    # ------------------------------------------------------------------ items
    def enqueue(self, task: str, prompt: str, a: str, b: str | None = None, meta: dict | None = None,
                want: int = 1) -> int:
        return self.enqueue_many([(task, prompt, a, b, meta or {})], want)[0]

    def enqueue_many(self, items: list[tuple], want: int = 1, keys: list[str] | None = None) -> list[int]:
        """``items``: (task, prompt, a, b, meta) tuples; ``want`` labels per item (2+ measures agreement).

        ``keys``, one per item, make enqueueing idempotent: an item whose key is already stored is not
        added again, and its existing id is returned (a step replayed after ``--resume`` asks again)."""
        now, ids = time.time(), []
        with self._tx() as db:
            for k, (task, prompt, a, b, meta) in enumerate(items):
                if task not in TASKS:
                    raise LabelError(f"unknown task '{task}'")
                if (task == "pairwise") != (b is not None):
                    raise LabelError("a pairwise item has two completions, other tasks one")
                key = keys[k] if keys is not None else None
                if key is not None:
                    known = db.execute("SELECT item_id FROM item_keys WHERE key=?", (key,)).fetchone()
                    if known is not None:
                        ids.append(known["item_id"])
                        continue
                cur = db.execute("INSERT INTO items(task, prompt, a, b, meta, want, created) VALUES (?,?,?,?,?,?,?)",
                                 (task, prompt, a, b, json.dumps(meta), want, now))
                ids.append(cur.lastrowid)
                if key is not None:
                    db.execute("INSERT INTO item_keys(key, item_id) VALUES (?,?)", (key, cur.lastrowid))
        return ids

    def find_item(self, task: str, prompt: str, a: str, b: str | None) -> int | None:
        row = self._conn().execute("SELECT id FROM items WHERE task=? AND prompt=? AND a=? AND b IS ? ORDER BY id "
                                   "LIMIT 1", (task, prompt, a, b)).fetchone()
        return row["id"] if row else None

    def find_labeled(self, task: str, prompt: str, a: str, b: str | None, annotator: str) -> tuple[int, bool] | None:
        """The item an imported label belongs to: ``(item id, swapped)``, where ``swapped`` says the item
        shows ``b`` as A and ``a`` as B (a pairwise preference is the same either way round). Among several
        items with these texts, one ``annotator`` labeled already comes first, so a label is never
        stored twice; then one in the given order; then the oldest."""
        row = self._conn().execute(
            "SELECT i.id, i.a != ? AS swapped FROM items i WHERE i.task=? AND i.prompt=? AND "
            "((i.a=? AND i.b IS ?) OR (i.task='pairwise' AND i.a=? AND i.b=?)) "
            "ORDER BY EXISTS (SELECT 1 FROM labels l WHERE l.item_id=i.id AND l.annotator=?) DESC, swapped, i.id "
            "LIMIT 1", (a, task, prompt, a, b, b, a, annotator)).fetchone()
        return None if row is None else (row["id"], bool(row["swapped"]))

    def has_annotator(self, name: str) -> bool:
        return self._conn().execute("SELECT 1 FROM annotators WHERE name=?", (name,)).fetchone() is not None

    def next_item(self, annotator: str) -> dict[str, Any] | None:
        """The oldest item that still wants labels, that this annotator has neither labeled nor skipped,
        and that no one else holds; it is leased to ``annotator`` for ``LEASE_S`` seconds."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM items i WHERE (SELECT COUNT(*) FROM labels l WHERE l.item_id=i.id) < i.want "
                "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id=i.id AND l.annotator=?) "
                "AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.item_id=i.id AND s.annotator=?) "
                "AND (i.leased_until < ? OR i.leased_by = ? OR i.want > 1) ORDER BY i.id LIMIT 1",
                (annotator, annotator, now, annotator)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE items SET leased_by=?, leased_until=? WHERE id=?", (annotator, now + LEASE_S, row["id"]))
        meta = json.loads(row["meta"] or "{}")  # a conversational prompt and an episode's turns: shown turn by turn
        return {"id": row["id"], "task": row["task"], "prompt": row["prompt"], "turns": meta.get("turns"),
                "a": row["a"], "b": row["b"], "a_turns": meta.get("a_turns"), "b_turns": meta.get("b_turns")}

    def skip(self, item_id: int, annotator: str) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM items WHERE id=?", (item_id,)).fetchone() is None:
                raise LabelError(f"unknown item {item_id}", 404)
            db.execute("INSERT OR IGNORE INTO skips(item_id, annotator) VALUES (?,?)", (item_id, annotator))
            db.execute("UPDATE items SET leased_until=0 WHERE id=? AND leased_by=?", (item_id, annotator))

    # ------------------------------------------------------------------ labels
    def submit(self, item_id: int, annotator: str, choice: str) -> str:
        """Store a label: ``"stored"``, ``"unchanged"`` (an identical resubmission) or ``"changed"``."""
        now = time.time()
        with self._tx() as db:
            item = db.execute("SELECT task FROM items WHERE id=?", (item_id,)).fetchone()
            if item is None:
                raise LabelError(f"unknown item {item_id}", 404)
            allowed = CHOICES[item["task"]]
            if choice not in allowed:
                raise LabelError(f"choice '{choice}' is not valid for a {item['task']} item; "
                                 f"expected one of: {', '.join(allowed)}", 422)
            old = db.execute("SELECT id, choice FROM labels WHERE item_id=? AND annotator=?",
                             (item_id, annotator)).fetchone()
            if old is None:
                db.execute("INSERT INTO labels(item_id, annotator, choice, created, updated) VALUES (?,?,?,?,?)",
                           (item_id, annotator, choice, now, now))
                db.execute("UPDATE items SET leased_until=0 WHERE id=?", (item_id,))
                return "stored"
            if old["choice"] == choice:
                return "unchanged"
            db.execute("UPDATE labels SET choice=?, updated=? WHERE id=?", (choice, now, old["id"]))
            db.execute("INSERT INTO label_history(label_id, old_choice, new_choice, changed) VALUES (?,?,?,?)",
                       (old["id"], old["choice"], choice, now))
            return "changed"

    def take(self, consumer: str, cursor: tuple[int, int]) -> tuple[list[Label], tuple[int, int]]:
        """Labels past a caller-held ``cursor`` = (last label id, last change id), and the new cursor.

        A label stored after the cursor comes with its current choice; a label handed out before it
        and changed since comes again, with the new choice. The caller keeps the cursor (in its
        checkpoint); the store only records, as information, who took what (``consumed``, ``cursors``).
        """
        last_label, last_change = cursor
        with self._tx() as db:  # one snapshot: the two cursors agree with each other
            fresh = db.execute(_LABELS + "WHERE l.id > ? ORDER BY l.id", (last_label,)).fetchall()
            top = db.execute("SELECT COALESCE(MAX(id), 0) FROM label_history").fetchone()[0]
            changed = db.execute(_LABELS + "WHERE l.id <= ? AND l.id IN (SELECT label_id FROM label_history "
                                 "WHERE id > ?) ORDER BY l.id", (last_label, last_change)).fetchall()
            if fresh:
                db.executemany("INSERT OR IGNORE INTO consumed(consumer, label_id, at) VALUES (?,?,?)",
                               [(consumer, r["id"], time.time()) for r in fresh])
                db.execute("INSERT INTO cursors(consumer, last_label_id) VALUES (?,?) ON CONFLICT(consumer) "
                           "DO UPDATE SET last_label_id=MAX(last_label_id, excluded.last_label_id)",
                           (consumer, fresh[-1]["id"]))
        new = (fresh[-1]["id"] if fresh else last_label, max(last_change, top))
        return [_label(r) for r in changed + fresh], new

    def labels_upto(self, last_label: int) -> list[Label]:
        """Every label with id up to ``last_label``, with its current choice (a reward model's data)."""
        return [_label(r) for r in self._conn().execute(_LABELS + "WHERE l.id <= ? ORDER BY l.id", (last_label,))]

    def labels_for(self, item_ids: list[int]) -> dict[int, list[str]]:
        if not item_ids:
            return {}
        q = ",".join("?" * len(item_ids))
        out: dict[int, list[str]] = {}
        for r in self._conn().execute(f"SELECT item_id, choice FROM labels WHERE item_id IN ({q})", item_ids):
            out.setdefault(r["item_id"], []).append(r["choice"])
        return out

    def all_labels(self) -> list[Label]:
        return self.labels_upto(sys.maxsize)

    def history(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute("SELECT * FROM label_history ORDER BY id")]

    # ------------------------------------------------------------------ numbers
    def stats(self, annotator: str | None = None, window_s: float = 300.0) -> dict[str, float]:
        """Queue depth, oldest pending age, labels per minute (over ``window_s``), agreement."""
        db, now = self._conn(), time.time()
        pending = db.execute("SELECT COUNT(*) n, MIN(created) oldest FROM items i WHERE "
                             "(SELECT COUNT(*) FROM labels l WHERE l.item_id=i.id) < i.want").fetchone()
        total = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        recent = db.execute("SELECT COUNT(*) FROM labels WHERE created > ?", (now - window_s,)).fetchone()[0]
        multi = db.execute("SELECT COUNT(*) n, SUM(k=1) agree FROM (SELECT COUNT(DISTINCT choice) k FROM labels "
                           "GROUP BY item_id HAVING COUNT(*) >= 2)").fetchone()
        out = {"queue_depth": float(pending["n"]),
               "oldest_pending_s": now - pending["oldest"] if pending["oldest"] is not None else 0.0,
               "labels_total": float(total),
               "labels_per_minute": recent * 60.0 / window_s,
               "agreement": (multi["agree"] / multi["n"]) if multi["n"] else float("nan"),
               "items_labeled_twice": float(multi["n"])}
        if annotator is not None:
            out["mine"] = float(db.execute("SELECT COUNT(*) FROM labels WHERE annotator=?", (annotator,)).fetchone()[0])
        return out
