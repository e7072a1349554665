"""Errors that speak to the user: one line, no traceback, exit code 2."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (recipe, data file, command line).

    The CLI prints ``str(error)`` on one line and exits with code 2.
    """

    exit_code = 2


class RunStopped(Exception):
    """The run stopped on purpose (a health limit, an error-rate limit). Exit code 1."""

    exit_code = 1


class RunFailed(Exception):
    """The run could not go on for a cause outside its input (a full disk): one line, exit code 1."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_text(path: Path, what: str) -> str:
    """A file's text; a file that is not UTF-8 is a one-line error naming the line of the first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                        f"{e.start}); save it as UTF-8") from None
