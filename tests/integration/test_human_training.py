"""Live training from human labels: the simulated annotator labels over HTTP in another process
while `frl train` runs SFT then DPO from recipes/rlhf-human.yaml; held-out exact match improves."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore

ROOT = Path(__file__).resolve().parents[2]


def start_annotator(url: str, token: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "frl_plugins.rewards.human.annotator", "--url", url,
                             "--token", token, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ~3 minutes on 2 cores: SFT 600 steps on 400 labelled sums (it plateaus; RL from a model caught in the
# middle of learning the algorithm only hurts), then DPO 300 steps on the annotator's labels.
@pytest.mark.slow
def test_dpo_from_live_human_labels_improves_held_out_exact_match(tmp_path):
    db = tmp_path / "labels.sqlite"
    token = LabelStore(db).add_annotator("sim")
    server, url = spawn(db)
    annotator = start_annotator(url, token)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "feedback_rl.commands.cli", "train", str(ROOT / "recipes/rlhf-human.yaml"), "--no-progress",
             "--set", f"output_dir={tmp_path / 'runs'}", "--set", f"stages.dpo.rewards.sources.people.db={db}"],
            capture_output=True, text=True, timeout=1800)
    finally:
        annotator.kill()
        server.terminate()
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    dpo = json.loads((run_dir / "status.json").read_text())["stages"]["dpo"]
    before, after = dpo["eval_before"]["eval/exact_match"], dpo["eval_after"]["eval/exact_match"]
    print(f"held-out exact match: {before:.3f} -> {after:.3f}")
    assert after > before + 0.02  # 500 held-out sums: one standard error is ~2 points
    con = sqlite3.connect(db)
    labels = con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    consumed = con.execute("SELECT COUNT(*) FROM consumed").fetchone()[0]
    assert labels > 100 and consumed > 0.8 * labels
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in steps if m.get("stage") == "dpo" and m.get("feedback/size", 0) > 0]
    assert len(trained) > 250  # labels reached the optimizer on most steps
