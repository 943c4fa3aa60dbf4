"""Text the subcommands print: schedule grids, curve sparklines, summaries and tables.

Everything here returns lines (or one line) and prints nothing, so the subcommands decide what
goes to stdout and the layout is written once for ``calibrate``, ``schedule``, ``show`` and
``adapters``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from smoothcache.curves import ErrorCurves
from smoothcache.schedule import Schedule


def schedule_summary(schedule: Schedule) -> str:
    """One line: the schedule's shape, how it was made and the share of branch-steps computed."""
    meta = schedule.metadata
    how = f"alpha={meta['alpha']:.4g}" if "alpha" in meta else f"method {meta.get('method')}"
    return (
        f"{len(schedule.rows)} rows x {schedule.num_steps} steps, {how}, "
        f"computes {meta.get('compute_fraction', schedule.compute_fraction):.1%} of the model's "
        "branch-steps"
    )


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _ruler(num_steps: int, indent: int) -> list[str]:
    """Two ruler lines: the tens digit every 10 steps, then the units digit of every step."""
    tens = "".join(str(i // 10 % 10) if i % 10 == 0 else " " for i in range(num_steps))
    units = "".join(str(i % 10) for i in range(num_steps))
    return [" " * indent + tens, "step".ljust(indent) + units]


def grid(schedule: Schedule) -> list[str]:
    """Rows of ``#`` (compute), ``.`` (reuse) and ``k`` (forecast of order k) under a step
    ruler, with per-row totals."""
    width = max(len(key) for key in schedule.rows) + 2
    width = max(width, 6)
    n = schedule.num_steps
    lines = _ruler(n, width)
    for key, row in schedule.rows.items():
        orders = schedule.orders.get(key) or (0,) * n
        flags = "".join("#" if f else (str(k) if k else ".") for f, k in zip(row, orders))
        lines.append(f"{key.ljust(width)}{flags}  {sum(row)}/{n} {sum(row) / n:6.1%}")
    if schedule.orders:
        lines.append("('#' compute, '.' reuse, k: forecast of order k from the last k+1 computes)")
    for key, weights in schedule.weights.items():
        fitted = sum(w is not None for w in weights)
        lines.append(f"{key}: {fitted} forecasts with fitted weights (the others Lagrange's)")
    computed = sum(sum(r) for r in schedule.rows.values())
    total = n * len(schedule.rows)
    lines.append(f"total: {computed}/{total} row-steps compute ({computed / total:.1%})")
    fraction = schedule.metadata.get("compute_fraction")
    if isinstance(fraction, (int, float)):
        lines.append(f"model branch-steps that compute: {fraction:.1%}")
    return lines


#: Metadata a schedule's heading names, in this order, when the file has them.
_SCHEDULE_KEYS = (
    "name",
    "model",
    "adapter",
    "solver",
    "method",
    "alpha",
    "compute_fraction_target",
    "lookahead",
    "per_block",
    "every",
)


def describe_schedule(path: Path, schedule: Schedule) -> list[str]:
    """A heading with the schedule's size and provenance, then its :func:`grid`."""
    meta = schedule.metadata
    facts = ", ".join(f"{k} {meta[k]}" for k in _SCHEDULE_KEYS if meta.get(k) is not None)
    head = f"schedule {path}: {schedule.num_steps} steps, {len(schedule.rows)} rows"
    return [head + (f"; {facts}" if facts else ""), *grid(schedule)]


def _spark_levels() -> str:
    """Eight rising glyphs, Unicode blocks where stdout can encode them."""
    blocks = "▁▂▃▄▅▆▇█"
    try:
        blocks.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ".:-=+*#%"
    return blocks


def _sparkline(values: np.ndarray, top: float, levels: str) -> str:
    """One glyph per step, scaled to ``top``; a blank where the value is unknown."""
    chars = []
    for v in values:
        if not np.isfinite(v):
            chars.append(" ")
        else:
            level = 0 if top <= 0 else round(float(v) / top * (len(levels) - 1))
            chars.append(levels[min(max(level, 0), len(levels) - 1)])
    return "".join(chars)


def describe_curves(path: Path, curves: ErrorCurves) -> list[str]:
    """A heading, then one sparkline per kind and lag of the reuse errors and, when the curves
    hold forecast errors, one per kind and forecast order."""
    meta = curves.metadata
    lines = [
        f"curves {path}: {meta.get('model')} (adapter {meta.get('adapter')}), "
        f"{len(curves.branches)} branches, {curves.num_steps} steps, {curves.passes} pass(es), "
        f"lookahead {curves.lookahead}, {meta.get('num_samples')} sample rows in "
        f"{meta.get('runs')} runs" + (f", solver {meta['solver']}" if meta.get("solver") else ""),
        "mean relative L1 error of reusing step t-j at step t, per kind and lag j "
        "(blank: no data; scale 0..max of the kind):",
    ]
    levels = _spark_levels()
    width = max(max(len(k) for k in curves.kinds) + 8, 12)
    lines.extend(_ruler(curves.num_steps, width))
    for kind in curves.kinds:
        mean = curves.curve(kind)[0]
        finite = mean[np.isfinite(mean)]
        top = float(finite.max()) if finite.size else 0.0
        for lag in range(1, curves.lookahead + 1):
            row = mean[lag - 1]
            known = row[np.isfinite(row)]
            numbers = f"  {known.min():.3g}..{known.max():.3g}" if known.size else "  no data"
            label = f"{kind} j={lag}".ljust(width)
            lines.append(label + _sparkline(row, top, levels) + numbers)
    forecast = curves.forecast
    if forecast is None:
        return lines
    g = forecast.lookahead + 1
    lines.append(
        f"mean relative L1 error of a forecast of order k (k=0: reuse) at the last skipped step "
        f"of runs computing every {g}th step (lag {g - 1}), per kind (scale 0..max of the kind):"
    )
    lines.extend(_ruler(curves.num_steps, width))
    for kind in curves.kinds:
        rows = np.array([b.kind == kind for b in curves.branches])
        curves_k = [forecast.curve(rows, k, g - 1, g) for k in range(forecast.max_order + 1)]
        finite = np.concatenate([c[np.isfinite(c)] for c in curves_k])
        top = float(finite.max()) if finite.size else 0.0
        for k, row in enumerate(curves_k):
            known = row[np.isfinite(row)]
            numbers = f"  {known.min():.3g}..{known.max():.3g}" if known.size else "  no data"
            lines.append(f"{kind} k={k}".ljust(width) + _sparkline(row, top, levels) + numbers)
    return lines
