"""Any agent program trains through the rollout endpoint (docs/episodes.md, "Any agent program"): `frl train` on a
recipe whose `agent:` is a plain function in a .py file beside it, written against the official `openai` client.
What the agent was answered (token ids, log-probs) is what the rollouts hold and what trains, and the log-probs
are the policy's own for the ids it sampled."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from plugin_site import install

ROOT = Path(__file__).parents[2]
PLUGIN = Path(__file__).with_name("rollout_ids_plugin.py")

RECIPE = """
name: agent-test
seed: 0
output_dir: runs
model: {{path: "builtin:tiny-gpt2", tiny: {{n_positions: 256}}}}
stages:
  - name: grpo
    optimizer: {{type: grpo, beta: 0.0}}
    data:
      train: {{generator: addition, split: train, size: 40}}
    agent: {agent}
    rewards:
      max_error_rate: 1.0      # the failing agents below fail on purpose
      sources:
        - {{name: agent, type: environment}}
    rollout: {{num_generations: 3, max_new_tokens: 6, temperature: 1.0}}
    train: {{steps: {steps}, batch_size: 2, lr: 1.0e-3}}
    health: {{max_truncated_rate: null, max_zero_variance_groups: null, min_grad_norm: null}}
"""

# a plain agent: two chat calls, the first reply sent back with a new question; it writes what it was answered
SYNC_AGENT = '''
import json, os

def solve(row, client):
    messages = [{"role": "user", "content": row["prompt"]}]
    calls = []
    for question in ("", "Again:"):
        if question:
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": question}]
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=5, logprobs=True)
        choice = r.choices[0]
        reply = choice.message.content
        calls.append({"prompt_ids": r.model_extra["prompt_token_ids"], "ids": choice.model_extra["token_ids"],
                      "logprobs": [t.logprob for t in choice.logprobs.content], "content": reply,
                      "finish": choice.finish_reason})
    line = json.dumps({"session": client.default_headers["X-Session-ID"], "calls": calls})
    with open(os.environ["AGENT_LOG"], "a") as f:
        f.write(line + "\\n")
    return float(len(set(reply)))
'''

# an async agent: one episode in three raises, one hangs past the time limit, one speaks vLLM's token-in route
# exactly as verifiers' training client does (renderers.client.generate)
ASYNC_AGENT = '''
import asyncio, json, os
import httpx2

async def solve(row, client):
    k = int(client.default_headers["X-Session-ID"].rsplit("-", 1)[1])
    if k % 3 == 0:
        raise RuntimeError("the agent broke")
    if k % 3 == 1:
        await asyncio.sleep(60)
    r = await client.chat.completions.create(model="policy", messages=[{"role": "user", "content": row["prompt"]}],
                                             max_tokens=4)
    first = r.model_extra["prompt_token_ids"] + r.choices[0].model_extra["token_ids"]
    base = str(client.base_url).rstrip("/").removesuffix("/v1")
    answers = []
    for ids in (first + r.model_extra["prompt_token_ids"][:3], r.model_extra["prompt_token_ids"]):
        body = {"model": "policy", "token_ids": ids,
                "sampling_params": {"max_tokens": 3, "temperature": 1.0, "stop_token_ids": [2], "logprobs": 1,
                                    "skip_special_tokens": False}}
        raw = await client.post(f"{base}/inference/v1/generate", cast_to=httpx2.Response, body=body,
                                options={"headers": {"X-Session-ID": client.default_headers["X-Session-ID"]}})
        answers.append({"sent": ids, "got": raw.json()})
    models = await client.get("/models", cast_to=object)
    with open(os.environ["AGENT_LOG"], "a") as f:
        f.write(json.dumps({"k": k, "answers": answers, "models": models}) + "\\n")
    return 1.0
'''


def train(tmp_path: Path, agent_source: str, agent_ref: str, steps: int, timeout: float = 300,
          wait_ms: float = 50):
    (tmp_path / "agent.py").write_text(agent_source)
    agent = f"{{function: '{agent_ref}', timeout_s: {timeout}, batch_wait_ms: {wait_ms}}}"
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(agent=agent, steps=steps))
    site = install(tmp_path / "site", PLUGIN, "frl_rollout_ids", "rollout_ids")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(site),
           "AGENT_LOG": str(tmp_path / "agent.jsonl"), "FRL_ROLLOUT_IDS": str(tmp_path / "rollouts.jsonl")}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "recipe.yaml"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "agent-test"
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    return run, read(run / "metrics.jsonl"), read(tmp_path / "rollouts.jsonl"), read(tmp_path / "agent.jsonl")


@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    # a long batch wait: a batch closes when every running episode has asked, so each step's two rounds of calls
    # are two backend calls however slow the machine is
    return train(tmp_path_factory.mktemp("sync"), SYNC_AGENT, "agent.py:solve", steps=2, wait_ms=10_000)


def test_a_plain_openai_agent_trains_and_its_recorded_ids_are_what_the_policy_sampled(sync_run):
    run, metrics, rollouts, agents = sync_run
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "env/agent_calls_mean" in m]
    assert len(steps) == 2 and all(m["env/agent_calls_mean"] == 2.0 and m["env/agent_splits"] == 0.0 for m in steps)
    assert all("loss" in m and m["reward/agent/error_rate"] == 0.0 for m in steps)
    assert len(rollouts) == len(agents) == 2 * 2 * 3
    # the 6 episodes' first calls were generated in one backend call, their second calls in another
    assert [m["env/agent_backend_calls"] for m in steps] == [2.0, 2.0]
    told = {a["session"]: a["calls"] for a in agents}
    for r in rollouts:
        first, second = told[r["uid"]]
        # the rollout's prompt is the first call's prompt; its trained ids are the ids each call was answered
        # with, and their behaviour log-probs the log-probs the agent read; the agent's own turn sits between,
        # untrained, and the second call's prompt extends the first call's prompt and reply verbatim
        assert r["prompt_ids"] == first["prompt_ids"]
        opened = first["prompt_ids"] + first["ids"]
        assert second["prompt_ids"][: len(opened)] == opened
        seq = r["prompt_ids"] + r["completion_ids"]
        assert seq == second["prompt_ids"] + second["ids"]
        trained = [t for t, m in zip(r["completion_ids"], r["mask"]) if m]
        assert trained == first["ids"] + second["ids"] and len(trained) < len(r["completion_ids"])
        assert [lp for lp, m in zip(r["logprobs"], r["mask"]) if m] == pytest.approx(
            first["logprobs"] + second["logprobs"], abs=1e-6)
        assert r["episode"]["rewards"][-1] == float(len(set(second["content"])))
        assert r["episode"]["end"] == "done"   # why an agent episode ended is kept like an environment's
    assert all(m["env/end/done"] == 1.0 for m in steps)


def test_the_log_probs_recorded_at_the_first_step_are_the_policys_own_for_the_sampled_ids(sync_run):
    from transformers import AutoModelForCausalLM
    run, _, rollouts, _ = sync_run
    model = AutoModelForCausalLM.from_pretrained(run / "base_model").eval()   # the weights step 1 sampled with
    for r in [r for r in rollouts if r["step"] == 1]:
        seq = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(seq).logits[0, :-1].float(), -1)
        p = len(r["prompt_ids"])
        mine = logp[p - 1:].gather(1, seq[0, p:, None])[:, 0]
        kept = [(a, b) for a, b, m in zip(mine.tolist(), r["logprobs"], r["mask"]) if m]
        assert [a for a, _ in kept] == pytest.approx([b for _, b in kept], abs=2e-4)


def test_async_agents_failures_and_the_token_in_route_in_vllms_shape(tmp_path):
    run, metrics, rollouts, agents = train(tmp_path, ASYNC_AGENT, "agent.py:solve", steps=1, timeout=8)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    (m,) = [m for m in metrics if "env/agent_calls_mean" in m]
    by_k = {int(r["uid"].rsplit("-", 1)[1]): r["episode"] for r in rollouts}
    assert len(by_k) == 6
    for k, ep in by_k.items():   # an agent that raises or hangs is an error, never a zero
        if k % 3 == 0:
            assert ep["error"] == "the agent raised RuntimeError: the agent broke" and not ep["truncated"]
            assert ep["end"] == "error"
        elif k % 3 == 1:
            assert ep["error"].startswith("the agent ran past agent.timeout_s") and ep["truncated"]
            assert ep["end"] == "max_seconds"
        else:
            assert ep["error"] is None and ep["rewards"][-1] == 1.0 and ep["end"] == "done"
    assert m["reward/agent/error_rate"] == pytest.approx(4 / 6)
    assert m["env/agent_splits"] == 2.0   # each token-in agent's second call did not extend its sequence
    assert len(agents) == 2
    for a in agents:
        (card,) = a["models"]["data"]
        assert card["max_model_len"] == 256
        for answer in a["answers"]:
            got = answer["got"]
            (choice,) = got["choices"]
            assert got["prompt_token_ids"] == answer["sent"]
            assert 1 <= len(choice["token_ids"]) <= 3 and choice["finish_reason"] in ("stop", "length")
            content = choice["logprobs"]["content"]
            assert [c["token"] for c in content] == [f"token_id:{t}" for t in choice["token_ids"]]
            assert all(isinstance(c["logprob"], float) and c["logprob"] <= 0 for c in content)
            assert set(got) >= {"request_id", "usage"}
        # the first token-in call extended the chat call's ids: one segment holds the chat reply, the ids the
        # agent added (untrained) and the token-in reply
        r = next(r for r in rollouts if r["uid"].endswith(f"-{a['k']}"))
        first = a["answers"][0]
        assert r["prompt_ids"] + r["completion_ids"] == first["sent"] + first["got"]["choices"][0]["token_ids"]


def test_the_shipped_agent_recipe_runs(tmp_path):
    recipe = str(ROOT / "recipes" / "agent-grpo.yaml")
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", recipe,
                          "--set", "stages.grpo.train.steps=1", "--set", f"output_dir={tmp_path / 'runs'}"],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "agent-grpo"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    (step,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "env/agent_calls_mean" in x]
    assert step["env/agent_calls_mean"] == 2.0 and step["env/errors"] == 0.0 and step["env/agent_splits"] == 0.0
