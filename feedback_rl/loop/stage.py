"""One stage of a run, read top to bottom:

    build (optimizer, roles, backend, sources, AdamW) -> evaluate before (or restore a checkpoint) ->
    for each step: rows -> rollouts -> judgments -> feedback -> the core's batch -> optimizer steps -> logs ->
    evaluate after -> save the stage's model; the stage's end is a checkpoint.

Everything the stage holds is a field of :class:`Stage`; the run-level services (the policy, the loggers,
the run folder, signals, processes) are the :class:`~feedback_rl.loop.engine.Engine`'s.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from feedback_rl.base import Models
from feedback_rl.config.recipe import StageSpec
from feedback_rl.errors import RunStopped, UserError
from feedback_rl.loop import batch as batching, feedback as shapes
from feedback_rl.loop.agents import AgentRunner
from feedback_rl.loop.episodes import play_episodes
from feedback_rl.loop.evaluation import EpisodeEval, evaluate
from feedback_rl.loop.overlap import RolloutWorker
from feedback_rl.loop.rollout import generate_rollouts, sampling_params, to_rollouts
from feedback_rl.modeling.loading import context_length
from feedback_rl.modeling.packing import padding_free
from feedback_rl.modeling.precision import Precision, adamw
from feedback_rl.modeling.roles import build_models
from feedback_rl.rows import dataset as datasets
from feedback_rl.run import checkpoint as ckpt
from feedback_rl.run.best import KeepBest
from feedback_rl.run.distributed import idle_loss
from feedback_rl.run.health import Health
from feedback_rl.run.writes import save_file, save_model


class Stage:
    """The stage ``index`` of ``engine``'s recipe, built and ready to run (``resumed``: its checkpoint)."""

    def __init__(self, engine: Any, index: int, spec: StageSpec, resumed: dict | None = None):
        self.engine, self.index, self.spec, self.resumed = engine, index, spec, resumed
        self.dist, self.main = engine.dist, engine.main
        self.version = 0                       # policy updates so far in this stage
        self.eval_before: dict | None = None
        self.worker: RolloutWorker | None = None
        self._build_plugins()
        self._build_training()

    # ------------------------------------------------------------------ building
    def _build_plugins(self) -> None:
        e, spec, i = self.engine, self.spec, self.index
        ctx = e._context(spec.optimizer.type, spec.name)
        ctx.sampling = sampling_params(spec.rollout)
        ctx.system_prompt = spec.rollout.system_prompt
        ctx.overlap = spec.rollout.overlap
        ctx.is_cap, ctx.logprob_mismatch = spec.rollout.is_cap, spec.rollout.logprob_mismatch
        self.ctx = ctx
        self.optimizer = e.reg.get("optimizers", spec.optimizer.type)(e.recipe.options("stage", i, "optimizer"), ctx)
        if self.resumed is None and e.starts_fresh_adapter():
            e._restart_adapter(spec)
        self.models = build_models(self.optimizer.roles(), e.policy, e.tokenizer)
        self.backend = e.reg.get("backends", spec.rollout.backend)(e.recipe.options("backend", i), ctx)
        self.environment = None if spec.environment is None else e.reg.get("environments", spec.environment.type)(
            e.recipe.options("environment", i), e._context(spec.environment.type, spec.name))
        self.agents = None if spec.agent is None else AgentRunner(
            _load_agent(spec.agent.function, e.recipe), self.backend, e.policy, e.tokenizer,
            sampling_params(spec.rollout), context_length(e.policy.config) or 2048, spec.agent.timeout_s,
            spec.agent.batch_wait_ms / 1000)
        self.mixer = e._mixer(i, spec.rewards.sources, "source", spec.rewards.normalize, spec.rewards.max_error_rate)
        self.eval_mixer = e._mixer(i, spec.eval_sources, "eval_source" if spec.eval.sources is not None else "source",
                                   "none", 1.0, role="eval")
        if self.main:
            e.run.describe_sources(spec.name, {slot.spec.name: slot.source.describe()
                                               for slot in self.mixer.slots + self.eval_mixer.slots})
        self.train_rows = e.data[i].train
        eval_rows = e.data[i].eval[: spec.eval.num_prompts] if e.data[i].eval is not None else []
        self.local_eval = self.dist.split(eval_rows)
        e._check_lengths(self.train_rows, bool(self.mixer.slots) and self.optimizer.feedback != "demonstrations", spec)
        self.dist.check_models(self.models, f"{e.recipe.path}: stages[{i}].optimizer.critic")
        self.sampler = datasets.Sampler(len(self.train_rows), e.recipe.seed + i)
        # every rank reaches the same verdicts from the same gathered metrics; rank 0 says them
        self.health = Health(spec.health, spec.name, ctx.warn if self.main else lambda msg: None, spec.train.steps,
                             e.run.dir / "bad_batches")
        self.best = KeepBest(spec.eval.keep_best or "eval/reward", spec.eval.keep_best_mode,
                             e.run.dir / "best" / f"{spec.name}.pt", spec.name, spec.health.overfit,
                             ctx.warn if self.main else lambda msg: None)
        self.last_reward: float | None = None   # the training reward of the latest step, for the over-fit alarm
        self.plugins = {"optimizer": self.optimizer, "backend": self.backend, "health": self.health,
                        "keep_best": self.best,
                        **{f"source:{slot.spec.name}": slot.source for slot in self.mixer.slots}}

    def _build_training(self) -> None:
        e, train = self.engine, self.spec.train
        trained = [m for m in self.optimizer.trainable(self.models) if any(p.requires_grad for p in m.parameters())]
        params = [p for m in trained for p in m.parameters() if p.requires_grad]
        self.precision = Precision(train.precision, self.dist.device, f"stages[{self.index}].train.precision")
        if self.main and (slow := self.precision.warning()):
            self.ctx.warn(slow)
        opt = adamw(params, self.dist.device, lr=train.lr, weight_decay=train.weight_decay, betas=train.adam_betas)
        self.wrapped, self.opt = self.dist.prepare(trained, opt)
        # the optimizer's forward passes go through the wrapped modules (gradients are averaged
        # across ranks); generation, evaluation and saving use the plain ones
        self.swap = {id(m): w for m, w in zip(trained, self.wrapped)}
        self.train_models = dataclasses.replace(self.models, **{
            role: self.swap.get(id(m), m) for role in ("policy", "critic", "reward_model")
            if (m := getattr(self.models, role)) is not None})
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _schedule(train))
        e.wrapped_policy = self.swap.get(id(e.policy))

    # ------------------------------------------------------------------ the stage
    def run(self) -> None:
        e, spec = self.engine, self.spec
        first = self._start()
        self.dist.diverge_sampling()
        self._start_worker()
        e.policy.train()
        bar = tqdm(range(first, spec.train.steps + 1), desc=spec.name, disable=not e.progress,
                   dynamic_ncols=True, leave=True, initial=first - 1, total=spec.train.steps)
        try:
            for step in bar:
                metrics = self.step(step)
                bar.set_postfix(_postfix(metrics), refresh=False)
                if e.signal or (spec.checkpoint.every and step % spec.checkpoint.every == 0):
                    path = self.save_checkpoint(step)
                    if e.signal:
                        raise RunStopped(f"{e.signal} received: checkpoint saved at {path}")
        finally:
            if self.worker is not None:
                self.worker.close()
            if self.agents is not None:   # the endpoint stops with the stage, however it ends
                self.agents.close()
        bar.close()
        self._finish()

    def _start(self) -> int:
        """The first step to take: 1 after the eval before the stage, or the step after the checkpoint."""
        e, resumed = self.engine, self.resumed
        if resumed is None:
            self.eval_before = self.evaluate()
            e._log({**self.eval_before, "stage": self.spec.name, "step": 0})
            self._offer_best(0, self.eval_before)
            return 1
        self.opt.load_state_dict(resumed["optimizer"])
        self.precision.load_state_dict(resumed.get("precision", {}))
        self.sched.load_state_dict(resumed["scheduler"])
        self.sampler.load_state_dict(resumed["sampler"])
        for key, plugin in self.plugins.items():
            plugin.load_state_dict(resumed["plugins"].get(key, {}))
        for role, module in _roles(self.models).items():
            module.load_state_dict(torch.load(e.resume_path / f"{role}.pt", weights_only=True))
        self.version, self.eval_before = resumed["version"], resumed["eval_before"]
        ckpt.set_rng_state(resumed["rng"])  # last: building models above drew random numbers
        return resumed["step"] + 1

    def _start_worker(self) -> None:
        spec = self.spec
        if not spec.rollout.overlap:
            return
        seed = (self.engine.recipe.seed + 1000 * self.index) * 1009 + self.dist.rank   # ranks sample apart
        self.worker = RolloutWorker(self.backend, self.engine.policy, self.engine.tokenizer, self.train_rows,
                                    sampling_params(spec.rollout), spec.rollout.num_generations,
                                    spec.rollout.system_prompt, seed)
        if self.resumed is not None:
            self.worker.load_state_dict(self.resumed.get("rollouts_in_flight", {}))

    def step(self, step: int) -> dict[str, Any]:
        """One optimizer step: rows, rollouts, feedback, the update; its metrics, logged."""
        e, spec = self.engine, self.spec
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {}
        with self.dist.stop_together():  # e.g. a source's error rate: every rank stops, not only this one
            fb = self._step_feedback(step, metrics)
        for slot in self.mixer.slots:
            metrics.update({f"source/{slot.spec.name}/{k}": v for k, v in slot.source.metrics().items()})
        t_gen = time.perf_counter() - t0
        metrics["feedback/size"] = float(len(fb))
        metrics.update(self._optimize(fb, step))
        with warnings.catch_warnings():  # a step without feedback steps no optimizer, yet the schedule moves on
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before", UserWarning)
            self.sched.step()
        self.version += 1
        if self.worker is None:  # the worker hands the weights over with the next batch
            self.backend.sync_weights(e.policy, self.version)
        metrics = self.dist.reduce_metrics(metrics)  # the same numbers on every rank from here on
        e.signal = self.dist.first(e.signal)
        self.optimizer.after_step(metrics)
        metrics.update({"stage": spec.name, "step": step, "lr": self.sched.get_last_lr()[0],
                        "time/generate_s": t_gen, "time/step_s": time.perf_counter() - t0})
        if isinstance(metrics.get("reward/mean"), float):
            self.last_reward = metrics["reward/mean"]
        if spec.eval.every and step % spec.eval.every == 0 and step < spec.train.steps:
            evals = self.evaluate()
            metrics.update(evals)
            self._offer_best(step, evals)
        metrics.update(self.health.check(step, metrics))
        e._log(metrics)
        if self.main:
            e.pm.hook.frl_step_end(stage=spec.name, step=step, metrics=metrics)
        return metrics

    def _step_feedback(self, step: int, metrics: dict[str, Any]) -> Any:
        """This step's feedback: offline rows, or rollouts (generated now, or handed over by the worker)
        scored and shaped."""
        e, spec = self.engine, self.spec
        offline = self.optimizer.feedback == "demonstrations" or not self.mixer.slots
        if self.worker is not None:  # online by the recipe's check; the worker took these rows a step ago
            rollouts = self._overlapped(step, metrics)
        else:
            rows = self.dist.shard([self.train_rows[k] for k in self.sampler.take(spec.train.batch_size)])
            if offline:
                return shapes.from_rows(self.optimizer.feedback, rows, e.tokenizer, spec.rollout.system_prompt)
            if self.agents is not None:
                rollouts = self._agents(rows, metrics)
            else:
                rollouts = self._generate(rows) if self.environment is None else self._play(rows, step, metrics)
        return self._feedback(step, rollouts, metrics)

    def _finish(self) -> None:
        """Evaluate after the stage, save what it produced; the stage's end is a checkpoint."""
        e, spec, i = self.engine, self.spec, self.index
        after = self.evaluate()
        e._log({**after, "stage": spec.name, "step": spec.train.steps})
        self._offer_best(spec.train.steps, after)
        e.summary["stages"][spec.name] = {"eval_before": self.eval_before, "eval_after": after}
        produced = self.optimizer.stage_output(self.models)
        if spec.eval.keep_best:
            self.dist.barrier()   # rank 0 wrote the best weights
            kept = self.best.restore_into(produced, spec.train.steps)
            if kept is not None:   # the stage's output is the best eval's model, and its eval the "after"
                e.summary["stages"][spec.name].update(eval_after=kept["eval"], last_eval=after, kept_best={
                    "metric": spec.eval.keep_best, "value": kept["value"], "step": kept["step"]})
        if (sums := self.dist.same_weights(produced, spec.name)) is not None:
            e.summary["stages"][spec.name]["rank_checksums"] = sums
        out = e.run.dir / "stages" / spec.name
        whole = self.dist.full_state_dict(self.swap.get(id(produced)))
        if self.main:
            save_model(out, f"the output of stage '{spec.name}'", produced, e.tokenizer, whole)
        # the stage's end is a checkpoint: a run stopped later resumes at the next stage, from `out`
        shared = produced is e.policy
        whole = None if shared else self.dist.full_state_dict(e.wrapped_policy)
        if self.main:
            ckpt.save_stage_end(e.run.dir, i, [s.name for s in e.recipe.stages], e.policy, e.tokenizer,
                                {"global_step": e.global_step, "summary": e.summary}, spec.checkpoint.keep,
                                out if shared else None, whole)
            e.pm.hook.frl_checkpoint_saved(stage=spec.name, step=spec.train.steps, path=out)
        self.dist.barrier()
        for closable in (self.mixer, self.eval_mixer, self.optimizer, self.backend, self.environment, self.agents):
            if closable is not None:
                closable.close()

    # ------------------------------------------------------------------ evaluation and checkpoints
    def evaluate(self) -> dict[str, float]:
        e, spec = self.engine, self.spec
        if self.worker is not None:  # the backend serves one caller at a time, with the current weights
            self.worker.wait()
            self.backend.sync_weights(e.policy, self.version)
        # a stage with an environment is evaluated on episodes; the same seed before and after, so the two
        # evals play the same games
        episodes = None if self.environment is None else EpisodeEval(
            self.environment, self.environment.options.max_turns, context_length(e.policy.config) or 2048,
            (e.recipe.seed + 1000 * self.index) * 100_003 + self.dist.rank)
        out = evaluate(self.backend, e.policy, e.tokenizer, self.local_eval, self.eval_mixer,
                       spec.eval.max_new_tokens or spec.rollout.max_new_tokens, spec.eval.batch_size,
                       spec.rollout.system_prompt, episodes)
        with torch.no_grad():
            out.update(self.optimizer.evaluate(self.local_eval, self.models))
        return self.dist.reduce_metrics(out, weight=len(self.local_eval))

    def _offer_best(self, step: int, evals: dict[str, float]) -> None:
        """The eval of ``step`` to the keep-best record (and the over-fit alarm); its weights saved when best."""
        def weights() -> dict[str, torch.Tensor] | None:
            produced = self.optimizer.stage_output(self.models)
            whole = self.dist.full_state_dict(self.swap.get(id(produced)))
            return (whole if whole is not None else produced.state_dict()) if self.main else None
        keep = self.spec.eval.keep_best is not None
        self.best.offer(step, evals, self.last_reward, weights if keep else lambda: None)

    def save_checkpoint(self, step: int) -> Path:
        e, spec = self.engine, self.spec
        name = ckpt.tag(self.index, spec.name, step)
        whole = self.dist.full_state_dict(e.wrapped_policy)
        if self.main:  # the weights are the same on every rank; rank 0 writes them
            ckpt.save(e.run.dir, name, e.policy, e.tokenizer, _roles(self.models), {
                "stage_index": self.index, "stage": spec.name, "step": step, "global_step": e.global_step,
                "version": self.version, "eval_before": self.eval_before,
                "summary": e.summary, "optimizer": self.opt.state_dict(), "precision": self.precision.state_dict(),
                "scheduler": self.sched.state_dict(), "sampler": self.sampler.state_dict(),
                "plugins": {k: p.state_dict() for k, p in self.plugins.items()},
                "rollouts_in_flight": self.worker.state_dict() if self.worker is not None else {},
                "world_size": self.dist.world,
            }, spec.checkpoint.keep, policy_state=whole)
            e.pm.hook.frl_checkpoint_saved(stage=spec.name, step=step, path=ckpt.folder(e.run.dir) / name)
        self.dist.barrier()
        return ckpt.folder(e.run.dir) / name

    # ------------------------------------------------------------------ rollouts and feedback
    def _generate(self, rows: list[dict]) -> list:
        """This rank's rollouts of ``rows``, generated now by the current policy."""
        e, ro = self.engine, self.spec.rollout
        rollouts = generate_rollouts(self.backend, e.policy, e.tokenizer, rows, sampling_params(ro),
                                     ro.num_generations, policy_version=self.version, system_prompt=ro.system_prompt)
        self.dist.tag_rollouts(rollouts, len(rows))
        return rollouts

    def _play(self, rows: list[dict], step: int, metrics: dict[str, Any]) -> list:
        """This rank's rollouts of ``rows`` as episodes against the stage's environment (loop/episodes.py)."""
        e, ro = self.engine, self.spec.rollout
        seed = ((e.recipe.seed + 1000 * self.index) * 100_003 + step) * 1009 + self.dist.rank
        rollouts, env_metrics = play_episodes(
            self.backend, e.policy, e.tokenizer, self.environment, rows, sampling_params(ro), ro.num_generations,
            self.environment.options.max_turns, context_length(e.policy.config) or 2048,
            policy_version=self.version, seed=seed, system_prompt=ro.system_prompt)
        self.dist.tag_rollouts(rollouts, len(rows))
        metrics.update(env_metrics)
        return rollouts

    def _agents(self, rows: list[dict], metrics: dict[str, Any]) -> list:
        """This rank's rollouts of ``rows`` as agent episodes through the rollout endpoint (loop/agents.py)."""
        rollouts, env_metrics = self.agents.play(rows, self.spec.rollout.num_generations, self.version)
        self.dist.tag_rollouts(rollouts, len(rows))
        metrics.update(env_metrics)
        return rollouts

    def _overlapped(self, step: int, metrics: dict[str, Any]) -> list:
        """This step's rollouts from the worker, and the next step's handed to it before this one trains."""
        e, worker, size = self.engine, self.worker, self.spec.train.batch_size
        t = time.perf_counter()
        batch = worker.take(step)
        if batch is None:  # the stage's first step (or a resumed run that held none): generate it now
            worker.submit(step, self.dist.shard(self.sampler.take(size)), e.policy, self.version)
            batch = worker.take(step)
        metrics["time/rollout_wait_s"] = time.perf_counter() - t
        if step < self.spec.train.steps:
            worker.submit(step + 1, self.dist.shard(self.sampler.take(size)), e.policy, self.version)
        rollouts = to_rollouts(batch.prompts, batch.gens, e.tokenizer, worker.stops, batch.version)
        self.dist.tag_rollouts(rollouts, len(batch.indices))
        metrics["rollout/staleness"] = float(self.version - batch.version)
        return rollouts

    def _feedback(self, step: int, rollouts: list, metrics: dict[str, Any]) -> Any:
        """Score and mix this rank's rollouts, and shape what the optimizer consumes."""
        e, spec, mixer = self.engine, self.spec, self.mixer
        everyone = self.dist.gather_flat(rollouts)  # hooks see the whole step, on rank 0
        if self.main:
            e.pm.hook.frl_rollouts_generated(stage=spec.name, step=step, rollouts=everyone)
        scored, reward_metrics = mixer.score(rollouts)
        all_scored = self.dist.gather_scored(everyone, scored)
        if self.main:
            e.pm.hook.frl_scores_mixed(stage=spec.name, step=step, scored=all_scored)
            e._log_rollouts(spec.name, step, all_scored)
        metrics.update(reward_metrics)
        metrics.update(_rollout_metrics(rollouts, scored))
        prefs, pair_metrics = mixer.compare(rollouts)  # first: a blocking queue waits here for this step's labels
        metrics.update(pair_metrics)
        late = []
        for slot in mixer.slots:  # then the judgments that arrived since, of this or earlier steps (people)
            for j in slot.source.collect():
                j.source = slot.spec.name
                late.append(j)
        return shapes.build(self.optimizer.feedback, scored, prefs, late, bool(mixer.pointwise), e.tokenizer,
                            spec.feedback.pair_min_margin, spec.feedback.binary_threshold, spec.rollout.system_prompt)

    # ------------------------------------------------------------------ the update
    def _optimize(self, fb: Any, step: int) -> dict[str, float]:
        """The core's batch of ``fb``, the optimizer's minibatches, and an AdamW step after each."""
        totals: dict[str, list[float]] = {}
        batches = []
        if len(fb):  # the core's batch, on the policy's device, with importance weights: then the plugin's own
            with self._forward():
                batch = batching.for_optimizer(self.optimizer, fb, self.train_models, self.version)
                batches = list(self.optimizer.minibatches(self.optimizer.prepare(batch, self.train_models)))
            totals.update({k: [v] for k, v in batch.metrics.items()})
        n = self.dist.max(len(batches))  # ranks with fewer minibatches add zero gradients to the rest
        for k in range(n):
            mb = batches[k] if k < len(batches) else None
            m = self._update(mb, fb, step, k)
            for key, v in m.items():
                totals.setdefault(key, []).append(float(v))
        return {k: sum(v) / len(v) for k, v in totals.items()}

    @contextmanager
    def _forward(self) -> Iterator[None]:
        """What every training forward runs under: the precision's autocast, packed rows when asked."""
        with self.precision.autocast(), padding_free(self.spec.train.padding_free):
            yield

    def _update(self, mb: Any, fb: Any, step: int, k: int) -> dict[str, float]:
        """One minibatch's loss, backward, clipping and step (a rank without one adds zero gradients)."""
        opt, spec = self.opt, self.spec
        opt.zero_grad(set_to_none=True)
        with self._forward():
            if mb is not None:
                loss, m = self.optimizer.loss(mb, self.train_models)
            else:
                loss, m = idle_loss(self.wrapped, self.engine.tokenizer.pad_token_id), {}
        finite = bool(torch.isfinite(loss))
        if self.worker is not None:  # the backward and the step run on every thread (overlap.py says why)
            self.worker.wait()
        if finite or self.dist.lockstep:  # a rank that skipped backward would leave the others waiting
            self.precision.backward(loss, self.dist.backward)
            self.precision.unscale(opt)
            params = [p for g in opt.param_groups for p in g["params"]]
            gnorm = self.dist.clip_grad_norm(params, spec.train.max_grad_norm)
            # averaged gradients: the same verdict on every rank; fp16's scaler skips an overflow itself
            finite = bool(torch.isfinite(gnorm)) or self.precision.scales
        if not finite:  # skip the update; keep the batch for a post-mortem
            opt.zero_grad(set_to_none=True)
            where = self._save_bad_batch(step, k, fb, mb)
            msg = f"stage '{spec.name}' step {step}: non-finite loss or gradient; batch saved to {where}"
            if spec.health.nonfinite == "stop":
                raise RunStopped(msg)
            return {"health/nonfinite_skips": 1.0}   # run/health.py warns, and stops past its budget
        if float(gnorm) == 0.0 and not self.precision.scales:   # the same verdict on every rank
            # feedback without signal (every advantage 0): AdamW would still move the weights on its momentum
            opt.zero_grad(set_to_none=True)
            return {} if mb is None else {"loss": loss.item(), "grad_norm": 0.0, "health/zero_gradient_steps": 1.0, **m}
        self.precision.step(opt)
        if mb is None:
            return {}
        return {"loss": loss.item(), "grad_norm": float(gnorm), **m}

    def _save_bad_batch(self, step: int, k: int, feedback: Any, minibatch: Any) -> Path:
        rank = f"-rank{self.dist.rank}" if self.dist.world > 1 else ""  # every rank skips the step: one file each
        where = self.engine.run.dir / "bad_batches" / f"{self.spec.name}-step{step}-mb{k}{rank}.pt"
        # no room for it is a failure, not a warning: a disk without room for a batch has none for the next
        # checkpoint, so the steps until then would be lost anyway (run/writes.py)
        return save_file(where, f"the non-finite batch of stage '{self.spec.name}' step {step}, kept for inspection",
                         lambda tmp: torch.save({"feedback": feedback, "minibatch": minibatch}, tmp))


def _load_agent(function: str, recipe: Any) -> Any:
    from feedback_rl.config.agent_ref import AgentRefError, load_agent
    try:
        return load_agent(function, recipe.base_dir)
    except AgentRefError as e:   # frl validate said so already; the file changed since
        raise UserError(f"{recipe.path}: agent.function: {e}") from None


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
    # a split episode's later segments hold its later turns
    length = sum(len(r.completion_ids) + sum(len(x.completion_ids) for x in r.segments) for r in rollouts)
    return {"rollout/completion_len": length / n,
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
