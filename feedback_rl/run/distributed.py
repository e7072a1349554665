"""Several processes, one loop: the engine's view of accelerate.

``frl train --num-processes N`` and ``accelerate launch -m feedback_rl.commands.cli train`` both start N
copies of the engine; accelerate (DDP, FSDP or DeepSpeed, from its config) sets up the process group.
Every rank draws the same global batch of prompts and keeps its own contiguous share, generates and
scores it; gradients are averaged by the wrapped model; metrics are gathered so every rank sees the
same numbers (health checks and adaptive controllers then decide the same thing everywhere); only
rank 0 writes logs, rollouts and checkpoints.

With one process nothing here talks to anyone: the models are the plain modules and the loop is
exactly the single-process loop.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Any, Callable

import torch

from feedback_rl.errors import RunStopped, UserError

# metrics that add up across ranks rather than average
SUMMED = ("feedback/size", "health/nonfinite_skips")


def launched() -> bool:
    """True inside a process started by ``accelerate launch`` / ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Dist:
    def __init__(self) -> None:
        self.acc = None
        self.rank, self.world = 0, 1
        if launched():
            from accelerate import Accelerator
            # without CUDA, accelerate sets up a gloo process group only when told it is on CPU
            self.acc = Accelerator(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.acc.process_index, self.acc.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if self.acc is not None:
            return self.acc.device
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")

    # ------------------------------------------------------------------ data
    def shard(self, items: list, what: str = "batch") -> list:
        """This rank's contiguous share of a global list whose length the world size divides."""
        if self.world == 1:
            return items
        if len(items) % self.world:
            raise UserError(f"{what}: {len(items)} is not divisible by the {self.world} processes")
        k = len(items) // self.world
        return items[self.rank * k:(self.rank + 1) * k]

    def split(self, items: list) -> list:
        """This rank's share of a list of any length (evaluation rows): strided, so sizes differ by one."""
        return items if self.world == 1 else items[self.rank::self.world]

    def gather(self, items: list) -> list:
        """Every rank's list, concatenated in rank order, on every rank."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object
        return gather_object([items])  # it flattens one level: [items] gives back [items_0, items_1, ...]

    def gather_flat(self, items: list) -> list:
        return [x for part in self.gather(items) for x in part] if self.world > 1 else items

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value on every rank."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list
        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            self.acc.wait_for_everyone()

    def max(self, value: int) -> int:
        return value if self.world == 1 else max(self.gather([value])[k][0] for k in range(self.world))

    def first(self, value: Any) -> Any:
        """The first rank's value that is not None (e.g. a signal one rank received), on every rank."""
        if self.world == 1:
            return value
        return next((v[0] for v in self.gather([value]) if v[0] is not None), None)

    @property
    def lockstep(self) -> bool:
        """Several ranks: every one must join every collective call (a gradient all-reduce above all)."""
        return self.world > 1

    def diverge_sampling(self) -> None:
        """After every rank drew the same prompts from the same seed: each samples completions its own way."""
        if self.world > 1:
            torch.manual_seed(int(torch.randint(2**62, (1,))) + self.rank)

    def tag_rollouts(self, rollouts: list, rows_per_rank: int) -> list:
        """Groups and ids unique across ranks, for the logs and the hooks."""
        if self.world > 1:
            for r in rollouts:
                r.group += self.rank * rows_per_rank
                r.uid = f"{r.uid}-rank{self.rank}"
        return rollouts

    def gather_scored(self, everyone: list, scored: list) -> list:
        """The whole step's scored rollouts, given every rank's rollouts already gathered: only the scores
        cross now (the rollouts crossed once)."""
        if self.world == 1:
            return scored
        from feedback_rl.types import Scored
        marks = self.gather_flat([(s.scores, s.reward) for s in scored])
        return [Scored(r, scores, reward) for r, (scores, reward) in zip(everyone, marks)]

    @contextmanager
    def stop_together(self):
        """A :class:`RunStopped` inside (e.g. a source's error rate on one rank) stops every rank."""
        reason = None
        try:
            yield
        except RunStopped as e:
            if self.world == 1:
                raise
            reason = str(e)
        self.agree_stop(reason)

    def same_weights(self, module: torch.nn.Module, stage: str) -> list[str] | None:
        """Several ranks: proof that they ended the stage with the same weights (their checksums)."""
        if self.world == 1:
            return None
        sums = self.checksums(module)
        if len(set(sums)) > 1:
            raise RunStopped(f"stage '{stage}': the {self.world} processes ended with different weights; the run "
                             "is not reproducible across ranks")
        return sums

    def check_models(self, models: Any, where: str) -> None:
        """What one process can do and several cannot."""
        from feedback_rl.modeling.roles import SharedValueHead
        if self.world > 1 and isinstance(models.critic, SharedValueHead):
            raise UserError(f"{where}: a value head shared with the policy's trunk runs in one process; use a "
                            f"separate critic with {self.world} processes")

    def agree_stop(self, reason: str | None) -> None:
        """A stop on any rank stops every rank, with the same message (no rank waits forever)."""
        reason = self.first(reason)
        if reason:
            raise RunStopped(reason)

    def checksums(self, module: torch.nn.Module) -> list[str]:
        """Every rank's SHA-256 of the module's weights: equal when the ranks are in sync."""
        digest = hashlib.sha256()
        for name, t in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return [c[0] for c in self.gather([digest.hexdigest()])] if self.world > 1 else [digest.hexdigest()]

    def reduce_metrics(self, metrics: dict[str, Any], weight: float = 1.0) -> dict[str, Any]:
        """Every rank's metrics, weighted means (sums for counts), identical on every rank."""
        if self.world == 1:
            return metrics
        parts = [p[0] for p in self.gather([(weight, metrics)])]
        out: dict[str, Any] = {}
        keys = list(dict.fromkeys(k for _, m in parts for k in m))
        for key in keys:
            vals = [(w, m[key]) for w, m in parts if key in m]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in vals):
                out[key] = vals[0][1]
            elif key in SUMMED:
                out[key] = float(sum(v for _, v in vals))
            else:
                total = sum(w for w, _ in vals)
                out[key] = sum(w * v for w, v in vals) / total if total else float(vals[0][1])
        return out

    # ------------------------------------------------------------------ training
    def prepare(self, modules: list[torch.nn.Module], optimizer: Any) -> tuple[list[torch.nn.Module], Any]:
        """Wrap the trained modules and their optimizer (DDP, FSDP or DeepSpeed, as accelerate is configured)."""
        if self.world == 1 or not modules:
            return modules, optimizer
        *wrapped, opt = self.acc.prepare(*modules, optimizer)
        return wrapped, opt

    def backward(self, loss: torch.Tensor) -> None:
        if self.acc is None:
            loss.backward()
        else:
            self.acc.backward(loss)

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        if self.acc is None:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        return self.acc.clip_grad_norm_(params, max_norm)

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: no rank holds whole weights, so saving gathers them first."""
        if self.acc is None:
            return False
        from accelerate import DistributedType
        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def full_state_dict(self, wrapped: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
        """The whole weights of a sharded module on rank 0 (a collective: every rank calls it);
        None when the plain module's own state dict is already whole."""
        if not self.sharded or wrapped is None:
            return None
        return self.acc.get_state_dict(wrapped)

    def warn(self, emit: Callable[[str], None]) -> Callable[[str], None]:
        """Rank 0 warns as one process does; other ranks say which rank they are."""
        if self.world == 1 or self.main:
            return emit
        return lambda msg: emit(f"[rank {self.rank}] {msg}")


