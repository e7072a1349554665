"""A run's output is what the user needs: no library warnings leaking, no empty table, and a lock that
names every plugin's version, under the FRL_LOAD_PLUGINS allowlist too."""
import os
import subprocess
import sys
import textwrap

import yaml


def test_a_run_prints_no_library_warning_and_no_empty_table(tmp_path):
    # the GRPO source is routed away from every row: no feedback, so no optimizer step, at step 1 (the case
    # that made torch warn about the order of lr_scheduler.step() and optimizer.step())
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: quiet
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {{generator: addition, split: train, size: 8}}}}
            train: {{steps: 2, batch_size: 4}}
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition, split: train, size: 8}}}}
            rewards: {{sources: [{{name: e, type: rule, check: exact, tasks: [none]}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 4}}
            train: {{steps: 2, batch_size: 2}}
            health: {{max_truncated_rate: null}}
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FRL_LOAD_PLUGINS": "rule,sft,grpo,hf,jsonl"}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Warning" not in out.stderr and "lr_scheduler" not in out.stderr, out.stderr
    assert out.stdout.splitlines()[-2:] == ["status: finished", f"model: {tmp_path / 'runs' / 'quiet' / 'final'}"]
    assert "metric" not in out.stdout  # no header over an empty table: no stage had eval data
    lock = yaml.safe_load((tmp_path / "runs" / "quiet" / "recipe.lock.yaml").read_text())
    assert set(lock["plugins"]) == {"rule", "sft", "grpo", "hf", "jsonl"}
    assert all(v.startswith("feedback_rl ") for v in lock["plugins"].values()), lock["plugins"]
