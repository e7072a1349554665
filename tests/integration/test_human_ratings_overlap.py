"""GRPO with rollout.overlap and a human rating source (the combination that used to stop at the first
rating): ratings of earlier steps' rollouts come back with the behaviour log-probs and policy version they
were sampled with, and the core importance-weights them like any one-step-off rollout. Through the real
`frl train`, with people simulated by the annotator over HTTP in another process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore


def test_grpo_one_step_off_trains_on_human_ratings_with_importance_weights(tmp_path):
    db = tmp_path / "labels.sqlite"
    token = LabelStore(db).add_annotator("sim")
    server, url = spawn(db)
    annotator = subprocess.Popen([sys.executable, "-m", "frl_plugins.rewards.human.annotator", "--url", url,
                                  "--token", token], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: rated
        seed: 3
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition, size: 32}}}}
            rewards:
              sources:
                - {{name: people, type: human, task: rating, db: {db}, per_step: 8, mode: blocking, timeout: 30}}
            rollout: {{num_generations: 4, max_new_tokens: 4, overlap: 1}}
            train: {{steps: 5, batch_size: 4, lr: 1.0e-3}}
            eval: {{num_prompts: 4}}
        """))
    try:
        out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress"],
                             capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                                 "OMP_NUM_THREADS": "1"})
    finally:
        annotator.kill()
        server.terminate()
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if s.get("feedback/size", 0) > 0]
    assert len(trained) >= 3, [s.get("feedback/size") for s in steps]
    # every rated rollout carried its behaviour log-probs back from the store, and was weighted
    assert all(s["importance/rows_without_behaviour"] == 0.0 for s in trained)
    assert all(0.0 < s["importance/weight_mean"] <= 3.0 for s in trained)
    assert max(s["rollout/staleness_max"] for s in trained) >= 1.0   # ratings of rollouts an update or more old
