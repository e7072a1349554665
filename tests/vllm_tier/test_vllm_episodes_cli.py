"""Episodes on the vLLM backend through the real ``frl train``: guess_number episodes (each turn of every live
episode generated in one vLLM call) and an ``openai``-client agent through the rollout endpoint, whose
generations vLLM serves. vLLM's behaviour log-probs of the sampled tokens (environment tokens masked out) agree
with the trainer's within vLLM's bf16 gap (BF16_TOL, as in test_vllm_grpo_cli.py), so the ids trained are the
ids vLLM sampled, with their log-probs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).parents[2]
BF16_TOL = 5e-3


def train(tmp: Path, recipe: str, positions: int) -> tuple[Path, list[dict], list[dict]]:
    spec = yaml.safe_load((ROOT / "recipes" / recipe).read_text())
    stage = spec["stages"][0]
    stage["rollout"].update(backend="vllm", logprob_mismatch=True,
                            backend_options={"kv_cache_gib": 0.0625, "max_model_len": positions})
    stage["train"]["steps"] = 2
    spec["output_dir"] = str(tmp / "runs")
    if "agent" in stage:
        shutil.copy(ROOT / "recipes" / stage["agent"].split(":")[0], tmp)
    (tmp / "r.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    exe = Path(sys.executable).with_name("frl")
    out = subprocess.run([str(exe), "train", "r.yaml", "--no-progress"], cwd=tmp, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert out.returncode == 0, out.stderr[-3000:]
    run = next((tmp / "runs").iterdir())
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    read = lambda name: [json.loads(x) for x in (run / name).read_text().splitlines()]  # noqa: E731
    return run, read("metrics.jsonl"), read("rollouts.jsonl")


def test_guess_number_episodes_train_on_vllm_with_its_logprobs_of_the_sampled_turns(tmp_path):
    _, metrics, rollouts = train(tmp_path, "guess-number-grpo.yaml", 512)
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2 and all(m["env/errors"] == 0.0 for m in steps)
    assert max(m["rollout/logprob_mismatch"] for m in steps) < BF16_TOL
    # an episode that went on past its first turn holds the environment's reply untrained between two turns
    long = [r for r in rollouts if len(r["episode"]["turns"]) >= 3 and not r["episode"]["bridge_fallback"]]
    assert long, "no episode reached a second turn"
    for r in long:   # spans: [start, end, role, turn] of the completion, the environment's turns untrained
        roles = [role for _, _, role, _ in r["episode"]["spans"]]
        assert roles.count("assistant") >= 2 and set(roles) - {"assistant"}, roles


def test_an_openai_agent_trains_through_the_endpoint_with_vllm_generating(tmp_path):
    _, metrics, rollouts = train(tmp_path, "agent-grpo.yaml", 256)
    steps = [m for m in metrics if "env/agent_calls_mean" in m]
    assert len(steps) == 2 and all(m["env/agent_splits"] == 0.0 and m["reward/agent/error_rate"] == 0.0
                                   for m in steps)
    assert max(m["rollout/logprob_mismatch"] for m in steps) < BF16_TOL
    assert all(r["episode"]["end"] == "done" for r in rollouts)
