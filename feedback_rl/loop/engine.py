"""The loop every method shares, read top to bottom:

    sample prompts -> generate rollouts -> score and mix -> shape feedback -> optimizer step -> hooks

The engine knows no algorithm and no reward kind by name: optimizers declare the feedback shape
they consume and the model roles they need; reward sources return scores.
"""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.modeling.chat import check_rows
from feedback_rl.rows import dataset as datasets
from feedback_rl.loop import feedback as shapes
from feedback_rl.modeling import lora
from feedback_rl.base import Models, PluginContext
from feedback_rl.run.distributed import Dist, check_batches, idle_loss
from feedback_rl.errors import RunStopped
from feedback_rl.loop.evaluation import evaluate
from feedback_rl.run.health import Health
from feedback_rl.modeling.loading import context_length, load_policy
from feedback_rl.plugins import Registry, plugin_versions
from feedback_rl.run.preflight import StageData, check as preflight
from feedback_rl.modeling.packing import padding_free
from feedback_rl.modeling.precision import Precision, adamw
from feedback_rl.config.recipe import Recipe, SourceSpec, StageSpec
from feedback_rl.loop.rewards import Mixer, build_mixer
from feedback_rl.modeling.roles import build_models
from feedback_rl.loop.overlap import RolloutWorker
from feedback_rl.loop.rollout import generate_rollouts, sampling_params, to_rollouts
from feedback_rl.run.folder import Run


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
        self.policy, self.tokenizer = load_policy(spec, recipe.base_dir, self.run.dir / "base_model", recipe.seed)
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
                lg.close()
        return self.summary

    def _save_final(self) -> None:
        whole = self.dist.full_state_dict(self.wrapped_policy)
        if self.main:
            final = self.run.dir / "final"
            self.policy.save_pretrained(final, state_dict=whole)
            self.tokenizer.save_pretrained(final)
        self.dist.barrier()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # finish the current step, checkpoint, then stop (a second signal stops at once)
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def run_stage(self, i: int, stage: StageSpec, resumed: dict | None = None) -> None:
        recipe = self.recipe
        seed_everything(recipe.seed + 1000 * i)
        ctx = self._context(stage.optimizer.type, stage.name)
        ctx.sampling = sampling_params(stage.rollout)
        ctx.system_prompt = _system_prompt(stage)
        ctx.overlap = stage.rollout.overlap
        optimizer = self.reg.get("optimizers", stage.optimizer.type)(recipe.options("stage", i, "optimizer"), ctx)
        if resumed is None and lora.is_lora(self.policy) and lora.adapter_trained(self.policy):
            self._restart_adapter(stage)
        models = build_models(optimizer.roles(), self.policy, self.tokenizer)
        backend = self.reg.get("backends", stage.rollout.backend)(recipe.options("backend", i), ctx)
        mixer = self._mixer(i, stage.rewards.sources, "source", stage.rewards.normalize, stage.rewards.max_error_rate)
        eval_mixer = self._mixer(i, stage.eval_sources, "eval_source" if stage.eval.sources is not None else "source",
                                 "none", 1.0, role="eval")
        if self.main:
            self.run.describe_sources(stage.name, {slot.spec.name: slot.source.describe()
                                                   for slot in mixer.slots + eval_mixer.slots})
        train_rows = self.data[i].train
        eval_rows = self.data[i].eval[: stage.eval.num_prompts] if self.data[i].eval is not None else []
        self._check_lengths(train_rows, bool(mixer.slots) and optimizer.feedback != "demonstrations", stage)
        self.dist.check_models(models, f"{self.recipe.path}: stages[{i}].optimizer.critic")
        sampler = datasets.Sampler(len(train_rows), recipe.seed + i)
        # every rank reaches the same verdicts from the same gathered metrics; rank 0 says them
        health = Health(stage.health, stage.name, ctx.warn if self.main else lambda msg: None, stage.train.steps,
                        self.run.dir / "bad_batches")
        trained = [m for m in optimizer.trainable(models) if any(p.requires_grad for p in m.parameters())]
        params = [p for m in trained for p in m.parameters() if p.requires_grad]
        self.precision = Precision(stage.train.precision, self.dist.device, f"stages[{i}].train.precision")
        if self.main and (slow := self.precision.warning()):
            ctx.warn(slow)
        opt = adamw(params, self.dist.device, lr=stage.train.lr, weight_decay=stage.train.weight_decay,
                    betas=stage.train.adam_betas)
        wrapped, opt = self.dist.prepare(trained, opt)
        # the optimizer's forward passes go through the wrapped modules (gradients are averaged
        # across ranks); generation, evaluation and saving use the plain ones
        swap = {id(m): w for m, w in zip(trained, wrapped)}
        train_models = dataclasses.replace(models, **{
            role: swap.get(id(m), m) for role in ("policy", "critic", "reward_model")
            if (m := getattr(models, role)) is not None})
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(stage.train))
        self.wrapped_policy = swap.get(id(self.policy))

        eval_tokens = stage.eval.max_new_tokens or stage.rollout.max_new_tokens
        local_eval = self.dist.split(eval_rows)
        worker: RolloutWorker | None = None
        def do_eval() -> dict[str, float]:
            if worker is not None:  # the backend serves one caller at a time, with the current weights
                worker.wait()
                backend.sync_weights(self.policy, state["version"])
            out = evaluate(backend, self.policy, self.tokenizer, local_eval, eval_mixer, eval_tokens,
                           stage.eval.batch_size, _system_prompt(stage))
            with torch.no_grad():
                out.update(optimizer.evaluate(local_eval, models))
            return self.dist.reduce_metrics(out, weight=len(local_eval))
        state = {"version": 0, "eval_before": None}
        plugins = {"optimizer": optimizer, "backend": backend, "health": health,
                   **{f"source:{slot.spec.name}": slot.source for slot in mixer.slots}}
        if resumed is None:
            state["eval_before"] = do_eval()
            self._log({**state["eval_before"], "stage": stage.name, "step": 0})
            first = 1
        else:
            opt.load_state_dict(resumed["optimizer"])
            self.precision.load_state_dict(resumed.get("precision", {}))
            sched.load_state_dict(resumed["scheduler"])
            sampler.load_state_dict(resumed["sampler"])
            for key, plugin in plugins.items():
                plugin.load_state_dict(resumed["plugins"].get(key, {}))
            for role, module in _roles(models).items():
                module.load_state_dict(torch.load(self.resume_path / f"{role}.pt", weights_only=True))
            state.update(version=resumed["version"], eval_before=resumed["eval_before"])
            first = resumed["step"] + 1
            ckpt.set_rng_state(resumed["rng"])  # last: building models above drew random numbers
        self.dist.diverge_sampling()
        if stage.rollout.overlap:
            worker = RolloutWorker(backend, self.policy, self.tokenizer, train_rows, sampling_params(stage.rollout),
                                   stage.rollout.num_generations, _system_prompt(stage),
                                   (recipe.seed + 1000 * i) * 1009 + self.dist.rank)  # ranks sample apart
            if resumed is not None:
                worker.load_state_dict(resumed.get("rollouts_in_flight", {}))

        def save_checkpoint(step: int) -> Path:
            name = ckpt.tag(i, stage.name, step)
            whole = self.dist.full_state_dict(self.wrapped_policy)
            if self.main:  # the weights are the same on every rank; rank 0 writes them
                ckpt.save(self.run.dir, name, self.policy, self.tokenizer, _roles(models), {
                    "stage_index": i, "stage": stage.name, "step": step, "global_step": self.global_step,
                    "version": state["version"], "eval_before": state["eval_before"],
                    "summary": self.summary, "optimizer": opt.state_dict(), "precision": self.precision.state_dict(),
                    "scheduler": sched.state_dict(), "sampler": sampler.state_dict(),
                    "plugins": {k: p.state_dict() for k, p in plugins.items()},
                    "rollouts_in_flight": worker.state_dict() if worker is not None else {},
                    "world_size": self.dist.world,
                }, stage.checkpoint.keep, policy_state=whole)
                self.pm.hook.frl_checkpoint_saved(stage=stage.name, step=step, path=ckpt.folder(self.run.dir) / name)
            self.dist.barrier()
            return ckpt.folder(self.run.dir) / name

        self.policy.train()
        bar = tqdm(range(first, stage.train.steps + 1), desc=f"{stage.name}", disable=not self.progress,
                   dynamic_ncols=True, leave=True, initial=first - 1, total=stage.train.steps)
        try:
            for step in bar:
                t0 = time.perf_counter()
                metrics: dict[str, Any] = {}
                with self.dist.stop_together():  # e.g. a source's error rate: every rank stops, not only this one
                    offline = optimizer.feedback == "demonstrations" or not mixer.slots
                    if worker is not None:  # online by the recipe's check; the worker took these rows a step ago
                        rollouts = self._overlapped(worker, stage, step, sampler, state["version"], metrics)
                    else:
                        rows = self.dist.shard([train_rows[k] for k in sampler.take(stage.train.batch_size)])
                        rollouts = None if offline else self._generate(stage, rows, backend, state["version"])
                    if offline:
                        fb = shapes.from_rows(optimizer.feedback, rows, self.tokenizer, _system_prompt(stage))
                    else:
                        fb = self._feedback(stage, step, rollouts, mixer, optimizer.feedback, metrics)
                for slot in mixer.slots:
                    metrics.update({f"source/{slot.spec.name}/{k}": v for k, v in slot.source.metrics().items()})
                t_gen = time.perf_counter() - t0
                metrics["feedback/size"] = float(len(fb))
                metrics.update(self._optimize(optimizer, train_models, wrapped, fb, opt, stage, step, worker))
                with warnings.catch_warnings():  # a step without feedback steps no optimizer, yet the schedule moves on
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before", UserWarning)
                    sched.step()
                state["version"] += 1
                if worker is None:  # the worker hands the weights over with the next batch
                    backend.sync_weights(self.policy, state["version"])
                metrics = self.dist.reduce_metrics(metrics)  # the same numbers on every rank from here on
                self.signal = self.dist.first(self.signal)
                optimizer.after_step(metrics)
                metrics.update({"stage": stage.name, "step": step, "lr": sched.get_last_lr()[0],
                                "time/generate_s": t_gen, "time/step_s": time.perf_counter() - t0})
                if stage.eval.every and step % stage.eval.every == 0 and step < stage.train.steps:
                    metrics.update(do_eval())
                metrics.update(health.check(step, metrics))
                self._log(metrics)
                if self.main:
                    self.pm.hook.frl_step_end(stage=stage.name, step=step, metrics=metrics)
                bar.set_postfix(_postfix(metrics), refresh=False)
                if self.signal or (stage.checkpoint.every and step % stage.checkpoint.every == 0):
                    path = save_checkpoint(step)
                    if self.signal:
                        raise RunStopped(f"{self.signal} received: checkpoint saved at {path}")
        finally:
            if worker is not None:
                worker.close()
        bar.close()
        after = do_eval()
        self._log({**after, "stage": stage.name, "step": stage.train.steps})
        self.summary["stages"][stage.name] = {"eval_before": state["eval_before"], "eval_after": after}
        produced = optimizer.stage_output(models)
        if (sums := self.dist.same_weights(produced, stage.name)) is not None:
            self.summary["stages"][stage.name]["rank_checksums"] = sums
        out = self.run.dir / "stages" / stage.name
        whole = self.dist.full_state_dict(swap.get(id(produced)))
        if self.main:
            produced.save_pretrained(out, state_dict=whole)
            self.tokenizer.save_pretrained(out)
        # the stage's end is a checkpoint: a run stopped later resumes at the next stage, from `out`
        shared = produced is self.policy
        whole = None if shared else self.dist.full_state_dict(self.wrapped_policy)
        if self.main:
            ckpt.save_stage_end(self.run.dir, i, [s.name for s in recipe.stages], self.policy, self.tokenizer,
                                {"global_step": self.global_step, "summary": self.summary}, stage.checkpoint.keep,
                                out if shared else None, whole)
            self.pm.hook.frl_checkpoint_saved(stage=stage.name, step=stage.train.steps, path=out)
        self.dist.barrier()
        for closable in (mixer, eval_mixer, optimizer, backend):
            closable.close()

    # ------------------------------------------------------------------ pieces
    def _restart_adapter(self, stage: StageSpec) -> None:
        """A LoRA policy whose adapter an earlier stage trained: fold it in, start a fresh one."""
        folder = self.run.dir / "bases" / stage.name
        base, config = lora.restart(self.policy, folder if self.main else None)
        if self.main:
            self.tokenizer.save_pretrained(folder)
        self.dist.barrier()  # the folded base is on disk before any rank names it
        self.policy = lora.rewrap(base, config, folder)

    def _generate(self, stage: StageSpec, rows: list[dict], backend: Any, version: int) -> list:
        """This rank's rollouts of ``rows``, generated now by the current policy."""
        rollouts = generate_rollouts(backend, self.policy, self.tokenizer, rows, sampling_params(stage.rollout),
                                     stage.rollout.num_generations, policy_version=version,
                                     system_prompt=_system_prompt(stage))
        self.dist.tag_rollouts(rollouts, len(rows))
        return rollouts

    def _overlapped(self, worker: RolloutWorker, stage: StageSpec, step: int, sampler: Any, version: int,
                    metrics: dict[str, Any]) -> list:
        """This step's rollouts from the worker, and the next step's handed to it before this one trains."""
        size = stage.train.batch_size
        t = time.perf_counter()
        batch = worker.take(step)
        if batch is None:  # the stage's first step (or a resumed run that held none): generate it now
            worker.submit(step, self.dist.shard(sampler.take(size)), self.policy, version)
            batch = worker.take(step)
        metrics["time/rollout_wait_s"] = time.perf_counter() - t
        if step < stage.train.steps:
            worker.submit(step + 1, self.dist.shard(sampler.take(size)), self.policy, version)
        rollouts = to_rollouts(batch.prompts, batch.gens, self.tokenizer, worker.stops, batch.version)
        self.dist.tag_rollouts(rollouts, len(batch.indices))
        metrics["rollout/staleness"] = float(version - batch.version)
        return rollouts

    def _feedback(self, stage: StageSpec, step: int, rollouts: list, mixer: Mixer, shape: str,
                  metrics: dict[str, Any]) -> Any:
        """Score and mix this rank's rollouts, and shape what the optimizer consumes."""
        everyone = self.dist.gather_flat(rollouts)  # hooks see the whole step, on rank 0
        if self.main:
            self.pm.hook.frl_rollouts_generated(stage=stage.name, step=step, rollouts=everyone)
        scored, reward_metrics = mixer.score(rollouts)
        all_scored = self.dist.gather_scored(everyone, scored)
        if self.main:
            self.pm.hook.frl_scores_mixed(stage=stage.name, step=step, scored=all_scored)
            self._log_rollouts(stage.name, step, all_scored)
        metrics.update(reward_metrics)
        metrics.update(_rollout_metrics(rollouts, scored))
        prefs = self._compare(mixer, rollouts)  # first: a blocking queue waits here for this step's labels
        late = []
        for slot in mixer.slots:  # then the judgments that arrived since, of this or earlier steps (people)
            for j in slot.source.collect():
                j.source = slot.spec.name
                late.append(j)
        return shapes.build(shape, scored, prefs, late, bool(mixer.pointwise), self.tokenizer,
                            stage.feedback.pair_min_margin, stage.feedback.binary_threshold)

    def _optimize(self, optimizer: Any, models: Models, wrapped: list, fb: Any, opt: Any, stage: StageSpec,
                  step: int, worker: RolloutWorker | None = None) -> dict[str, float]:
        with self.precision.autocast(), padding_free(stage.train.padding_free):
            batches = list(optimizer.minibatches(optimizer.prepare(fb, models))) if len(fb) else []
        n = self.dist.max(len(batches))  # ranks with fewer minibatches add zero gradients to the rest
        totals: dict[str, list[float]] = {}
        params = [p for g in opt.param_groups for p in g["params"]]
        for k in range(n):
            opt.zero_grad(set_to_none=True)
            with self.precision.autocast(), padding_free(stage.train.padding_free):
                if k < len(batches):
                    mb = batches[k]
                    loss, m = optimizer.loss(mb, models)
                else:
                    mb, m = None, {}
                    loss = idle_loss(wrapped, self.tokenizer.pad_token_id)
            finite = bool(torch.isfinite(loss))
            if worker is not None:  # the backward and the step run on every thread (overlap.py says why)
                worker.wait()
            if finite or self.dist.lockstep:  # a rank that skipped backward would leave the others waiting
                self.precision.backward(loss, self.dist.backward)
                self.precision.unscale(opt)
                gnorm = self.dist.clip_grad_norm(params, stage.train.max_grad_norm)
                # averaged gradients: the same verdict on every rank; fp16's scaler skips an overflow itself
                finite = bool(torch.isfinite(gnorm)) or self.precision.scales
            if not finite:  # skip the update; keep the batch for a post-mortem
                opt.zero_grad(set_to_none=True)
                where = self._save_bad_batch(stage.name, step, k, fb, mb)
                msg = f"stage '{stage.name}' step {step}: non-finite loss or gradient; batch saved to {where}"
                if stage.health.nonfinite == "stop":
                    raise RunStopped(msg)
                totals.setdefault("health/nonfinite_skips", []).append(1.0)
                continue
            self.precision.step(opt)
            if mb is None:
                continue
            for key, v in {"loss": loss.item(), "grad_norm": float(gnorm), **m}.items():
                totals.setdefault(key, []).append(float(v))
        return {k: sum(v) / len(v) for k, v in totals.items()}

    def _save_bad_batch(self, stage: str, step: int, k: int, feedback: Any, minibatch: Any) -> Path:
        where = self.run.dir / "bad_batches" / f"{stage}-step{step}-mb{k}.pt"
        where.parent.mkdir(exist_ok=True)
        torch.save({"feedback": feedback, "minibatch": minibatch}, where)
        return where

    def _compare(self, mixer: Mixer, rollouts: list) -> list:
        """Pairwise sources judge candidate pairs (two completions of each prompt) directly."""
        prefs = []
        for slot in mixer.slots:
            if slot.source.pairwise:
                for p in slot.source.compare(shapes.candidate_pairs(rollouts)):
                    p.source = slot.spec.name
                    prefs.append(p)
        return prefs

    def _mixer(self, i: int, specs: list[SourceSpec], key: str, normalize: str, max_error_rate: float,
               role: str = "train") -> Mixer:
        def context(name: str) -> PluginContext:
            ctx = self._context(name, self.recipe.stages[i].name)
            ctx.role = role
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
            lg.log(metrics, self.global_step)

    def _log_rollouts(self, stage: str, step: int, scored: list) -> None:
        self.run.append_rollouts([{
            "stage": stage, "step": step, "group": s.rollout.group, "prompt": s.rollout.prompt,
            "completion": s.rollout.completion, "truncated": s.rollout.truncated, "reward": s.reward,
            "scores": {k: {"status": v.status, "value": v.value, **({"reason": v.reason} if v.reason else {})}
                       for k, v in s.scores.items()},
        } for s in scored])


