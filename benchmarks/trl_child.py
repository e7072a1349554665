"""One training run of one framework (this project or TRL), in a process of its own.

``bench_trl.py`` starts this script once per (framework, optimizer, repeat), so the peak RSS it
reports (``VmHWM``) is that run's alone. Both sides train the same HF folder on the same synthetic
rows with the same settings; each records the wall time at the end of every optimizer step (from
the start of training, after the model is loaded) and, for GRPO, the mean exact-match reward of
that step's sampled completions.

    python benchmarks/trl_child.py SPEC.json RESULT.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Step-end times (seconds since training began) and per-step rewards."""

    def __init__(self):
        self.t0: float | None = None
        self.ends: list[float] = []
        self.rewards: list[float] = []
        self.train_rss_mb = 0.0
        self.gen_s: list[float] = []          # per step: generation and scoring
        self.gen_tokens: list[int] = []       # per step: completion tokens generated
        self.update_tokens: list[int] = []    # per step: prompt + completion tokens trained on

    def begin(self):
        self.t0 = time.perf_counter()

    def end(self):
        self.ends.append(time.perf_counter() - self.t0)
        self.train_rss_mb = peak_rss_mb()   # the peak up to the last step, before any final save


# ---------------------------------------------------------------------------------- this project
def reward_options(s: dict) -> dict:
    """The rule check both sides score GRPO with: exact match on addition, 'Answer: N' on chat prompts."""
    return {"check": "final_answer", "marker": "Answer:"} if s.get("rows") else {"check": "exact"}


def backend(s: dict) -> dict:
    """Our rollout backend: HF generate, or vLLM in the precision the update runs in."""
    if s.get("backend", "hf") == "hf":
        return {"backend_options": {"engine": s["engine"]}} if s.get("engine") else {}
    dtype = "float32" if s.get("precision", "fp32") == "fp32" else "bfloat16"
    return {"backend": "vllm", "backend_options": {"dtype": dtype, "max_model_len": 256}}


def ours_stage(s: dict) -> dict:
    opt = s["optimizer"]
    train = {"steps": s["steps"], "batch_size": s["batch"], "lr": s["lr"], "precision": s.get("precision", "fp32"),
             "padding_free": s.get("padding_free", False)}
    if opt == "grpo":
        data = s.get("rows") or {"generator": "addition", "split": "train"}
        return {"name": "grpo", "optimizer": {"type": "grpo", "beta": s["beta"], "loss_type": s["loss_type"]},
                "data": {"train": data},
                "rewards": {"sources": [{"name": "exact_match", "type": "rule", **reward_options(s)}]},
                "rollout": {"num_generations": s["generations"], "max_new_tokens": s["max_len"],
                            "temperature": s["temperature"], "overlap": s.get("overlap", 0), **backend(s)},
                "train": train, "eval": {"num_prompts": 1}}
    optimizer = {"type": "dpo", "beta": s["beta"], "loss": s["dpo_loss"]} if opt == "dpo" else \
        {"type": "kto", "beta": s["beta"]}
    data = s.get("rows") or {"generator": "sort_pairs" if opt == "dpo" else "sort_labeled", "split": "train"}
    return {"name": opt, "optimizer": optimizer, "data": {"train": data}, "train": train}


def read_rows(s: dict, opt: str) -> list[dict]:
    """The rows both sides train on: the file the harness wrote (chat workload) or the synthetic task."""
    from feedback_rl.rows.synthetic import addition, sort_labeled, sort_pairs
    if s.get("rows"):
        return [json.loads(line) for line in Path(s["rows"]).read_text().splitlines()]
    return {"grpo": addition, "dpo": sort_pairs, "kto": sort_labeled}[opt]("train", None, 500, 0)


def switch_off(levers: list[str]) -> None:
    """Undo levers of the leaner step in this process, to measure what each one gives (bench_levers.py)."""
    import torch

    from feedback_rl.loop import engine
    from feedback_rl.modeling import batching
    for lever in levers:
        if lever == "fused_adamw":    # torch's default (foreach) AdamW
            engine.adamw = lambda params, device, **kw: torch.optim.AdamW(params, **kw)
        elif lever == "target_head":  # the LM head and log-softmax on every position
            batching._takes_boolean_keep = lambda model, device: False
        else:
            raise SystemExit(f"unknown lever {lever!r}")


def run_ours(s: dict, work: Path, clock: Clock) -> None:
    from feedback_rl import hookimpl
    from feedback_rl.commands.train import train_recipe
    from feedback_rl.plugins import default
    switch_off(s.get("off", []))

    class Timer:
        @hookimpl
        def frl_run_start(self, run, recipe):
            clock.begin()

        @hookimpl
        def frl_rollouts_generated(self, stage, step, rollouts):
            clock.gen_tokens.append(sum(len(r.completion_ids) for r in rollouts))
            clock.update_tokens.append(sum(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts))

        @hookimpl
        def frl_step_end(self, stage, step, metrics):
            clock.end()
            if "reward/mean" in metrics:
                clock.rewards.append(float(metrics["reward/mean"]))
            if "time/generate_s" in metrics and s["optimizer"] == "grpo":
                clock.gen_s.append(float(metrics["time/generate_s"]))

    recipe = {"name": f"bench-{s['optimizer']}", "seed": s["seed"], "output_dir": str(work / "runs"),
              "model": {"path": s["model"]}, "stages": [ours_stage(s)]}
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    pm, _ = default()
    pm.register(Timer())
    train_recipe(path, pm=pm)


