"""Every conversational shape trains through the real `frl train`, on the tiny model with its own chat
template: SFT on `messages`, DPO on chosen/rejected conversations with an implicit prompt, KTO on a
prompt as turns with an assistant turn, GRPO on prompts as turns with a system prompt. Then the trained
model answers through `frl serve`'s chat endpoint exactly as it answers in training."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import openai
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.rollout import generate_rollouts
from frl_plugins.backends.hf import HFBackend
from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app

SUMS = [(a, b) for a in range(1, 5) for b in range(1, 5)]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_conversational_shape_trains_and_serve_answers_as_training(tmp_path):
    write_jsonl(tmp_path / "sft.jsonl", [{"messages": [user(f"{a}+{b}="), assistant(str(a + b))]} for a, b in SUMS])
    write_jsonl(tmp_path / "pairs.jsonl", [{"chosen": [user(f"{a}+{b}="), assistant(str(a + b))],
                                             "rejected": [user(f"{a}+{b}="), assistant(str(a + b + 1))]}
                                            for a, b in SUMS])
    write_jsonl(tmp_path / "kto.jsonl", [{"prompt": [user(f"{a}+{b}=")], "completion": [assistant(str(a + b + k))],
                                          "label": k == 0} for a, b in SUMS for k in (0, 1)])
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [user(f"{a}+{b}=")], "answer": str(a + b)}
                                             for a, b in SUMS])
    recipe = tmp_path / "chat.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: chat
        output_dir: {tmp_path / "runs"}
        model: {{path: builtin:tiny-gpt2, tiny: {{n_layer: 1, n_embd: 32, n_head: 2, n_positions: 96}}}}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: sft.jsonl}}
            train: {{steps: 3, batch_size: 8, lr: 1.0e-3}}
          - name: dpo
            optimizer: dpo
            data: {{train: pairs.jsonl}}
            train: {{steps: 2, batch_size: 8, lr: 1.0e-3}}
          - name: kto
            optimizer: kto
            data: {{train: kto.jsonl}}
            train: {{steps: 2, batch_size: 8, lr: 1.0e-3}}
          - name: grpo
            optimizer: grpo
            data: {{train: prompts.jsonl}}
            rewards: {{sources: [{{name: correct, type: rule, check: exact}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 4, system_prompt: "Add."}}
            train: {{steps: 2, batch_size: 4, lr: 1.0e-3}}
            health: {{max_truncated_rate: null, max_zero_variance_groups: null, min_grad_norm: null}}
        """))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "chat"
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for stage in ("sft", "dpo", "kto", "grpo"):
        losses = [s["loss"] for s in steps if s.get("stage") == stage and "loss" in s]
        assert losses and all(torch.isfinite(torch.tensor(losses))), (stage, losses)
    # the GRPO prompts went in through the tiny model's template, system turn first
    first = json.loads((run / "rollouts.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|system|>\nAdd.\n<|user|>\n") and first["prompt"].endswith("<|assistant|>\n")

    # the chat endpoint renders as training rendered, so the greedy answers are the same
    model, tok = load_local(str(run / "final"))
    rows = [{"prompt": [user(f"{a}+{b}=")]} for a, b in SUMS[:6]]
    trained = generate_rollouts(HFBackend(HFBackend.Options(), PluginContext(name="hf", run_dir=tmp_path)), model,
                                tok, rows, SamplingParams(max_new_tokens=4, greedy=True))
    with ServerThread(build_app(model, tok, "chat")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x")
        served = [client.chat.completions.create(model="chat", messages=r["prompt"], max_tokens=4,
                                                 temperature=0).choices[0].message.content for r in rows]
    assert any(served) and served == [r.completion for r in trained]
