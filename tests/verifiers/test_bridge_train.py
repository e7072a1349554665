"""`frl train` trains GRPO on a verifiers v1 taskset through the core's rollout endpoint, offline: each episode is
one verifiers rollout (the `null` harness's chat program, installed from the wheelhouse) whose interception server
calls verifiers' training client, which renders the prompt with the policy's tokenizer and POSTs token ids to the
endpoint's /inference/v1/generate. What the core trains on is what verifiers sent and was answered."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_rl.modeling.tiny import build_tiny_gpt2

PLUGIN = Path(__file__).parents[1] / "integration" / "rollout_ids_plugin.py"

RECIPE = """
name: vf-grpo
seed: 0
output_dir: runs
model: {{path: {model}}}
stages:
  - name: grpo
    optimizer: {{type: grpo, beta: 0.0}}
    data: {{train: {{verifiers: echo_taskset}}}}
    agent: {{function: agent.py:agent, timeout_s: 240}}
    rewards: {{sources: [{{name: verifiers, type: environment}}]}}
    rollout: {{num_generations: 2, max_new_tokens: 6, temperature: 1.0}}
    train: {{steps: 2, batch_size: 2, lr: 1.0e-3}}
    health: {{max_truncated_rate: null, max_zero_variance_groups: null, min_grad_norm: null}}
"""

# the recipe's agent: the bridge, and a line per episode with what verifiers holds of it
AGENT = '''
import json, os
from frl_plugins.environments.verifiers_bridge.agent import taskset_agent

bridge = taskset_agent(max_turns=1, tokenizer={model!r}, sampling={{"max_tokens": 6}})


def agent(row, client):
    trace = bridge.episode(row, client).traces[0]
    (branch,) = trace.branches
    with open(os.environ["AGENT_LOG"], "a") as f:
        f.write(json.dumps({{"session": trace.id, "ids": branch.token_ids, "sampled": branch.sampled_mask,
                            "reply": branch.messages[-1].content, "reward": trace.reward}}) + "\\n")
    return trace.reward
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vf-grpo")
    model = build_tiny_gpt2(tmp / "model", seed=0)
    (tmp / "agent.py").write_text(AGENT.format(model=str(model)))
    (tmp / "recipe.yaml").write_text(RECIPE.format(model=json.dumps(str(model))))
    site = tmp / "site"
    dist = site / "frl_rollout_ids-0.1.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(PLUGIN, site / "frl_rollout_ids.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: frl-rollout-ids\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[feedback_rl]\nrollout_ids = frl_rollout_ids\n")
    offline = {key: "http://127.0.0.1:9" for key in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")}
    env = {**os.environ, **offline, "NO_PROXY": "127.0.0.1,localhost", "UV_CACHE_DIR": str(tmp / "uv-cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(site), os.environ["PYTHONPATH"]]),
           "AGENT_LOG": str(tmp / "agent.jsonl"), "FRL_ROLLOUT_IDS": str(tmp / "rollouts.jsonl")}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "recipe.yaml"],
                         capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    folder = tmp / "runs" / "vf-grpo"
    return folder, read(folder / "metrics.jsonl"), read(tmp / "rollouts.jsonl"), read(tmp / "agent.jsonl")


def test_grpo_trains_two_steps_on_the_tasksets_episodes(run):
    folder, metrics, rollouts, episodes = run
    assert json.loads((folder / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "loss" in m]
    assert len(steps) == 2 and all(m["reward/verifiers/error_rate"] == 0.0 for m in steps)
    # one generate call per episode, each extending nothing: no split
    assert all(m["env/agent_calls_mean"] == 1.0 and m["env/agent_splits"] == 0.0 for m in steps)
    assert len(rollouts) == len(episodes) == 2 * 2 * 2


def test_the_trained_ids_are_the_ids_verifiers_sent_and_the_policy_sampled(run):
    _, _, rollouts, episodes = run
    told = {e["session"]: e for e in episodes}
    assert len(told) == len(episodes)  # each episode under its own session: the core's id is the trace's
    for r in rollouts:
        e = told[r["uid"]]
        # one call: the prompt verifiers rendered, then the ids the endpoint sampled, all of them trained
        assert r["prompt_ids"] + r["completion_ids"] == e["ids"]
        assert r["mask"] == [1] * len(r["completion_ids"]) and len(r["completion_ids"]) >= 1
        assert e["sampled"] == [False] * len(r["prompt_ids"]) + [True] * len(r["completion_ids"])
        # the episode's reward is the taskset's, computed on the reply the policy sampled
        assert r["episode"]["rewards"][-1] == e["reward"]
