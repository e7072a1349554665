"""``python crash_at.py WHERE frl-args...``: the real ``frl`` command line, SIGKILLed at a chosen point.

WHERE is one of
    step:<stage>:<n>   when step n of the stage has ended (its metrics are logged)
    stage-end:<stage>  when the stage ended: its output and its end-of-stage checkpoint are complete
    write:<tag>        inside the write of checkpoint <tag>: its policy is written, its trainer state
                       half-written, it is not yet complete

A plugin registered in this process finds the point through the run's own hooks; the kill inside a
checkpoint write wraps ``torch.save`` (the last file a checkpoint writes). SIGKILL gives the run no
chance to clean up, as a power cut or the OOM killer would not.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import feedback_rl


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    def __init__(self, where: str):
        self.kind, _, self.what = where.partition(":")

    @feedback_rl.hookimpl
    def frl_step_end(self, stage, step, metrics):
        if self.kind == "step" and self.what == f"{stage}:{step}":
            die()

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
    from feedback_rl.cli import main as frl
    from feedback_rl.plugins import default
    killer = Killer(where)
    default()[0].register(killer)
    if killer.kind == "write":
        kill_inside_writes(killer.what)
    sys.exit(frl(args))


if __name__ == "__main__":
    main()
