"""``frl plot RUN_DIR``: PNG charts of a run, one figure per subject, a panel per metric.

Charts: reward per source, KL, entropy, completion length, loss, and eval metrics, each with the
stages in order along one step axis (stage boundaries drawn as dashed lines).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from feedback_rl.errors import UserError
from feedback_rl.run.writes import save_file

CHARTS = {
    "rewards": ("Reward per source", lambda k: k.startswith("reward/") and k.endswith("/mean")),
    "kl": ("KL to the reference per completion", lambda k: k in ("kl/sequence", "kl_coef")),
    "entropy": ("Policy entropy", lambda k: k == "entropy"),
    "length": ("Completion length (tokens)", lambda k: k in ("rollout/completion_len", "rollout/truncated_rate")),
    "loss": ("Loss", lambda k: k == "loss"),
    "eval": ("Held-out evaluation", lambda k: k.startswith("eval/") and not k.endswith("error_rate")),
}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{run_dir}: no metrics.jsonl (is this a run folder?)")
    rows = []
    text = path.read_text()
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) and not text.endswith("\n"):
                break  # torn: the run was killed while writing it (kill -9); every line before is whole
            raise UserError(f"{path}:{n}: not valid JSON") from None
    return rows


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise UserError(f"{run_dir}: no metrics yet (metrics.jsonl is empty: the run logged no step)")
    out_dir = out_dir or run_dir / "plots"
    x_of, boundaries = _global_x(rows)
    written = []
    for name, (title, wanted) in CHARTS.items():
        keys = sorted({k for r in rows for k, v in r.items() if wanted(k) and isinstance(v, (int, float))})
        if not keys:
            continue
        fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys) + 0.6), squeeze=False, sharex=True)
        for ax, key in zip(axes[:, 0], keys):
            pts = [(x_of(r), r[key], r.get("stage")) for r in rows
                   if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            style = "o-" if name == "eval" else "-"
            ax.plot(xs, ys, style, lw=1.2, ms=4, color="#1f5fa8")
            if len(ys) > 20 and name != "eval":
                for k, (sx, sy) in enumerate(moving_average(pts)):
                    ax.plot(sx, sy, lw=2.2, color="#d1495b", label="moving average" if k == 0 else None)
                ax.legend(loc="best", fontsize=8, frameon=False)
            ax.set_ylabel(key.replace("reward/", "").replace("/mean", ""), fontsize=9)
            ax.grid(alpha=0.3)
            for x, stage in boundaries:
                ax.axvline(x, color="grey", ls="--", lw=0.8)
                ax.text(x, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), fontsize=8, va="top", color="grey")
        axes[-1, 0].set_xlabel("step (all stages)")
        fig.suptitle(f"{title} — {run_dir.name}", fontsize=11)
        fig.tight_layout()
        path = save_file(out_dir / f"{name}.png", f"the {name} plot",
                         lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # format: tmp ends in .tmp
        plt.close(fig)
        written.append(path)
    if not written:
        raise UserError(f"{run_dir}: metrics.jsonl holds none of the charted metrics ({', '.join(CHARTS)})")
    return written


def _global_x(rows: list[dict[str, Any]]):
    """One x axis across stages: each stage starts where the previous one ended."""
    offset, offsets, boundaries, last = 0, {}, [], {}
    for r in rows:
        stage, step = r.get("stage"), r.get("step", 0)
        if stage not in offsets:
            offset += max(last.values(), default=0) if offsets else 0
            offsets[stage] = offset
            boundaries.append((offset, stage))
            last = {}
        last[stage] = step
    return (lambda r: offsets.get(r.get("stage"), 0) + r.get("step", 0)), boundaries


def moving_average(pts: list[tuple], window: int = 20) -> list[tuple[list, list[float]]]:
    """``(xs, smoothed ys)`` per stage, from ``(x, y, stage)`` points: the average restarts at each stage,
    so a stage's first steps are not averaged with the last steps of the stage before."""
    out: list[tuple[list, list]] = []
    last = object()
    for x, y, stage in pts:
        if stage != last:
            out.append(([], []))
            last = stage
        out[-1][0].append(x)
        out[-1][1].append(y)
    return [(xs, _smooth(ys, window)) for xs, ys in out]


def _smooth(ys: list, window: int = 20) -> list[float]:
    out, acc = [], []
    for y in ys:
        acc.append(y)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for the PNGs (RUN_DIR/plots).")
def plot(run_dir: str, out: str | None) -> None:
    """Write PNG charts of a run: rewards per source, KL, entropy, lengths, loss, eval."""
    for path in plot_run(Path(run_dir), Path(out) if out else None):
        click.echo(str(path))
