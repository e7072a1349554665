"""The loop every method shares, read top to bottom:

    sample prompts -> generate rollouts -> score and mix -> shape feedback -> optimizer step -> hooks

The engine knows no algorithm and no reward kind by name: optimizers declare the feedback shape
they consume and the model roles they need; reward sources return scores.
"""
from __future__ import annotations

import random
import signal
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from feedback_rl.base import PluginContext
from feedback_rl.config.recipe import Recipe, SourceSpec, StageSpec
from feedback_rl.errors import RunStopped
from feedback_rl.loop.rewards import Mixer, build_mixer
from feedback_rl.loop.stage import Stage
from feedback_rl.modeling import lora
from feedback_rl.modeling.chat import check_rows
from feedback_rl.modeling.loading import context_length, load_policy
from feedback_rl.plugins import Registry, plugin_versions
from feedback_rl.run import checkpoint as ckpt
from feedback_rl.run.distributed import Dist, check_batches
from feedback_rl.run.folder import Run
from feedback_rl.run.preflight import StageData, check as preflight
from feedback_rl.run.writes import save_model, writing


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Engine:
    def __init__(self, recipe: Recipe, pm: Any, registry: Registry, run: Run, progress: bool = True,
                 resume: Path | None = None, dist: Dist | None = None, data: list[StageData] | None = None):
        self.recipe, self.pm, self.reg, self.run = recipe, pm, registry, run
        self.data = data if data is not None else preflight(recipe, registry)  # every stage's rows, checked
        self.dist = dist or Dist()
        self.main = self.dist.main  # rank 0 alone writes logs, rollouts, checkpoints and models
        self.progress = progress and self.main
        self.resume_path = resume
        self.resumed = ckpt.load_state(resume) if resume is not None else None
        if self.resumed is not None and self.main:  # lines logged after the checkpoint are replayed, not duplicated
            ckpt.truncate_logs(run.dir, self.resumed["logs"])
        self.loggers = [registry.get("loggers", spec.type)(recipe.options("logger", j), self._context(spec.type))
                        for j, spec in enumerate(recipe.loggers)] if self.main else []
        self.summary: dict[str, Any] = self.resumed["summary"] if self.resumed else {"status": "running", "stages": {}}
        self.global_step = self.resumed["global_step"] if self.resumed else 0
        self.signal: str | None = None
        self.wrapped_policy: torch.nn.Module | None = None  # the policy as accelerate wrapped it, when trained

    def _context(self, name: str, stage: str = "") -> PluginContext:
        return PluginContext(name=name, run_dir=self.run.dir, stage=stage, seed=self.recipe.seed,
                             recipe_dir=self.recipe.base_dir,
                             warn=self.dist.warn(lambda msg: tqdm.write(f"warning: {msg}")))

    # ------------------------------------------------------------------ the run
    def train(self) -> dict[str, Any]:
        recipe = self.recipe
        check_batches(recipe, self.dist.world)  # before anything loads (accelerate launch skips frl's own check)
        seed_everything(recipe.seed)
        spec = recipe.model if self.resumed is None else recipe.model.model_copy(
            update={"path": str(ckpt.policy_folder(self.resume_path, self.resumed)), "gguf_file": None})
        if not self.main:  # rank 0 builds a built-in model's folder first; the others then read it
            self.dist.barrier()
        built = self.run.dir / "base_model"  # where a built-in model is written (modeling/ sits below run/writes.py)
        with writing(built, f"the built-in model {spec.path}") if spec.path.startswith("builtin:") else nullcontext():
            self.policy, self.tokenizer = load_policy(spec, recipe.base_dir, built, recipe.seed)
        if self.main:
            self.dist.barrier()
        self.policy.to(self.dist.device)
        if self.resumed is None and self.main:
            self.run.write_lock(recipe, plugin_versions(self.pm))
        self.summary["status"] = "running"
        if self.main:
            self.pm.hook.frl_run_start(run=self.run, recipe=recipe)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            first, resumed = ckpt.resume_point(self.resumed)
            for i, stage in enumerate(recipe.stages):
                if i >= first:
                    self.run_stage(i, stage, resumed if i == first else None)
            self._save_final()  # before the status says finished: a run is finished only with its final/
            self.summary["status"] = "finished"
        except (RunStopped, KeyboardInterrupt) as e:
            self.summary["status"] = "interrupted" if self.signal else "stopped"
            self.summary["reason"] = str(e) or type(e).__name__
            raise
        except BaseException as e:
            self.summary["status"] = "failed"
            self.summary["reason"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.main:
                self.run.write_status({**self.summary, "global_step": self.global_step})
                self.pm.hook.frl_run_end(run=self.run, summary=self.summary)
            for lg in self.loggers:
                with writing(self.run.dir, f"the metrics of logger '{lg.name}'"):
                    lg.close()
        return self.summary

    def _save_final(self) -> None:
        whole = self.dist.full_state_dict(self.wrapped_policy)
        if self.main:
            save_model(self.run.dir / "final", "the run's final model", self.policy, self.tokenizer, whole)
        self.dist.barrier()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # finish the current step, checkpoint, then stop (a second signal stops at once)
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def run_stage(self, i: int, stage: StageSpec, resumed: dict | None = None) -> None:
        seed_everything(self.recipe.seed + 1000 * i)
        Stage(self, i, stage, resumed).run()

    def starts_fresh_adapter(self) -> bool:
        """A LoRA policy whose adapter an earlier stage trained: the next stage folds it in, starts another."""
        return lora.is_lora(self.policy) and lora.adapter_trained(self.policy)

    # ------------------------------------------------------------------ pieces
    def _restart_adapter(self, stage: StageSpec) -> None:
        """A LoRA policy whose adapter an earlier stage trained: fold it in, start a fresh one."""
        folder = self.run.dir / "bases" / stage.name
        base, config = lora.restart(self.policy)
        if self.main:
            save_model(folder, f"the base of stage '{stage.name}' (the previous stages' adapter folded in)", base,
                       self.tokenizer)
        self.dist.barrier()  # the folded base is on disk before any rank names it
        self.policy = lora.rewrap(base, config, folder)

    def _mixer(self, i: int, specs: list[SourceSpec], key: str, normalize: str, max_error_rate: float,
               role: str = "train") -> Mixer:
        def context(name: str) -> PluginContext:
            ctx = self._context(name, self.recipe.stages[i].name)
            ctx.role = role
            ctx.tokenizer = self.tokenizer  # a source reading the policy's token ids checks it reads them alike
            return ctx
        return build_mixer(self.recipe, self.reg, i, key, specs, context, normalize, max_error_rate)

    def _check_lengths(self, rows: Any, online: bool, stage: StageSpec) -> None:
        """Rows render and fit the context (the columns were checked before any model loaded); prompts to
        generate from leave room for max_new_tokens."""
        if rows is not None:
            check_rows(rows, self.tokenizer, context_length(self.policy.config),
                       stage.rollout.max_new_tokens if online else None, stage.rollout.system_prompt)

    def _log(self, metrics: dict[str, Any]) -> None:
        self.global_step += 1
        for lg in self.loggers:
            with writing(self.run.dir, "the step's metrics"):  # a full disk names the logger's file, when it says it
                lg.log(metrics, self.global_step)

    def _log_rollouts(self, stage: str, step: int, scored: list) -> None:
        self.run.append_rollouts([{
            "stage": stage, "step": step, "group": s.rollout.group, "prompt": s.rollout.prompt,
            "completion": s.rollout.completion, "truncated": s.rollout.truncated, "reward": s.reward,
            "scores": {k: {"status": v.status, "value": v.value, **({"reason": v.reason} if v.reason else {})}
                       for k, v in s.scores.items()},
            **({"episode": s.rollout.episode} if s.rollout.episode is not None else {}),
        } for s in scored])
