"""docs/plugins.md's example (a reward source and an optimizer written from scratch against the public API,
registered in-process with ``feedback_rl.train``) runs exactly as printed."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def example_files() -> dict[str, str]:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    section = doc.split("### An optimizer and a reward source from scratch", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S):
        name = block.splitlines()[0].lstrip("# ").strip()
        files[name] = block
    return files


def test_the_plugin_guide_example_trains_as_printed(tmp_path):
    files = example_files()
    assert set(files) == {"my_plugins.py", "train.py", "short.yaml"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    status, run_dir = done.stdout.split()[-2:]
    assert status == "finished"
    steps = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "loss" in s]
    assert len(trained) == 4 and all("advantage_abs" in s and "reward/short/mean" in s for s in trained)
