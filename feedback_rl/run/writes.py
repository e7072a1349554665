"""Every write into a run folder goes through here, so that one that fails (a full disk, a quota, an I/O
error) ends the run in one line naming the file and what was being written, instead of a chain of
tracebacks, and leaves no half-written file or folder where a whole one is expected.

The writers raise their own kinds of error: Python's ``OSError``, torch's ``RuntimeError`` ("unexpected
pos 576 vs 534", which names neither the file nor the disk), safetensors' ``SafetensorError`` ("No space
left on device (os error 28)"). :func:`writing` wraps one write and turns any of them into
:class:`~feedback_rl.errors.RunFailed`; :func:`save_file` and :func:`save_folder` write a file or a
folder whole or not at all (under a temporary name, renamed into place when complete, removed when
not); :func:`failure` turns an error that reached the top of a run without passing one of them (a
third-party plugin's own file) into the same line.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from feedback_rl.errors import RunFailed

DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # not EIO: a read fails with it too
# how the C++ and Rust writers say that the disk is full (they raise no OSError) ...
DISK_FULL = ("No space left", "os error 28", "Disk quota")
# ... and that a write failed, which only a known write may be read as (a read says "I/O error" too)
WRITE_FAILED = DISK_FULL + ("unexpected pos", "iostream error", "file write failed", "I/O error")
# safetensors' words: it names no file, but in a folder the one it was writing is its newest .safetensors
SAFETENSORS = "Error while serializing"


def line(path: Path, what: str | None, reason: str) -> RunFailed:
    """The one line a failed write ends in (``reason`` kept on it, for a caller that names another file)."""
    failed = RunFailed(f"cannot write {path}{f' ({what})' if what else ''}: {reason}")
    failed.reason = reason
    return failed


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Run one write of ``what`` to ``path`` (a file, or a folder a library fills); a failure to write
    becomes one line naming both."""
    try:
        yield
    except RunFailed:
        raise
    except Exception as e:  # noqa: BLE001 (only write failures are turned; the rest passes through)
        found = failure(e, path, what, writes=True)
        if found is None:
            raise
        raise found from None


def save_file(path: Path, what: str, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` writes ``path``'s content to ``<path>.tmp``, which replaces ``path`` once whole, so that
    ``path`` is whole or as it was. A file that cannot be finished is removed (its space is what a full disk
    needs back), and the failure is one line naming ``path`` (the file the user knows; its .tmp is gone)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(tmp, what):
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, path)
    except RunFailed as e:
        tmp.unlink(missing_ok=True)
        raise line(path, what, getattr(e, "reason", str(e))) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_folder(folder: Path, what: str, write: Callable[[Path], None], kind: str = "folder") -> Path:
    """``write(tmp)`` fills ``.tmp-<name>`` beside ``folder``, which replaces ``folder`` once complete, so
    that ``folder`` is whole or absent, never half-written (a model loaded from it would fail later, or
    worse, not). A folder that cannot be finished is removed, and the failure is one line (a second
    Ctrl-C while writing it says what was abandoned). ``kind``: what the message calls it."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a kill during an earlier try
    try:
        with writing(tmp, what):
            tmp.mkdir(parents=True)
            write(tmp)
    except (Exception, KeyboardInterrupt) as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a kill leaves it: the next try removes it first
        if isinstance(e, RunFailed):
            raise RunFailed(f"{e}; the unfinished {kind} was removed") from None
        if isinstance(e, KeyboardInterrupt):  # a second Ctrl-C while writing
            raise KeyboardInterrupt(f"{what} was abandoned unfinished and removed") from None
        raise
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


def save_model(folder: Path, what: str, model: Any, tokenizer: Any = None, state_dict: dict | None = None) -> Path:
    """A model folder in HF format (``save_pretrained``, loadable by ``from_pretrained``), whole or absent."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return save_folder(folder, what, write)


def failure(e: BaseException, path: Path, what: str | None = None, writes: bool = False) -> RunFailed | None:
    """``e`` as one line if it is a failure to write (``path``: the file or folder written, or the run
    folder when the error comes from no known write), else None. ``writes``: ``e`` was raised by a write."""
    if isinstance(e, RunFailed):
        return e
    if isinstance(e, OSError) and e.errno in DISK:
        # a copy (shutil) names its source first and the file it was writing second
        target = Path(e.filename2 or e.filename) if e.filename else path
        reason = e.strerror or str(e)
    elif isinstance(e, Exception) and any(w in str(e) for w in (WRITE_FAILED if writes else DISK_FULL)):
        target = _safetensors_file(path) if writes and SAFETENSORS in str(e) else path
        reason = _reason(e, path)
    else:
        return None
    return line(target, what, reason)


def _safetensors_file(path: Path) -> Path:
    """The file safetensors was writing when it failed: ``path``, or in a folder that ``save_pretrained``
    fills, its newest ``.safetensors`` (shards are written in name order, so a tie goes to the later name).
    Other failures inside such a folder name the folder: Python's own writes on a full disk raise an
    ``OSError`` without a file name (measured: a tokenizer saved onto a full tmpfs), and a guess among
    files written within one clock tick could name the wrong one."""
    if not path.is_dir():
        return path
    found = [(p.stat().st_mtime_ns, str(p), p) for p in path.rglob("*.safetensors") if p.is_file()]
    return max(found)[2] if found else path


def _reason(e: Exception, path: Path) -> str:
    """What torch's or safetensors' message means, in words: a full disk says so."""
    where = next((p for p in (path, *path.parents) if p.exists()), None)
    if where is not None and shutil.disk_usage(where).free < 1 << 20:
        return "No space left on device"
    return str(e).strip().splitlines()[0]
