"""Through the real CLI: a DPO trainer on the human source is SIGKILLed after it collected labels past
its last checkpoint; ``frl train --resume`` then trains every label exactly once relative to the
checkpointed weights. Labels handed out after the checkpoint are handed out again, none before it, and
the steps replayed after the checkpoint enqueue no item a second time.

Determinism: the source runs in blocking mode and this test is the only annotator. A step's
compare() waits until its items are labeled, so the trainer sits in step L+1's compare() exactly
while its items are pending: step L has been collected, logged and (if L is even) checkpointed.
The kill comes there, with L = 5 and the last checkpoint at step 4.

The evidence is what the run logged: each step's ``labels_taken`` and the label-id span
(``labels_taken_after``, ``label_cursor``] it came from (metrics.jsonl, cut back on resume).
The same check is run on two resumes that restore the source wrongly, and must fail there:
the source's state dropped (it starts again from the first label: labels before the checkpoint
train twice) and the old behaviour, a cursor kept in the database (it carries on past the labels
taken after the checkpoint: those are lost with the weights that trained on them).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from feedback_rl.plugins import default
from feedback_rl.config.recipe import load
from feedback_rl.run.folder import Run
from feedback_rl.commands.train import train_recipe
from frl_plugins.rewards.human.annotator import decide
from frl_plugins.rewards.human.store import LabelStore

KEY = "source/people/"
KILL_AFTER = 5  # steps logged before the kill; checkpoints every 2 steps, so the last one is at 4


def recipe(tmp_path: Path, out: Path, db: Path, steps: int) -> Path:
    path = tmp_path / f"{out.name}-{steps}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "resume-once", "seed": 0, "output_dir": str(out),
        "model": {"path": "builtin:tiny-gpt2", "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2}},
        "loggers": ["jsonl"],
        "stages": [{
            "name": "dpo", "optimizer": {"type": "dpo"},
            "data": {"train": {"generator": "addition", "split": "train"}},
            "rewards": {"sources": [{"name": "people", "type": "human", "task": "pairwise", "db": str(db),
                                     "per_step": 3, "mode": "blocking", "timeout": 120}]},
            "rollout": {"num_generations": 2, "max_new_tokens": 3},
            "train": {"steps": steps, "batch_size": 4, "lr": 1e-4},
            "checkpoint": {"every": 2, "keep": 2},
            "eval": {"num_prompts": 2},
        }],
    }))
    return path


def cli(path: Path, *extra: str) -> subprocess.Popen:
    """``frl train``; stderr goes to a file (a pipe nobody reads could fill and stall the trainer)."""
    err = open(path.with_suffix(".stderr"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress", *extra],
                            stdout=subprocess.DEVNULL, stderr=err, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.err = err
    return proc


def tail(proc: subprocess.Popen) -> str:
    proc.err.seek(0)
    return proc.err.read()[-3000:]


def label_pending(store: LabelStore) -> int:
    """Label every item waiting for one, as the simulated annotator would; returns how many."""
    n = 0
    while (item := store.next_item("sim")) is not None:
        store.submit(item["id"], "sim", decide(item))
        n += 1
    return n


def pending(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as con:
        return con.execute("SELECT COUNT(*) FROM items i WHERE NOT EXISTS "
                           "(SELECT 1 FROM labels l WHERE l.item_id=i.id)").fetchone()[0]


def steps_logged(run_dir: Path) -> list[dict]:
    """The training steps' lines of metrics.jsonl (eval-only lines carry no source metrics)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x for x in lines if KEY + "labels_taken" in x]


def checkpoint_steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name.rsplit("step", 1)[1]) for p in root.glob("*-step*") if (p / "COMPLETE").exists()) \
        if root.is_dir() else []


def span(line: dict) -> list[int]:
    return list(range(int(line[KEY + "labels_taken_after"]) + 1, int(line[KEY + "label_cursor"]) + 1))


def exactly_once(lines: list[dict], steps: int) -> list[int]:
    """Raise AssertionError unless every step 1..steps is logged once and every label up to the last
    collect was taken by exactly one logged step; returns the label ids in the order trained."""
    assert [int(x["step"]) for x in lines] == list(range(1, steps + 1)), "each step logged exactly once"
    trained = []
    for x in lines:
        # no label changed its choice in this test, so a step takes exactly the fresh ids of its span
        assert x[KEY + "labels_taken"] == len(span(x)), f"step {x['step']}: count and id span disagree"
        trained += span(x)
    twice = sorted({t for t in trained if trained.count(t) > 1})
    assert not twice, f"labels trained twice: {twice}"
    upto = list(range(1, int(lines[-1][KEY + "label_cursor"]) + 1))  # every label up to the last collect
    assert sorted(trained) == upto, f"labels skipped: {sorted(set(upto) - set(trained))}"
    assert sum(x[KEY + "labels_taken"] for x in lines) == len(set(trained)) == lines[-1][KEY + "labels_consumed"]
    return trained


def wait_labeling(store: LabelStore, proc: subprocess.Popen, timeout: float) -> None:
    """Be the annotator until the trainer exits; it must exit 0 in time."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "trainer did not finish in time"
        label_pending(store)
        time.sleep(0.05)
    assert proc.returncode == 0, tail(proc)


def snapshot(tmp_path: Path, run_dir: Path, db: Path, name: str) -> tuple[Path, Path]:
    """A copy of the killed run's folder and label database, for a variant resume."""
    out, vdb = tmp_path / name, tmp_path / f"{name}.sqlite"
    shutil.copytree(run_dir, out / run_dir.name)
    with sqlite3.connect(db) as src, sqlite3.connect(vdb) as dst:
        src.backup(dst)
    return out, vdb