def _system_prompt(stage: StageSpec) -> str | None:
    return stage.rollout.system_prompt


def _rollout_metrics(rollouts: list, scored: list) -> dict[str, float]:
    n = max(1, len(rollouts))
    groups: dict[int, set] = {}
    counts: dict[int, int] = {}
    for s in scored:
        if s.reward is not None:
            groups.setdefault(s.rollout.group, set()).add(s.reward)
            counts[s.rollout.group] = counts.get(s.rollout.group, 0) + 1
    multi = [g for g in groups if counts[g] > 1]
    flat = sum(len(groups[g]) == 1 for g in multi)
    return {"rollout/completion_len": sum(len(r.completion_ids) for r in rollouts) / n,
            "rollout/truncated_rate": sum(r.truncated for r in rollouts) / n,
            "rollout/zero_variance_groups": flat / len(multi) if multi else 0.0}


def _roles(models: Models) -> dict[str, torch.nn.Module]:
    """The roles a checkpoint saves besides the policy (the reference too: it is the stage's start)."""
    return {name: m for name in ("reference", "critic", "reward_model")
            if isinstance(m := getattr(models, name), torch.nn.Module)}


def _schedule(train: Any):
    def f(step: int) -> float:
        if train.warmup_steps and step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        if train.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if train.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return f


def _postfix(metrics: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, label in (("reward/mean", "reward"), ("loss", "loss")):
        v = metrics.get(key)
        if isinstance(v, float) and math.isfinite(v):
            out[label] = f"{v:.3f}"
    return out
