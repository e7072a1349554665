"""A write into a run folder that fails (a full disk, a quota, an I/O error) ends the run in one line
naming the file and what was being written, instead of a chain of tracebacks.

The writers raise their own kinds of error: Python's ``OSError``, torch's ``RuntimeError`` ("unexpected
pos 576 vs 534", which names neither the file nor the disk), safetensors' ``SafetensorError`` ("No space
left on device (os error 28)"). :func:`writing` wraps one write and turns any of them into
:class:`~feedback_rl.errors.RunFailed`; :func:`failure` does the same for an error that reached the top
of a run without passing one (a logger plugin's file, the stage output).
"""
from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from feedback_rl.errors import RunFailed

DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # not EIO: a read fails with it too
# how the C++ and Rust writers say that the disk is full (they raise no OSError) ...
DISK_FULL = ("No space left", "os error 28", "Disk quota")
# ... and that a write failed, which only a known write may be read as (a read says "I/O error" too)
WRITE_FAILED = DISK_FULL + ("unexpected pos", "iostream error", "file write failed", "I/O error")
WHAT = {"metrics.jsonl": "the step's metrics", "rollouts.jsonl": "the step's rollouts",
        "status.json": "the run's status", "recipe.lock.yaml": "the run's lock"}


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Run one write of ``what`` to ``path``; a failure to write becomes one line naming both."""
    try:
        yield
    except RunFailed:
        raise
    except Exception as e:  # noqa: BLE001 (only write failures are turned; the rest passes through)
        found = failure(e, path, what, writes=True)
        if found is None:
            raise
        raise found from None


def failure(e: BaseException, path: Path, what: str | None = None, writes: bool = False) -> RunFailed | None:
    """``e`` as one line if it is a failure to write (``path``: the file, or the run folder when the error
    names no file), else None. ``writes``: ``e`` was raised by a write."""
    if isinstance(e, RunFailed):
        return e
    if isinstance(e, OSError) and e.errno in DISK:
        target = Path(e.filename) if e.filename else path
        reason = e.strerror or str(e)
    elif isinstance(e, Exception) and any(w in str(e) for w in (WRITE_FAILED if writes else DISK_FULL)):
        target, reason = path, _reason(e, path)
    else:
        return None
    what = what or WHAT.get(target.name.removesuffix(".tmp"), "")
    return RunFailed(f"cannot write {target}{f' ({what})' if what else ''}: {reason}")


def _reason(e: Exception, path: Path) -> str:
    """What torch's or safetensors' message means, in words: a full disk says so."""
    where = next((p for p in (path, *path.parents) if p.exists()), None)
    if where is not None and shutil.disk_usage(where).free < 1 << 20:
        return "No space left on device"
    return str(e).strip().splitlines()[0]
