"""Errors that speak to the user: one line, no traceback, exit code 2."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (recipe, data file, command line).

    The CLI prints ``str(error)`` on one line and exits with code 2.
    """

    exit_code = 2


class RunStopped(Exception):
    """The run stopped on purpose (a health limit, an error-rate limit). Exit code 1."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
