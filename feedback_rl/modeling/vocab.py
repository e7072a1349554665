"""Whether a model can read another model's token ids: both tokenizers give every id the same token and
agree on the special tokens. A vocabulary of the same size proves nothing (a reward model with another
tokenizer of that size reads every sampled id as some other token, and scores garbage without a word).
"""
from __future__ import annotations

from typing import Any

# pad is not compared: a score is read at the last real token, found from the attention mask, so the
# pad id never reaches a model as a token that counts (and the core sets pad = EOS where none is set)
SPECIAL = ("bos_token", "eos_token", "unk_token")
SHOWN = 3  # differing ids quoted in the message; the count says how many there are


def tokenizer_difference(mine: Any, theirs: Any, names: tuple[str, str] = ("the policy's", "the model's")) -> \
        str | None:
    """None when ``theirs`` reads every id as ``mine`` does; else one line saying which ids differ."""
    a, b = _by_id(mine), _by_id(theirs)
    ids = sorted(i for i in a.keys() | b.keys() if a.get(i) != b.get(i))
    parts = []
    if ids:
        shown = "; ".join(f"id {i} is {_token(a.get(i))} in {names[0]}, {_token(b.get(i))} in {names[1]}"
                          for i in ids[:SHOWN])
        more = "; ..." if len(ids) > SHOWN else ""
        parts.append(f"{len(ids)} token {'ids differ' if len(ids) > 1 else 'id differs'} ({shown}{more})")
    for name in SPECIAL:
        x, y = getattr(mine, f"{name}_id", None), getattr(theirs, f"{name}_id", None)
        if x != y:
            parts.append(f"{name} is {_id(x)} in {names[0]}, {_id(y)} in {names[1]}")
    return "; ".join(parts) or None


def _by_id(tokenizer: Any) -> dict[int, str]:
    return {i: t for t, i in tokenizer.get_vocab().items()}


def _token(token: str | None) -> str:
    return "absent" if token is None else repr(token)  # repr: a newline token stays on one line


def _id(i: int | None) -> str:
    return "unset" if i is None else f"id {i}"