def idle_loss(modules: list[torch.nn.Module], pad_id: int) -> torch.Tensor:
    """A zero loss through every wrapped module: a rank with no minibatch left still joins the
    gradient all-reduce of the others (it adds zeros), so no rank waits forever."""
    total = None
    for m in modules:
        p = next(m.parameters())
        ids = torch.full((1, 1), pad_id, dtype=torch.long, device=p.device)
        out = m(input_ids=ids, attention_mask=torch.ones_like(ids))
        term = out.logits.float().sum() * 0.0
        total = term if total is None else total + term
    return total


def check_batches(recipe: Any, world: int) -> None:
    """Each rank takes an equal share of every stage's global batch: the world size must divide it."""
    for i, stage in enumerate(recipe.stages):
        if stage.train.batch_size % world:
            raise UserError(f"{recipe.path}: stages[{i}].train.batch_size: {stage.train.batch_size} is not "
                            f"divisible by the {world} processes (each takes an equal share of the global batch)")


def relaunch(args: list[str], num_processes: int) -> int:
    """Run ``frl <args>`` in ``num_processes`` processes with ``accelerate launch``; its exit code.

    On GPUs each process takes one device; on CPU the processes talk over gloo. A user's own
    ``accelerate launch --config_file ... -m feedback_rl.commands.cli train ...`` runs the same entry point.
    """
    import socket
    import subprocess
    import sys
    with socket.socket() as s:  # a free port, so two runs on one machine do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    # the processes share the machine's cores: torch's default (all cores each) oversubscribes them
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "feedback_rl.commands.cli", *args]
    return subprocess.run(cmd, env=env).returncode
