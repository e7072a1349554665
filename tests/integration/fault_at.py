"""``python fault_at.py FAULT frl-args...``: the real ``frl`` command line meeting a fault on purpose.

FAULT is one of
    enospc:<path>@<n>[,<path>@<n>...]  from the n-th write on, every write to a file whose path ends with
                       <path> fails as on a full disk (a disk stays full), in the words of the writer
                       that meets it: Python's ``OSError(ENOSPC)`` without a file name for text files and
                       for a copy's ``sendfile`` (shutil then names both files), safetensors' and torch's own
                       messages for ``*.safetensors`` and ``torch.save`` (as measured on a full tmpfs)
    sigint2:<stage>:<n> SIGINT when step n ends (the run checkpoints and stops), and a second SIGINT
                       inside that checkpoint's write

CI has no tmpfs to fill, so the writers are wrapped here, in this process only.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import feedback_rl

FULL: dict[str, int] = {}
WRITES: Counter = Counter()


def full(path) -> bool:
    """Whether this write to ``path`` meets the full disk (and count it)."""
    for suffix, n in FULL.items():
        if str(path).endswith(suffix):
            WRITES[suffix] += 1
            return WRITES[suffix] >= n
    return False


def partial(path, size: int) -> None:
    """The first ``size`` bytes of a file, as far as the disk had room (not through the wrapped open)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"\0" * size)
    os.close(fd)


class FullFile:
    def __init__(self, f, path):
        self._f, self._path = f, path

    def write(self, data):
        if full(self._path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_disk(spec: str) -> None:
    for part in spec.split(","):
        path, _, n = part.rpartition("@")
        FULL[path] = int(n)
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and any(str(file).endswith(s) for s in FULL):
            return FullFile(f, file)
        return f

    builtins.open = io.open = fake_open
    real_sendfile = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):  # how shutil copies a file on Linux: no Python write to wrap
        if full(os.readlink(f"/proc/self/fd/{out_fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_sendfile(out_fd, in_fd, offset, count)

    os.sendfile = sendfile

    import torch
    import transformers.modeling_utils as mu
    from safetensors import SafetensorError
    real_save, real_safe = torch.save, mu.safe_save_file

    def save(obj, f, *args, **kwargs):
        if full(f):
            partial(f, 534)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, f, *args, **kwargs)

    def safe_save(tensors, filename, *args, **kwargs):
        if full(filename):
            partial(filename, 100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_safe(tensors, filename, *args, **kwargs)

    torch.save, mu.safe_save_file = save, safe_save


class SecondSignal:
    """SIGINT when a step ends, and again while the checkpoint it asked for is being written."""

    def __init__(self, what: str):
        self.what, self.armed = what, False
        import torch
        real = torch.save

        def save(obj, f, *args, **kwargs):
            if self.armed and Path(str(f)).parent.name.startswith(".tmp-"):
                os.kill(os.getpid(), signal.SIGINT)
            return real(obj, f, *args, **kwargs)

        torch.save = save

    @feedback_rl.hookimpl
    def frl_step_end(self, stage, step, metrics):
        if self.what == f"{stage}:{step}":
            self.armed = True
            os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    fault, args = sys.argv[1], sys.argv[2:]
    kind, _, what = fault.partition(":")
    from feedback_rl.commands.cli import main as frl
    from feedback_rl.plugins import default
    if kind == "enospc":
        fill_disk(what)
    elif kind == "sigint2":
        default()[0].register(SecondSignal(what))
    sys.exit(frl(args))


if __name__ == "__main__":
    main()
