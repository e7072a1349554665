"""How the tier's training tests run the bridge: `frl train` of a GRPO recipe on a verifiers v1 taskset, in a
subprocess, offline, with a plugin that writes the rollouts as the loop hands them to scoring and an agent that
writes what verifiers holds of each episode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from feedback_rl.modeling.tiny import build_tiny_gpt2
from plugin_site import install

PLUGIN = Path(__file__).parents[1] / "integration" / "rollout_ids_plugin.py"

RECIPE = """
name: vf-grpo
seed: 0
output_dir: runs
model: {{path: {model}}}
stages:
  - name: grpo
    optimizer: {{type: grpo, beta: 0.0}}
    data: {{train: {{verifiers: {taskset}}}}}
    agent: {{function: agent.py:agent, timeout_s: 240}}
    rewards: {{sources: [{{name: verifiers, type: environment}}]}}
    rollout: {{num_generations: 2, max_new_tokens: {max_tokens}, temperature: {temperature}}}
    train: {{steps: 2, batch_size: 2, lr: 1.0e-3}}
    health: {{max_truncated_rate: null, max_zero_variance_groups: null, min_grad_norm: null}}
"""

# the recipe's agent: the bridge, and a line per episode with what verifiers holds of it
AGENT = '''
import json, os
from frl_plugins.environments.verifiers_bridge.agent import taskset_agent

bridge = taskset_agent(max_turns={max_turns}, client={client!r}, tokenizer={model!r}, renderer={renderer!r},
                       sampling={{"max_tokens": {max_tokens}}})


def agent(row, client):
    trace = bridge.episode(row, client).traces[0]
    (branch,) = trace.branches
    calls = [[[c.name, json.loads(c.arguments)] for c in m.tool_calls or []] if m.role == "assistant" else None
             for m in branch.messages]
    with open(os.environ["AGENT_LOG"], "a") as f:
        f.write(json.dumps({{"session": trace.id, "ids": branch.token_ids, "sampled": branch.sampled_mask,
                            "messages": [[m.role, m.content] for m in branch.messages], "calls": calls,
                            "turns": trace.num_turns, "reply": branch.messages[-1].content,
                            "reward": trace.reward}}) + "\\n")
    return trace.reward
'''


class Trained(NamedTuple):
    folder: Path            # the run's folder
    metrics: list[dict]     # its metrics.jsonl
    recorded: list[dict]    # its rollouts.jsonl (what a user reads: the transcript, the episode's turns)
    rollouts: list[dict]    # the rollouts as the loop handed them to scoring: ids, mask, session (uid)
    episodes: list[dict]    # what verifiers held of each episode (the agent's log)


def train(tmp: Path, taskset: str, max_turns: int, context: int = 64, text_that_renders_back: bool = False, *,
          model: Path | None = None, client: str = "train", renderer: dict | None = None, max_tokens: int = 6,
          temperature: float = 1.0) -> Trained:
    """`frl train` of the recipe on ``taskset`` in a subprocess, offline, with a tiny model of ``context``
    positions (or the ``model`` folder given); ``text_that_renders_back``: its generation config suppresses what
    verifiers' DefaultRenderer would not render back to the sampled ids (special tokens other than EOS).
    ``client``: verifiers' client ("train": token ids to the generate route;
    "eval": chat completions) and ``renderer`` (the training client's); ``max_tokens`` and ``temperature``: each
    call's sampling."""
    if model is None:
        model = build_tiny_gpt2(tmp / "model", seed=0, n_positions=context)
    if text_that_renders_back:
        from transformers import AutoTokenizer, GenerationConfig

        tok, gen = AutoTokenizer.from_pretrained(model), GenerationConfig.from_pretrained(model)
        gen.suppress_tokens = [tok.pad_token_id, tok.bos_token_id, tok.unk_token_id]
        gen.save_pretrained(model)
    (tmp / "agent.py").write_text(AGENT.format(model=str(model), max_turns=max_turns, client=client,
                                               renderer=renderer, max_tokens=max_tokens))
    (tmp / "recipe.yaml").write_text(RECIPE.format(model=json.dumps(str(model)), taskset=taskset,
                                                   max_tokens=max_tokens, temperature=temperature))
    site = install(tmp / "site", PLUGIN, "frl_rollout_ids", "rollout_ids")
    offline = {key: "http://127.0.0.1:9" for key in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")}
    env = {**os.environ, **offline, "NO_PROXY": "127.0.0.1,localhost", "UV_CACHE_DIR": str(tmp / "uv-cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(site), os.environ["PYTHONPATH"]]),
           "AGENT_LOG": str(tmp / "agent.jsonl"), "FRL_ROLLOUT_IDS": str(tmp / "rollouts.jsonl")}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "recipe.yaml"],
                         capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    folder = tmp / "runs" / "vf-grpo"
    return Trained(folder, read(folder / "metrics.jsonl"), read(folder / "rollouts.jsonl"),
                   read(tmp / "rollouts.jsonl"), read(tmp / "agent.jsonl"))


def finished_two_steps(run: Trained) -> list[dict]:
    """The run finished two GRPO steps of 2 rows x 2 episodes, every episode scored; the steps' metrics."""
    assert json.loads((run.folder / "status.json").read_text())["status"] == "finished"
    steps = [m for m in run.metrics if "loss" in m]
    assert len(steps) == 2 and all(m["reward/verifiers/error_rate"] == 0.0 for m in steps)
    assert len(run.rollouts) == len(run.recorded) == len(run.episodes) == 2 * 2 * 2
    return steps
