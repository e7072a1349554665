"""eval.keep_best keeps the model of the best held-out eval as the stage's output (the last step's may be
worse: a policy over-fits what it is rewarded for), and health.overfit says when the held-out eval falls
while the training reward does not. The held-out scores are scripted by an eval source so the best step is
known; the runs go through the public `feedback_rl.train` in a subprocess, as a user's script would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

PLUGIN = textwrap.dedent("""\
    import feedback_rl
    from feedback_rl import PluginOptions, RewardSource, Score

    class Scripted(RewardSource):
        '''Eval: the n-th eval scores every rollout values[n]. Train: 1 for every other rollout.'''
        name = "scripted"

        class Options(PluginOptions):
            values: list[float] = []

        calls = 0

        def score(self, rollouts):
            if self.context.role == "eval":
                v = self.options.values[min(Scripted.calls, len(self.options.values) - 1)]
                Scripted.calls += 1
                return [Score.ok(v) for _ in rollouts]
            return [Score.ok(float(k % 2)) for k in range(len(rollouts))]

    @feedback_rl.hookimpl
    def frl_register_reward_sources(register):
        register(Scripted)
""")


def run(tmp_path: Path, recipe: str) -> tuple[int, str, Path]:
    (tmp_path / "scripted.py").write_text(PLUGIN)
    (tmp_path / "r.yaml").write_text(recipe)
    (tmp_path / "go.py").write_text("import feedback_rl, scripted, sys\n"
                                    "try:\n    s = feedback_rl.train('r.yaml', plugins=[scripted], progress=False)\n"
                                    "except feedback_rl.RunStopped as e:\n    print('stopped:', e); sys.exit(3)\n"
                                    "print(s['status'])\n")
    out = subprocess.run([sys.executable, "go.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)})
    runs = tmp_path / "runs"
    return out.returncode, out.stdout + out.stderr, next(runs.iterdir()) if runs.exists() else runs


def test_the_best_evals_model_is_the_stages_output_not_the_last_steps(tmp_path):
    code, out, run_dir = run(tmp_path, textwrap.dedent(f"""\
        name: best
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {{generator: addition, size: 64}}, eval: {{generator: addition, split: eval}}}}
            train: {{steps: 6, batch_size: 8, lr: 1.0e-2}}
            eval: {{every: 2, num_prompts: 4, keep_best: eval/reward,
                    sources: [{{name: held_out, type: scripted, values: [0.2, 0.9, 0.4, 0.3]}}]}}
            checkpoint: {{every: 2, keep: 4}}
        """))
    assert code == 0, out[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    sft = status["stages"]["sft"]
    assert sft["kept_best"] == {"metric": "eval/reward", "value": 0.9, "step": 2}
    assert sft["eval_after"]["eval/reward"] == 0.9 and sft["last_eval"]["eval/reward"] == 0.3
    output = load_file(run_dir / "stages" / "sft" / "model.safetensors")
    final = load_file(run_dir / "final" / "model.safetensors")
    at_2 = load_file(next((run_dir / "checkpoints").glob("*-sft-step0000002")) / "policy" / "model.safetensors")
    at_6 = load_file(next((run_dir / "checkpoints").glob("*-sft-step0000006")) / "policy" / "model.safetensors")
    assert all(torch.equal(output[k], at_2[k]) and torch.equal(final[k], at_2[k]) for k in at_2)
    assert any(not torch.equal(at_6[k], at_2[k]) for k in at_2)   # the last step's model was another one


def grpo_recipe(tmp_path: Path, overfit: str) -> str:
    return textwrap.dedent(f"""\
        name: overfit
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition, size: 64}}, eval: {{generator: addition, split: eval}}}}
            rewards: {{sources: [{{name: half, type: scripted}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 3}}
            train: {{steps: 4, batch_size: 2, lr: 1.0e-3}}
            eval: {{every: 2, num_prompts: 4,
                    sources: [{{name: held_out, type: scripted, values: [0.2, 0.9, 0.4]}}]}}
            health: {{overfit: {overfit}}}
        """)


def test_a_held_out_eval_falling_while_the_reward_holds_is_said_once(tmp_path):
    code, out, _ = run(tmp_path, grpo_recipe(tmp_path, "warn"))
    assert code == 0, out[-3000:]
    assert out.count("eval/reward fell from 0.900 (step 2) to 0.400 while the training reward stayed at 0.500") == 1


def test_health_overfit_stop_stops_the_run(tmp_path):
    code, out, run_dir = run(tmp_path, grpo_recipe(tmp_path, "stop"))
    assert code == 3, out[-3000:]
    assert "over-fits what it is rewarded for" in out
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"