def resume_variant(tmp_path: Path, out: Path, vdb: Path, source_state) -> list[dict]:
    """Resume a snapshot of the killed run for one step, in this process, with the source's
    checkpointed state replaced by ``source_state(state)``; returns the steps it logged."""
    run_dir = out / "resume-once"
    (ckpt,) = [p for p in (run_dir / "checkpoints").glob("*-step*") if p.name.endswith(f"{KILL_AFTER - 1:07d}")]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    state["plugins"]["source:people"] = source_state(state["plugins"]["source:people"])
    torch.save(state, ckpt / "trainer_state.pt")
    # re-record the file this test changed on purpose, or resume takes the checkpoint for a damaged one
    manifest = json.loads((ckpt / "COMPLETE").read_text())
    changed = ckpt / "trainer_state.pt"
    manifest["files"]["trainer_state.pt"] = [changed.stat().st_size, hashlib.sha256(changed.read_bytes()).hexdigest()]
    (ckpt / "COMPLETE").write_text(json.dumps(manifest))
    store, stop = LabelStore(vdb), threading.Event()

    def annotate() -> None:
        while not stop.is_set():
            label_pending(store)
            time.sleep(0.05)
    annotator = threading.Thread(target=annotate)
    annotator.start()
    variant = recipe(tmp_path, out, vdb, KILL_AFTER)
    # the variant runs fewer steps on its own copy of the database: its lock says so, or resume refuses it
    pm, reg = default()
    Run(run_dir.name, run_dir).write_lock(load(variant, [], reg), {})
    try:
        train_recipe(variant, resume=True)
    finally:
        stop.set()
        annotator.join(10)
    return steps_logged(run_dir)


def test_resume_after_a_kill_past_the_checkpoint_trains_each_label_once(tmp_path):
    steps = KILL_AFTER + 3
    db, out = tmp_path / "labels.sqlite", tmp_path / "runs"
    run_dir = out / "resume-once"
    store = LabelStore(db)
    first = cli(recipe(tmp_path, out, db, steps))
    try:
        deadline = time.monotonic() + 120
        while True:  # label step by step; kill when the trainer waits in the step after KILL_AFTER
            assert first.poll() is None, tail(first)
            assert time.monotonic() < deadline, "the trainer did not reach the kill point in time"
            if pending(db) and len(steps_logged(run_dir)) >= KILL_AFTER:
                break
            label_pending(store)
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed = steps_logged(run_dir)
    ckpts = checkpoint_steps(run_dir)
    assert [int(x["step"]) for x in killed] == list(range(1, KILL_AFTER + 1))
    assert ckpts[-1] == KILL_AFTER - 1
    after_ckpt = [i for x in killed[ckpts[-1]:] for i in span(x)]
    assert after_ckpt, "labels were collected after the last checkpoint"
    with sqlite3.connect(db) as con:  # what the old code would have resumed from
        db_cursor = con.execute("SELECT last_label_id FROM cursors WHERE consumer='dpo/people'").fetchone()[0]
    assert db_cursor == after_ckpt[-1]

    copies = {name: snapshot(tmp_path, run_dir, db, name) for name in ("dropped", "db-cursor")}

    second = cli(recipe(tmp_path, out, db, steps), "--resume")
    wait_labeling(store, second, 180)
    lines = steps_logged(run_dir)
    trained = exactly_once(lines, steps)
    # the labels taken after the checkpoint came again, in the first step after it
    assert set(after_ckpt) <= set(span(lines[ckpts[-1]]))
    assert lines[ckpts[-1] - 1] == killed[ckpts[-1] - 1]  # the log up to the checkpoint is untouched
    with sqlite3.connect(db) as con:  # every label made was trained: the last step's collect took all
        assert trained == [r[0] for r in con.execute("SELECT id FROM labels ORDER BY id")]
        # the step replayed after the checkpoint asked people about the same rollouts: it found them queued
        twice = con.execute("SELECT id, prompt, a, b FROM items WHERE EXISTS (SELECT 1 FROM items o WHERE "
                            "o.id < items.id AND o.prompt=items.prompt AND o.a=items.a AND o.b IS items.b AND "
                            "o.meta=items.meta)").fetchall()
    assert not twice, f"items enqueued twice after --resume: {twice}"

    # the same check fails on a resume whose source state is dropped, or taken from the database
    fresh = resume_variant(tmp_path, *copies["dropped"], lambda s: {})
    with pytest.raises(AssertionError, match="trained twice"):
        exactly_once(fresh, KILL_AFTER)
    old = resume_variant(tmp_path, *copies["db-cursor"], lambda s: {**s, "cursor": [db_cursor, s["cursor"][1]]})
    with pytest.raises(AssertionError, match="skipped"):
        exactly_once(old, KILL_AFTER)
    print(f"\nkilled after step {KILL_AFTER}, checkpoint at {ckpts[-1]}: labels {after_ckpt} handed out again; "
          f"{len(trained)} labels over {steps} steps, each once")
