"""`train.padding_free: true` through the real ``frl train``: GRPO on the tiny model scores packed rows and
trains as the padded run does (same rollouts, the same first-step loss and entropy)."""
import json
import os
import subprocess
import sys
import textwrap

RECIPE = """\
name: pf-{on}
seed: 3
output_dir: {runs}
stages:
  - name: grpo
    optimizer: {{type: grpo, beta: 0.04}}
    data: {{train: {{generator: addition}}}}
    rewards:
      sources:
        - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
    rollout: {{num_generations: 4, max_new_tokens: 8}}
    train: {{steps: 2, batch_size: 4, lr: 1.0e-3, padding_free: {on}}}
    eval: {{num_prompts: 4}}
"""

# the CLI in a subprocess, counting the forwards that ran packed (packing.rows_for gave rows) into a file at exit
CODE = textwrap.dedent("""\
    import atexit, sys
    from feedback_rl.modeling import packing
    calls, rows_for = [], packing.rows_for
    def spy(*a, **k):
        rows = rows_for(*a, **k)
        calls.extend([1] if rows is not None else [])
        return rows
    packing.rows_for = spy
    atexit.register(lambda: open("packed_calls", "w").write(str(len(calls))))
    from feedback_rl.commands.cli import main
    sys.exit(main())
""")


def train(tmp_path, on: str) -> tuple[list[dict], int]:
    folder = tmp_path / on
    folder.mkdir()
    (folder / "r.yaml").write_text(RECIPE.format(on=on, runs=tmp_path / "runs"))
    out = subprocess.run([sys.executable, "-c", CODE, "train", "r.yaml", "--no-progress"], cwd=folder,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "attend to each other" not in out.stderr   # the tiny GPT-2 (sdpa) passes the probe
    metrics = [json.loads(line) for line in (tmp_path / "runs" / f"pf-{on}" / "metrics.jsonl").read_text().splitlines()]
    return [m for m in metrics if "loss" in m], int((folder / "packed_calls").read_text())


def test_grpo_trains_padding_free_through_the_cli_as_the_padded_run_does(tmp_path):
    packed, packed_calls = train(tmp_path, "true")
    padded, padded_calls = train(tmp_path, "false")
    assert padded_calls == 0 and packed_calls >= 2 * 2   # each step: the reference's and the policy's log-probs
    assert len(packed) == len(padded) == 2
    first, want = packed[0], padded[0]
    assert first["reward/digit/mean"] == want["reward/digit/mean"]   # the same rollouts
    for key in ("loss", "entropy", "grad_norm"):
        assert abs(first[key] - want[key]) <= 1e-4 * max(1.0, abs(want[key])), (key, first[key], want[key])
    assert packed[1]["kl/sequence"] > 0   # after one update the (packed) reference differs from the policy