# ---------------------------------------------------------------------------------- TRL
def exact_match_reward(options: dict):
    """The project's ``rule`` source (``options``) as a TRL reward function: the same checker."""
    from feedback_rl import PluginContext, Rollout
    from frl_plugins.rewards.rule import RuleSource
    source = RuleSource(RuleSource.Options(**options), PluginContext(name="exact_match", run_dir=Path(".")))

    def exact_match(prompts, completions, answer, **kwargs):
        rollouts = [Rollout(prompt=p, completion=c, row={"prompt": p, "answer": a}, group=0, prompt_ids=[],
                            completion_ids=[]) for p, c, a in zip(prompts, completions, answer)]
        return [score.value for score in source.score(rollouts)]
    return exact_match


def run_trl(s: dict, work: Path, clock: Clock) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.begin()

        def on_step_end(self, args, state, control, **kw):
            clock.end()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                clock.rewards.append(float(logs["reward"]))

    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype="float32")
    tok = AutoTokenizer.from_pretrained(s["model"])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # the project's defaults, spelled out: constant lr, AdamW (torch), no weight decay, clip at 1
    common = dict(output_dir=str(work / "trl"), learning_rate=s["lr"], max_steps=s["steps"], logging_steps=1,
                  save_strategy="no", report_to=[], use_cpu=s["device"] == "cpu", seed=s["seed"],
                  lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                  optim="adamw_torch", disable_tqdm=True, dataloader_num_workers=0)
    if s.get("trl_bf16"):
        # TRL's best here: its bf16 autocast, no gradient checkpointing (it recomputes the forward)
        common.update(bf16=True, gradient_checkpointing=False)
    elif not s.get("trl_defaults"):
        # TRL 1.x defaults to bf16 autocast and gradient checkpointing; this project trains in the
        # model's dtype (float32 here) without checkpointing: same arithmetic on both sides
        common.update(bf16=False, gradient_checkpointing=False)
    opt = s["optimizer"]
    if opt == "grpo":
        from trl import GRPOConfig, GRPOTrainer
        rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in read_rows(s, opt)]
        args = GRPOConfig(**common, per_device_train_batch_size=s["batch"] * s["generations"],
                          num_generations=s["generations"], max_completion_length=s["max_len"],
                          temperature=s["temperature"], top_p=1.0, top_k=0, beta=s["beta"],
                          loss_type=s["loss_type"], scale_rewards="group", epsilon=0.2, num_iterations=1)
        trainer = GRPOTrainer(model=model, reward_funcs=[exact_match_reward(reward_options(s))], args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[Timer()])
        timed = trainer._generate_and_score_completions   # generation + scoring, as ours times it

        def generate_and_score(*args, **kwargs):
            t = time.perf_counter()
            out = timed(*args, **kwargs)
            clock.gen_s.append(time.perf_counter() - t)
            done = int(out["completion_mask"].sum())
            clock.gen_tokens.append(done)
            clock.update_tokens.append(done + int(out["prompt_mask"].sum()))
            return out
        trainer._generate_and_score_completions = generate_and_score
    elif opt == "dpo":
        from trl import DPOConfig, DPOTrainer
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_rows(s, opt)]
        args = DPOConfig(**common, per_device_train_batch_size=s["batch"], beta=s["beta"],
                         loss_type=[s["dpo_loss"]], dataset_num_proc=None)
        trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
                             callbacks=[Timer()])
    else:
        from trl import KTOConfig, KTOTrainer
        rows = [{k: r[k] for k in ("prompt", "completion", "label")} for r in read_rows(s, opt)]
        args = KTOConfig(**common, per_device_train_batch_size=s["batch"], beta=s["beta"], dataset_num_proc=None)
        trainer = KTOTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
                             callbacks=[Timer()])
    from transformers import PrinterCallback
    trainer.remove_callback(PrinterCallback)   # disable_tqdm prints every log dict otherwise
    trainer.train()


def main() -> None:
    spec, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    import torch
    torch.set_num_threads(spec["threads"])
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from feedback_rl.modeling.loading import quiet_transformers
    quiet_transformers()
    import datasets
    datasets.disable_progress_bars()
    clock = Clock()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec['framework']}-") as tmp:
        (run_ours if spec["framework"] == "ours" else run_trl)(spec, Path(tmp), clock)
    out.write_text(json.dumps({"ends": clock.ends, "rewards": clock.rewards, "peak_rss_mb": peak_rss_mb(),
                               "gen_s": clock.gen_s, "gen_tokens": clock.gen_tokens,
                               "update_tokens": clock.update_tokens,
                               "peak_rss_steps_mb": clock.train_rss_mb,
                               "threads": torch.get_num_threads(),
                               "wall_s": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
