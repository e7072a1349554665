"""``python crash_at.py WHERE frl-args...``: the real ``frl`` command line, SIGKILLed at a chosen point.

WHERE is one of
    step:<stage>:<n>   when step n of the stage has ended (its metrics are logged)
    stage-end:<stage>  when the stage ended: its output and its end-of-stage checkpoint are complete
    write:<tag>        inside the write of checkpoint <tag>: its policy is written, its trainer state
                       half-written, it is not yet complete
    term:<stage>:<n>   not a kill: SIGTERM to itself when step n ends (the run checkpoints and stops)
    wait:<stage>:<n>   not a kill: print PAUSED when step n ends and sleep until killed

A plugin registered in this process finds the point through the run's own hooks; the kill inside a
checkpoint write wraps ``torch.save`` (the last file a checkpoint writes). SIGKILL gives the run no
chance to clean up, as a power cut or the OOM killer would not.

The tests import :func:`frl`, :func:`crashed` and :func:`tree_hash` from here.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import feedback_rl

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def frl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``frl`` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def crashed(where: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``frl ARGS`` run through this harness, dying (or stopping) at ``where``."""
    return subprocess.run([sys.executable, __file__, where, *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


RULE = '[{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}]'


def two_stage_recipe(folder: Path, runs: Path | str, name: str = "crash.yaml",
                     sft_data: str = "{generator: addition, size: 24}", grpo_sources: str = RULE,
                     lora: bool = False) -> Path:
    """SFT (4 steps, a checkpoint every 2) then GRPO (3 steps, no checkpoints of its own) on a tiny model
    (with ``lora``, a LoRA adapter: folded into the base at the boundary, a fresh one for GRPO)."""
    adapter = ", lora: {r: 4, alpha: 8}" if lora else ""
    path = folder / name
    path.write_text(textwrap.dedent(f"""\
        name: crash
        seed: 5
        output_dir: {runs}
        model: {{path: builtin:tiny-gpt2, tiny: {{n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}{adapter}}}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: {sft_data}, eval: {{generator: addition, split: eval}}}}
            train: {{steps: 4, batch_size: 4, lr: 1.0e-2}}
            eval: {{num_prompts: 4}}
            checkpoint: {{every: 2, keep: 2}}
          - name: grpo
            optimizer: {{type: grpo, beta: 0.1}}
            data: {{train: {{generator: addition, size: 24}}, eval: {{generator: addition, split: eval}}}}
            rewards: {{sources: {grpo_sources}}}
            rollout: {{num_generations: 4, max_new_tokens: 3}}
            train: {{steps: 3, batch_size: 2, lr: 1.0e-2}}
            eval: {{num_prompts: 4}}
        """))
    return path


def tree_hash(folder: Path) -> str:
    """Every path and byte under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    def __init__(self, where: str):
        self.kind, _, self.what = where.partition(":")

    @feedback_rl.hookimpl
    def frl_step_end(self, stage, step, metrics):
        if self.what != f"{stage}:{step}":
            return
        if self.kind == "step":
            die()
        if self.kind == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        if self.kind == "wait":
            print("PAUSED", flush=True)
            while True:
                time.sleep(1)

    @feedback_rl.hookimpl
    def frl_checkpoint_saved(self, stage, step, path):
        if self.kind == "stage-end" and self.what == stage and Path(path).parent.name == "stages":
            die()


def kill_inside_writes(tag: str) -> None:
    import torch
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if Path(str(f)).parent.name == f".tmp-{tag}":
            real(obj, f, *args, **kwargs)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            die()
        return real(obj, f, *args, **kwargs)

    torch.save = save


def main() -> None:
    where, args = sys.argv[1], sys.argv[2:]
    from feedback_rl.commands.cli import main as frl
    from feedback_rl.plugins import default
    killer = Killer(where)
    default()[0].register(killer)
    if killer.kind == "write":
        kill_inside_writes(killer.what)
    sys.exit(frl(args))


if __name__ == "__main__":
    main()
