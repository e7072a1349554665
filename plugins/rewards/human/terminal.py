"""Terminal labeling (``frl label cli``) for machines without a browser: the same queue, no HTTP."""
from __future__ import annotations

from typing import Callable

import click

from .store import CHOICES, LabelError, LabelStore

_KEYS = {"pairwise": {"1": "a", "a": "a", "2": "b", "b": "b", "3": "tie", "t": "tie"},
         "thumbs": {"1": "up", "u": "up", "2": "down", "d": "down"},
         "rating": {str(k): str(k) for k in range(1, 6)}}


def label_loop(store: LabelStore, annotator: str, read: Callable[[str], str] = input,
               echo: Callable[[str], None] = click.echo, limit: int | None = None) -> int:
    """Show items one by one; a key labels, ``s`` skips, ``q`` (or end of input) quits."""
    done = 0
    while limit is None or done < limit:
        item = store.next_item(annotator)
        if item is None:
            echo("nothing to label")
            break
        echo(f"\n--- item {item['id']} ({item['task']}); pending: {int(store.stats()['queue_depth'])}")
        if item.get("turns"):  # a conversation, turn by turn; text as quoted literals, as everywhere here
            echo("prompt:\n" + "\n".join(f"  [{t['role']!r}] {t['content']!r}" for t in item["turns"]))
        else:
            echo(f"prompt: {item['prompt']!r}")
        sides = (("A", "a"), ("B", "b")) if item["task"] == "pairwise" else (("completion", "a"),)
        for label, side in sides:
            if item.get(f"{side}_turns"):  # an episode: the model's and the environment's turns, with roles
                echo(f"  {label}:\n" + "\n".join(f"    [{t['role']!r}] {t['content']!r}" for t in item[f"{side}_turns"]))
            else:
                echo(f"  {label}: {item[side]!r}")
        keys = _KEYS[item["task"]]
        hint = "/".join(CHOICES[item["task"]])
        while True:
            try:
                key = read(f"[{hint}; keys {', '.join(k for k in keys if k.isdigit())}; s=skip, q=quit] ").strip()
            except EOFError:
                return done
            if key == "q":
                return done
            if key == "s":
                store.skip(item["id"], annotator)
                break
            if key in keys or key in CHOICES[item["task"]]:
                try:
                    echo(store.submit(item["id"], annotator, keys.get(key, key)))
                except LabelError as e:
                    echo(f"error: {e}")
                    continue
                done += 1
                break
            echo(f"unknown key {key!r}")
    return done
