"""The table printed when a run ends: each stage's eval metrics before and after."""
from __future__ import annotations

from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    rows = [("stage", "metric", "before", "after", "change")]
    for stage, ev in summary.get("stages", {}).items():
        before, after = ev.get("eval_before", {}), ev.get("eval_after", {})
        for key in sorted(set(before) | set(after)):
            b, a = before.get(key), after.get(key)
            change = f"{a - b:+.3f}" if isinstance(a, float) and isinstance(b, float) else ""
            rows.append((stage, key, _fmt(b), _fmt(a), change))
    if len(rows) == 1:  # no stage evaluated anything: a header over nothing says nothing
        return f"status: {summary.get('status')}"
    kept = [f"{stage}: kept the model of step {ev['kept_best']['step']} ({ev['kept_best']['metric']} "
            f"{ev['kept_best']['value']:.3f}), not the last step's"
            for stage, ev in summary.get("stages", {}).items() if ev.get("kept_best")]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"status: {summary.get('status')}\n" + "\n".join(lines + kept)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
