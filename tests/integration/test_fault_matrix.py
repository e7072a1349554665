"""The fault matrix: what a run folder or a run meets besides a clean kill (the crash matrix's subject),
each through the real ``frl``: a checkpoint with flipped bytes or a truncated file, exploding weights,
a full disk while writing a checkpoint, the stage output, final/, the status, the metrics, a non-finite
batch, a plot or an export, a torn last line of metrics.jsonl.
Each ends in one line that says what happened, a status that is not "finished" unless the run truly
finished, and nothing lost that a later ``--resume`` needs.

One SFT stage of 6 steps on a tiny model, a checkpoint every 2 steps; the damaged runs are copies of
one run killed after step 5 (checkpoints at steps 2 and 4).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from crash_at import ENV, crashed, frl, tree_hash
from safetensors.torch import load_file

import feedback_rl
from feedback_rl.plugins import get_plugin_manager
from feedback_rl.run import checkpoint as ckpt
from feedback_rl.commands.train import train_recipe


def recipe(folder: Path, lr: str = "1.0e-2", health: str = "{}") -> Path:
    path = folder / "fault.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: fault
        seed: 3
        output_dir: {folder / 'runs'}
        model: {{path: builtin:tiny-gpt2, tiny: {{n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}}}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {{generator: addition, size: 24}}}}
            train: {{steps: 6, batch_size: 4, lr: {lr}}}
            eval: {{num_prompts: 4}}
            checkpoint: {{every: 2, keep: 2}}
            health: {health}
        """))
    return path


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def one_line(out: subprocess.CompletedProcess, code: int) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    out = frl("train", recipe(tmp), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "runs" / "fault"


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("killed")
    out = crashed("step:sft:5", "train", recipe(tmp), "--no-progress")
    assert out.returncode == -9, out.stderr[-2000:]
    run = tmp / "runs" / "fault"
    assert [p.name for p in ckpt.complete(ckpt.folder(run))] == ["00-sft-step0000002", "00-sft-step0000004"]
    return run


def copy_of(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The run copied into ``tmp_path/runs``, and a recipe that writes there."""
    shutil.copytree(run, tmp_path / "runs" / run.name)
    return tmp_path / "runs" / run.name, recipe(tmp_path)


def flip(path: Path, count: int = 400) -> None:
    """``count`` bytes in the middle of ``path`` inverted: the size stays the same."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + count] = bytes(b ^ 0xFF for b in data[mid:mid + count])
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- verified checkpoints

def test_flipped_bytes_in_the_latest_checkpoint_are_named_and_the_run_resumes_exactly_from_the_one_before(
        straight, killed, tmp_path):
    run, path = copy_of(killed, tmp_path)
    weights = run / "checkpoints" / "00-sft-step0000004" / "policy" / "model.safetensors"
    flip(weights)
    out = frl("train", path, "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"warning: checkpoint 00-sft-step0000004 is damaged: {weights} changed since it was saved "
            "(its sha256 differs, same size)\n") in out.stdout
    assert f"run: {run} (resuming from checkpoint 00-sft-step0000002, the newest intact one)\n" in out.stdout
    want, got = load_file(straight / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    assert metrics(run) == metrics(straight)
    assert status(run)["status"] == "finished"


def test_each_truncated_file_of_a_checkpoint_or_of_the_stage_output_it_names_is_found(killed, straight, tmp_path):
    run, _ = copy_of(killed, tmp_path / "killed")
    newest = run / "checkpoints" / "00-sft-step0000004"
    files = sorted(p for p in newest.rglob("*") if p.is_file() and p.name != ckpt.COMPLETE)
    assert {"trainer_state.pt", "model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in files}
    done, _ = copy_of(straight, tmp_path / "done")  # its last checkpoint names the stage output, stages/sft
    assert ckpt.latest(done).name == "01-done"
    outputs = sorted(p for p in (done / "stages" / "sft").rglob("*") if p.is_file())
    for folder, f, fallback in [(run, f, "00-sft-step0000002") for f in files] + \
                               [(done, f, "00-sft-step0000006") for f in outputs]:
        good = f.read_bytes()
        f.write_bytes(good[: len(good) // 2])
        found, damaged = ckpt.intact(folder)
        assert found is not None and found.name == fallback, f
        assert damaged == [f"checkpoint {ckpt.latest(folder).name} is damaged: {f} has {len(good) // 2} bytes, "
                           f"{len(good)} when saved"]
        f.write_bytes(good)
        assert ckpt.intact(folder) == (ckpt.latest(folder), [])


def test_with_no_intact_checkpoint_resume_stops_in_one_line_and_touches_nothing(killed, tmp_path):
    run, path = copy_of(killed, tmp_path)
    state = run / "checkpoints" / "00-sft-step0000004" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    flip(run / "checkpoints" / "00-sft-step0000002" / "policy" / "model.safetensors")
    before = tree_hash(run)
    line = one_line(frl("train", path, "--resume", "--no-progress"), 2)
    assert line.startswith(f"error: cannot resume {run}: checkpoint 00-sft-step0000004 is damaged: {state} has "
                           "1000 bytes, ")
    assert "(and 1 older: checkpoint 00-sft-step0000002 is damaged: " in line
    assert line.endswith(f"no intact checkpoint is left to resume from; start a new run with `frl train {path} --no-progress` "
                         "(without --resume)")
    assert tree_hash(run) == before  # never "finished" over damaged weights


# ---------------------------------------------------------------- exploding weights

def test_exploding_weights_stop_the_stage_within_a_few_steps_instead_of_finishing_over_garbage(tmp_path):
    """lr 1e8: step 1 blows the weights up and every later step is non-finite. The default limit (3 steps
    in a row) stops the run at step 4, not "finished" with a garbage final/ after 29 skipped steps."""
    path = recipe(tmp_path, lr="1.0e8")
    path.write_text(path.read_text().replace("steps: 6,", "steps: 30,"))
    out = frl("train", path, "--no-progress")
    run = tmp_path / "runs" / "fault"
    line = one_line(out, 1)
    assert line == (f"stopped: stage 'sft' step 4: 3 steps in a row had a non-finite loss or gradient and were "
                    f"skipped (health.skip_limit.consecutive: 3): the weights have likely diverged (is train.lr "
                    f"too high?); the batches are saved in {run / 'bad_batches'}")
    assert status(run)["status"] == "stopped" and status(run)["reason"] == line.removeprefix("stopped: ")
    assert not (run / "final").exists()
    # one warning: the next skips fall within health.warn_every (50)
    assert [w for w in out.stdout.splitlines() if w.startswith("warning:")] == [
        f"warning: stage 'sft' step 2: non-finite loss or gradient; step skipped (1 so far this stage); "
        f"the batches are saved in {run / 'bad_batches'}"]
    assert sorted(p.name for p in (run / "bad_batches").iterdir()) == [f"sft-step{s}-mb0.pt" for s in (2, 3, 4)]


def test_a_share_of_skipped_steps_stops_the_stage_and_the_warning_repeats_every_warn_every_steps(tmp_path):
    path = recipe(tmp_path, lr="1.0e8", health="{warn_every: 3, skip_limit: {consecutive: 100, share: 0.5}}")
    path.write_text(path.read_text().replace("steps: 6,", "steps: 12,"))
    out = frl("train", path, "--no-progress")
    run = tmp_path / "runs" / "fault"
    assert one_line(out, 1).startswith("stopped: stage 'sft' step 8: 7 of the stage's 12 steps had a non-finite "
                                       "loss or gradient and were skipped (health.skip_limit.share: 0.5 allows 6)")
    warned = [w.split(":")[1] for w in out.stdout.splitlines() if w.startswith("warning:")]
    assert warned == [" stage 'sft' step 2", " stage 'sft' step 5"]
    assert status(run)["status"] == "stopped"


# ---------------------------------------------------------------- a torn last line (what kill -9 leaves)

def test_frl_plot_and_frl_runs_read_past_a_torn_last_line_of_metrics(killed, tmp_path):
    run, _ = copy_of(killed, tmp_path)
    log = run / "metrics.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"global_step": 7, "feedback/size": 4.0, "loss": 0.81')  # cut mid-write
    out = frl("plot", run)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{run / 'plots' / 'loss.png'}\n" in out.stdout
    listed = frl("runs", "--dir", tmp_path / "runs")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:4] == ["fault", "killed", "sft", "5"]
    # a broken line with whole lines after it is no torn write: it is still named
    lines = whole.splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + "{broken\n" + "".join(lines[2:]))
    assert one_line(frl("plot", run), 2) == f"error: {log}:3: not valid JSON"


# ---------------------------------------------------------------- a full disk, a second Ctrl-C

def faulty(fault: str, *args) -> subprocess.CompletedProcess:
    """``frl ARGS`` meeting ``fault`` (see fault_at.py)."""
    return subprocess.run([sys.executable, str(Path(__file__).with_name("fault_at.py")), fault, *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=300)


CKPT = "{run}/checkpoints/.tmp-00-sft-step0000004"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"
FAULTS = [  # the fault, the exit code, the line it ends in (before "; make room..."), the status, where --resume continues
    ("enospc:.tmp-00-sft-step0000004/policy/model.safetensors@1", 1,
     f"error: cannot write {CKPT}/policy/model.safetensors (checkpoint 00-sft-step0000004): {SAFETENSORS_FULL}; "
     "the unfinished checkpoint was removed", "failed", "00-sft-step0000002"),
    # the stage's output (the model the next stage starts from) and the run's final/: whole or absent
    ("enospc:stages/.tmp-sft/model.safetensors@1", 1,
     f"error: cannot write {{run}}/stages/.tmp-sft/model.safetensors (the output of stage 'sft'): {SAFETENSORS_FULL}; "
     "the unfinished folder was removed", "failed", "00-sft-step0000006"),
    ("enospc:.tmp-final/model.safetensors@1", 1,
     f"error: cannot write {{run}}/.tmp-final/model.safetensors (the run's final model): {SAFETENSORS_FULL}; "
     "the unfinished folder was removed", "failed", "01-done"),
    ("enospc:.tmp-final/tokenizer_config.json@1", 1,  # Python's write names no file: the folder is named
     "error: cannot write {run}/.tmp-final (the run's final model): No space left on device; "
     "the unfinished folder was removed", "failed", "01-done"),
    ("enospc:.tmp-00-sft-step0000004/trainer_state.pt@1", 1,  # torch's words; on a full disk: No space left...
     f"error: cannot write {CKPT}/trainer_state.pt (checkpoint 00-sft-step0000004): [enforce fail at "
     "inline_container.cc:672] . unexpected pos 576 vs 534; the unfinished checkpoint was removed", "failed",
     "00-sft-step0000002"),
    # the disk fills at step 4's metrics line and stays full: the status is rewritten in place
    ("enospc:metrics.jsonl@5,status.json.tmp@2", 1,
     "error: cannot write {run}/metrics.jsonl (the step's metrics): No space left on device", "failed",
     "00-sft-step0000002"),
    # trained to the end, final/ written, and no room for the status at all: not "finished"
    ("enospc:status.json.tmp@2,status.json@1", 1,
     "error: cannot write {run}/status.json (the run's status, 'finished'): No space left on device", "running",
     "01-done"),
    ("sigint2:sft:3", 130,
     "aborted: a second signal stopped the run at once: checkpoint 00-sft-step0000003 was abandoned unfinished and "
     "removed; --resume continues from checkpoint 00-sft-step0000002", "interrupted", "00-sft-step0000002"),
]


@pytest.mark.parametrize("fault,code,said,state,resumes_from", FAULTS, ids=[f[0].split("@")[0] for f in FAULTS])
def test_a_full_disk_or_a_second_ctrl_c_ends_in_one_line_and_resume_still_reaches_the_uninterrupted_result(
        straight, tmp_path, fault, code, said, state, resumes_from):
    path, run = recipe(tmp_path), tmp_path / "runs" / "fault"
    line = one_line(faulty(fault, "train", path, "--no-progress"), code)
    go_on = f"frl train {path} --no-progress --resume {run}"
    assert line == said.format(run=run) + (f"; make room, then continue with: {go_on}" if code == 1 else f": {go_on}")
    assert status(run)["status"] == state
    if state != "running":  # the status says why, naming the file or the checkpoint
        named = {"failed": said.format(run=run).split(" ")[3], "interrupted": "checkpoint 00-sft-step0000003"}[state]
        assert named in status(run)["reason"]
    assert [p for p in run.rglob("*") if ".tmp" in p.name] == []  # no unfinished file or folder is left
    out = frl("train", path, "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"run: {run} (resuming from checkpoint {resumes_from})\n" in out.stdout
    want, got = load_file(straight / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    assert metrics(run) == metrics(straight)
    assert status(run)["status"] == "finished"


def test_no_room_for_a_non_finite_batch_is_one_line_and_resume_reaches_the_same_stop_with_the_skips_counted(
        tmp_path):
    """A bad batch that cannot be saved fails the run rather than warning: it is small beside a checkpoint,
    so a disk without room for it has none for the next checkpoint, and the steps until then would be lost
    anyway. The skip budget carries over: resumed at step 2's checkpoint (one skip so far), the run stops
    at step 4, as the run that met no full disk did (test_exploding_weights_...)."""
    path = recipe(tmp_path, lr="1.0e8")
    path.write_text(path.read_text().replace("steps: 6,", "steps: 30,"))
    run = tmp_path / "runs" / "fault"
    batch = run / "bad_batches" / "sft-step3-mb0.pt"
    line = one_line(faulty("enospc:sft-step3-mb0.pt.tmp@1", "train", path, "--no-progress"), 1)
    assert line == (f"error: cannot write {batch} (the non-finite batch of stage 'sft' step 3, kept for inspection): "
                    "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534; make room, then continue "
                    f"with: frl train {path} --no-progress --resume {run}")
    assert status(run)["status"] == "failed" and str(batch) in status(run)["reason"]
    assert sorted(p.name for p in (run / "bad_batches").iterdir()) == ["sft-step2-mb0.pt"]  # no half-written one
    out = frl("train", path, "--resume", "--no-progress")
    assert f"run: {run} (resuming from checkpoint 00-sft-step0000002)\n" in out.stdout
    assert one_line(out, 1).startswith("stopped: stage 'sft' step 4: 3 steps in a row had a non-finite loss ")
    assert sorted(p.name for p in (run / "bad_batches").iterdir()) == [f"sft-step{s}-mb0.pt" for s in (2, 3, 4)]
    assert status(run)["status"] == "stopped"


def test_no_room_for_a_plot_or_an_export_is_one_line_naming_the_file_and_leaves_no_half_written_one(
        straight, tmp_path):
    run, _ = copy_of(straight, tmp_path)
    line = one_line(faulty("enospc:plots/loss.png.tmp@1", "plot", run), 1)
    assert line == f"error: cannot write {run / 'plots' / 'loss.png'} (the loss plot): No space left on device"
    assert [p.name for p in (run / "plots").iterdir()] == []
    out = tmp_path / "copied"
    line = one_line(faulty("enospc:.tmp-copied/model.safetensors@1", "export", run, out), 1)
    assert line == (f"error: cannot write {tmp_path / '.tmp-copied' / 'model.safetensors'} (the export of "
                    f"{run / 'final'}): No space left on device; the unfinished folder was removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fault.yaml", "runs"]  # neither the export nor its .tmp-
    assert frl("export", run, out).returncode == 0 and (out / "model.safetensors").is_file()


def test_no_room_for_the_built_in_model_names_it_and_removes_the_fresh_folder(tmp_path):
    """The first write of a fresh run: the line names the model folder, not the run folder, and proposes no
    resume (the folder held nothing to resume, and is gone)."""
    path, run = recipe(tmp_path), tmp_path / "runs" / "fault"
    line = one_line(faulty("enospc:base_model.tmp/model.safetensors@1", "train", path, "--no-progress"), 1)
    assert line == (f"error: cannot write {run / 'base_model'} (the built-in model builtin:tiny-gpt2): "
                    f"{SAFETENSORS_FULL}")
    assert not run.exists()


class CtrlCAtStart:
    @feedback_rl.hookimpl
    def frl_run_start(self, run, recipe):
        raise KeyboardInterrupt


def test_a_ctrl_c_before_the_first_step_says_the_fresh_folder_was_removed_and_proposes_no_resume(tmp_path):
    pm = get_plugin_manager()
    pm.register(CtrlCAtStart())
    run = tmp_path / "runs" / "fault"
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_recipe(recipe(tmp_path), pm=pm)
    assert str(stopped.value) == f"stopped before its first step; {run} was removed (nothing in it to resume)"
    assert not run.exists()
