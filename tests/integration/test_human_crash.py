"""The trainer is SIGKILLed while labels are pending; the annotator keeps labeling. After a restart,
every label is stored once, the items that were pending are served again, and labels made while the
trainer was down reach the new run. (The restart is a fresh run, so it takes every label from the
first: its model has seen none. Resuming from a checkpoint is tests/unit/test_human_exactly_once.py.)"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import yaml

from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore


def recipe(tmp_path, db, steps):
    path = tmp_path / f"crash-{steps}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "crash", "seed": 0, "output_dir": str(tmp_path / "runs"),
        "model": {"path": "builtin:tiny-gpt2", "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2}},
        "loggers": ["jsonl"],
        "stages": [{
            "name": "dpo", "optimizer": {"type": "dpo"},
            "data": {"train": {"generator": "addition", "split": "train"}},
            "rewards": {"sources": [{"name": "people", "type": "human", "task": "pairwise", "db": str(db),
                                     "per_step": 4, "max_pending": 8}]},
            "rollout": {"num_generations": 2, "max_new_tokens": 3},
            "train": {"steps": steps, "batch_size": 4, "lr": 1e-4},
        }],
    }))
    return path


def trainer(path):
    return subprocess.Popen([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def q(con, sql, *args):
    return con.execute(sql, args).fetchall()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_labels_survive_a_sigkilled_trainer_exactly_once(tmp_path):
    db = tmp_path / "labels.sqlite"
    token = LabelStore(db).add_annotator("sim")
    con = sqlite3.connect(db, timeout=30)
    server, url = spawn(db)
    annotator = subprocess.Popen([sys.executable, "-m", "frl_plugins.rewards.human.annotator", "--url", url,
                                  "--token", token, "--delay", "0.5"],  # slower than the trainer
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = trainer(recipe(tmp_path, db, 100000))
    try:
        wait_for(lambda: q(con, "SELECT COUNT(*) FROM consumed")[0][0] >= 2
                 and q(con, "SELECT COUNT(*) FROM items i WHERE NOT EXISTS "
                            "(SELECT 1 FROM labels l WHERE l.item_id=i.id)")[0][0] >= 4, 240, "labels and a backlog")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        pending = {r[0] for r in q(con, "SELECT id FROM items i WHERE NOT EXISTS "
                                        "(SELECT 1 FROM labels l WHERE l.item_id=i.id)")}
        consumed_before = {r[0] for r in q(con, "SELECT label_id FROM consumed")}
        labels_at_kill = q(con, "SELECT COUNT(*) FROM labels")[0][0]
        wait_for(lambda: q(con, "SELECT COUNT(*) FROM labels")[0][0] >= labels_at_kill + 2, 60,
                 "the annotator to keep labeling while the trainer is down")

        second = trainer(recipe(tmp_path, db, 3))
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-2000:]
        wait_for(lambda: not pending - {r[0] for r in q(con, "SELECT item_id FROM labels")}, 120,
                 "the items pending at the kill to be served and labeled")
    finally:
        for p in (first, annotator):
            if p.poll() is None:
                p.kill()
        server.terminate()
        server.wait(10)
    # stored once: one label per item (one annotator), none lost
    assert q(con, "SELECT COUNT(*) FROM labels")[0][0] == q(con, "SELECT COUNT(DISTINCT item_id) FROM labels")[0][0]
    # the audit trail names each label once, and covers every label up to the furthest cursor
    consumed = [r[0] for r in q(con, "SELECT label_id FROM consumed WHERE consumer='dpo/people'")]
    assert len(consumed) == len(set(consumed))
    assert consumed_before <= set(consumed)
    cursor = q(con, "SELECT last_label_id FROM cursors WHERE consumer='dpo/people'")[0][0]
    assert set(consumed) == {r[0] for r in q(con, "SELECT id FROM labels WHERE id <= ?", cursor)}
    assert len(set(consumed) - consumed_before) >= 2  # labels made while the trainer was dead reached it
