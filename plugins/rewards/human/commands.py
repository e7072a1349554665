"""``frl label ...``: serve the web app, add annotators, label in a terminal, export and import."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from feedback_rl import UserError

from .store import LabelError, LabelStore


def _db(command):
    """``--db FILE`` (an existing label database) and ``--create`` (make it when it does not exist yet)."""
    command = click.option("--create", is_flag=True, help="Create the database if it does not exist.")(command)
    return click.option("--db", "db", required=True, type=click.Path(dir_okay=False),
                        help="The labels' SQLite file (a run's default: runs/NAME/labels.sqlite).")(command)


def open_store(db: str, create: bool) -> LabelStore:
    """The label database at ``db``; a path that does not exist is a typo unless ``--create`` says otherwise."""
    path = Path(db)
    if not path.exists() and not create:
        raise UserError(f"--db {db}: no such label database (check the path, or add --create to make a new one)")
    try:
        return LabelStore(path)
    except sqlite3.DatabaseError as e:
        raise UserError(f"--db {db}: not a label database ({e})") from None


@click.group()
def label() -> None:
    """Human labeling: the queue a `human` reward source fills."""


@label.command()
@_db
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback by default; 0.0.0.0 exposes it.")
@click.option("--port", default=8765, show_default=True, type=int, help="0 picks a free port.")
def serve(db: str, create: bool, host: str, port: int) -> None:
    """Serve the labeling web app."""
    from .app import serve as run_server
    open_store(db, create)
    run_server(db, host, port)


@label.command("add-annotator")
@click.argument("name")
@_db
@click.option("--rotate", is_flag=True, help="Give an existing annotator a new token; the old one stops working.")
def add_annotator(name: str, db: str, create: bool, rotate: bool) -> None:
    """Create an annotator and print their token (shown once; stored only as a hash)."""
    store = open_store(db, create)
    try:
        token = store.add_annotator(name, rotate=rotate)
    except LabelError as e:
        raise UserError(f"add-annotator {name}: {e}") from None
    click.echo(token)  # stdout holds the token alone, for scripts
    if rotate:
        click.echo(f"annotator '{name}' has a new token; the old one no longer works (a browser still holding "
                   "it gets 401 and must be opened again with ?token=NEW)", err=True)


@label.command("cli")
@_db
@click.option("--annotator", default=None, help="Label as this annotator (default: $USER, created if new).")
def terminal(db: str, create: bool, annotator: str | None) -> None:
    """Label in the terminal."""
    import getpass

    from .terminal import label_loop
    store = open_store(db, create)
    name = annotator or getpass.getuser()
    if not store.has_annotator(name):
        store.add_annotator(name)
    n = label_loop(store, name)
    click.echo(f"{n} labels stored")


@label.command("export")
@_db
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False))
def export(db: str, create: bool, out: str) -> None:
    """Labels as JSONL: pairwise -> prompt/chosen/rejected (DPO, RM); thumbs, rating -> prompt/completion/label (KTO)."""
    store = open_store(db, create)
    n = 0
    with open(out, "w") as f:
        for row in export_rows(store):
            f.write(json.dumps(row) + "\n")
            n += 1
    click.echo(f"{n} rows -> {out}")


@label.command("import")
@_db
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--annotator", default="import", show_default=True, help="For rows without an annotator.")
def import_(db: str, create: bool, path: str, annotator: str) -> None:
    """Read labels from JSONL (the export formats); importing a file twice, or an export into the database
    it came from, stores each label once (a preference is the same with A and B swapped)."""
    store = open_store(db, create)
    stored = 0
    for line_no, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{line_no}: not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}; "
                            "labels are read as UTF-8 JSONL (the export's format)") from None
        if not line.strip():
            continue
        try:
            stored += import_row(store, json.loads(line), annotator) == "stored"
        except (ValueError, KeyError, TypeError, LabelError, RecursionError) as e:
            raise UserError(f"{path}:{line_no}: {e}") from None
    click.echo(f"{stored} labels imported")


def export_rows(store: LabelStore) -> list[dict]:
    rows = []
    for x in store.all_labels():
        base = {"prompt": x.prompt, "annotator": x.annotator, "task": x.task}
        if x.task == "pairwise":
            if x.choice == "tie":
                continue
            win, lose = (x.a, x.b) if x.choice == "a" else (x.b, x.a)
            rows.append({**base, "chosen": win, "rejected": lose})
        elif x.task == "thumbs":
            rows.append({**base, "completion": x.a, "label": x.choice == "up"})
        else:
            rows.append({**base, "completion": x.a, "label": int(x.choice) >= 4, "rating": int(x.choice)})
    return rows


def import_row(store: LabelStore, row: dict, default_annotator: str) -> str:
    """One exported row back into the store: the item (found or created) and its label."""
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise ValueError("each line must be a JSON object with a string 'prompt'")
    who = row.get("annotator") or default_annotator
    if "chosen" in row:
        task, a, b, choice = "pairwise", str(row["chosen"]), str(row["rejected"]), "a"
    elif "rating" in row:
        task, a, b, choice = "rating", str(row["completion"]), None, str(int(row["rating"]))
    elif "label" in row:
        task, a, b = "thumbs", str(row["completion"]), None
        choice = "up" if row["label"] is True else "down" if row["label"] is False else None
        if choice is None:
            raise ValueError("'label' must be true or false")
    else:
        raise ValueError("a row needs 'chosen'/'rejected', or 'completion' with 'label' or 'rating'")
    found = store.find_labeled(task, row["prompt"], a, b, who)
    if found is None:
        return store.submit(store.enqueue(task, row["prompt"], a, b), who, choice)
    item_id, swapped = found
    if swapped:  # the item shows the chosen completion as B: the same preference, labeled "b"
        choice = "b"
    return store.submit(item_id, who, choice)
