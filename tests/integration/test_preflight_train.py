"""frl train reads every data file once, before any model loads, and the engine trains on those rows; a batch
larger than its data is said before any model loads."""
import os
import subprocess
import sys
import textwrap

from feedback_rl.rows import readers
from feedback_rl.commands.cli import main


def test_each_data_file_is_read_once_for_the_whole_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "sft.jsonl").write_text('{"prompt": "1+1=", "completion": "2", "answer": "2"}\n'
                                        '{"prompt": "2+2=", "completion": "4", "answer": "4"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: once
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: sft.jsonl, eval: sft.jsonl}}
            train: {{steps: 1, batch_size: 2}}
          - name: grpo
            optimizer: grpo
            data: {{train: sft.jsonl, eval: sft.jsonl}}
            rewards: {{sources: [{{name: e, type: rule, check: exact}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 2}}
            train: {{steps: 1, batch_size: 2}}
            health: {{max_truncated_rate: null}}
        """))
    reads = []
    real = readers.read_file
    monkeypatch.setattr(readers, "read_file", lambda p: reads.append(p.name) or real(p))
    assert main(["train", str(path), "--no-progress"]) == 0, capsys.readouterr().err
    assert reads == ["sft.jsonl"]  # four uses (two stages, train and eval), one read
    assert (tmp_path / "runs" / "once" / "final" / "config.json").is_file()


def test_a_dataset_smaller_than_its_batch_gets_one_warning_naming_the_batch_size(tmp_path):
    # one row at batch_size 16 trains on that row 16 times a step: allowed, but never without a word
    (tmp_path / "one.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    (tmp_path / "r.yaml").write_text(textwrap.dedent("""\
        name: small
        stages:
          - name: sft
            optimizer: sft
            data: {train: one.jsonl}
            train: {steps: 1, batch_size: 16}
        """))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "warning: r.yaml:6: stages[0].train.batch_size: 16 is more than the 1 row of one.jsonl: each step repeats "
        "rows (up to 16 times); lower it to 1 or add rows"], out.stderr
