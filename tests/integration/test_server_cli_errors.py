"""The server commands' user errors through the real `frl` CLI: one line, exit code 2, no traceback, no model load."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from frl_plugins.rewards.human.store import LabelStore

FRL = os.path.join(os.path.dirname(sys.executable), "frl")


def frl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([FRL, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    for w in words:
        assert w in out, out
    return out


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_frl_serve_on_a_port_in_use(tiny_model_dir, taken_port):
    r = frl("serve", str(tiny_model_dir), "--port", str(taken_port))
    assert_one_line_error(r, f"127.0.0.1:{taken_port} is already in use", "--port")


def test_frl_label_serve_on_a_port_in_use(tmp_path, taken_port):
    LabelStore(tmp_path / "l.sqlite")
    r = frl("label", "serve", "--db", str(tmp_path / "l.sqlite"), "--port", str(taken_port))
    assert_one_line_error(r, f"127.0.0.1:{taken_port} is already in use")


def test_frl_serve_a_path_with_no_model(tmp_path):
    (tmp_path / "runs").mkdir()
    r = frl("serve", "runs/nope/final", cwd=tmp_path)
    assert_one_line_error(r, "no model at runs/nope/final")
    r = frl("serve", "runs/nope", cwd=tmp_path)  # looks like a hub id, but runs/ is a folder here
    assert_one_line_error(r, "no model at runs/nope")


def test_frl_serve_a_run_folder_points_at_its_final(tmp_path, tiny_model_dir):
    run = tmp_path / "runs" / "x"
    shutil.copytree(tiny_model_dir, run / "final")
    (run / "recipe.lock.yaml").write_text("recipe: {}\n")
    r = frl("serve", str(run))
    assert_one_line_error(r, "is a run folder", f"frl serve {run / 'final'}")
    (run / "final").rename(run / "unfinished")
    assert_one_line_error(frl("serve", str(run)), "run folder with no final/")


@pytest.mark.parametrize("remove,named", [("model.safetensors", "weights"), ("tokenizer.json", "tokenizer"),
                                          ("config.json", "config.json")])
def test_frl_serve_a_folder_missing_a_part_names_it(tmp_path, tiny_model_dir, remove, named):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / remove).unlink()
    out = assert_one_line_error(frl("serve", str(folder)), f"no model in {folder}", named)
    assert out.count("lacks") == 1


def test_frl_serve_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    assert_one_line_error(frl("serve", str(tmp_path / "notes.txt")), "is a file")


def test_frl_serve_on_a_device_that_is_not_here(tiny_model_dir):
    import torch
    assert_one_line_error(frl("serve", str(tiny_model_dir), "--device", f"cuda:{torch.cuda.device_count()}"),
                          "no such CUDA device")
    assert_one_line_error(frl("serve", str(tiny_model_dir), "--device", "toaster"), "not a device")


def test_frl_label_serve_with_a_missing_db_refuses_unless_create(tmp_path):
    typo = tmp_path / "lables.sqlite"   # the other label commands: tests/unit/test_human_commands.py
    assert_one_line_error(frl("label", "serve", "--db", str(typo)), f"--db {typo}: no such label database",
                          "--create")
    assert not typo.exists()


def test_frl_label_create_makes_the_db_and_a_runs_db_needs_no_flag(tmp_path):
    db = tmp_path / "labels.sqlite"
    r = frl("label", "add-annotator", "me", "--db", str(db), "--create")
    assert r.returncode == 0 and db.exists(), r.stderr
    assert LabelStore(db).annotator_for(r.stdout.strip()) == "me"
    run_db = tmp_path / "runs" / "h" / "labels.sqlite"   # the human source's default, made by the run
    LabelStore(run_db).enqueue("thumbs", "1+1=", "2")
    r = frl("label", "add-annotator", "you", "--db", str(run_db))
    assert r.returncode == 0, r.stderr


def test_frl_label_with_a_db_that_is_not_sqlite(tmp_path):
    bad = tmp_path / "recipe.yaml"
    bad.write_text("name: x\n" * 200)
    assert_one_line_error(frl("label", "export", "--db", str(bad), "--out", str(tmp_path / "o.jsonl")),
                          "not a label database")
