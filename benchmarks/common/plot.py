"""The plots of the quality pages: PSNR against speedup and against the compute.

:func:`quality_plot` draws ``docs/quality_speed*.png``: every method's batch PSNR against its
measured speedup (left) and against the branch-steps it computed (right, with the peer envelope
and the forecast rows' bootstrap intervals). :func:`compute_plot` draws
``docs/schedule_search.png``: PSNR against compute, one line per family.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common.cache_dit_rows import CACHE_DIT_FAMILY, CACHE_DIT_TAYLOR_FAMILY
from benchmarks.common.forecast_rows import FAMILY as FORECAST_FAMILY
from benchmarks.common.scoring import Scores, peer_indices
from benchmarks.common.stats import upper_envelope

FAMILIES = {  # family: (marker, colour) in the quality plot
    "fewer steps": ("o", "0.45"),
    "FORA": ("s", "tab:orange"),
    "SmoothCache (per kind)": ("*", "tab:blue"),
    "SmoothCache (per block)": ("P", "tab:cyan"),
    "schedule search": ("h", "tab:olive"),
    FORECAST_FAMILY: ("*", "black"),
    "first-block cache": ("^", "tab:green"),
    "TaylorSeer (order 1)": ("D", "tab:purple"),
    "TaylorSeer (order 2)": ("d", "tab:pink"),
    "MagCache": ("v", "tab:red"),
    "pyramid attention broadcast": ("X", "tab:brown"),
    CACHE_DIT_FAMILY: ("<", "tab:gray"),
    CACHE_DIT_TAYLOR_FAMILY: (">", "darkslateblue"),
}
#: Markers of families that :data:`FAMILIES` does not name.
SPARE_MARKERS = ("p", "8", "H", "1", "2", "3", "4")


def quality_plot(scores: Scores, title: str, path: Path, clock: str, steps: int) -> None:
    """Batch PSNR against measured speedup (left) and against branch-steps computed (right).

    The right panel adds the peer envelope, and the forecast rows' bootstrap intervals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = scores.table
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    families = list(dict.fromkeys(r["family"] for r in table[1:]))
    spare = iter(SPARE_MARKERS)
    for family in families:
        marker, colour = FAMILIES.get(family) or (next(spare, "o"), None)
        # The reference row has no PSNR; a schedule that skips nothing has an infinite one.
        rows = [
            r
            for r in table
            if r["family"] == family and r["psnr"] is not None and np.isfinite(r["psnr"])
        ]
        for ax, key in zip(axes, ("speedup", "computed")):
            if not rows:
                continue
            rows = sorted(rows, key=lambda r: r[key])
            xs, ys = [r[key] for r in rows], [r["psnr"] for r in rows]
            line = "-" if family in ("fewer steps", FORECAST_FAMILY) else "none"
            size = 11 if family == FORECAST_FAMILY else 7
            ax.plot(xs, ys, ls=line, marker=marker, color=colour, label=family, ms=size, lw=1)
            if family.startswith(FORECAST_FAMILY) and key == "computed":
                low = [y - r["low"] for r, y in zip(rows, ys)]
                high = [r["high"] - y for r, y in zip(rows, ys)]
                ax.errorbar(xs, ys, yerr=[low, high], fmt="none", color="black", capsize=3)
    index = peer_indices(table)
    if index:
        xs = np.array([table[i]["computed"] for i in index])
        ys = np.array([table[i]["psnr"] for i in index])
        grid = np.linspace(xs.min(), xs.max(), 200)
        hull = [float(upper_envelope(xs, ys, x).value[0]) for x in grid]
        axes[1].plot(grid, hull, ls="--", color="0.3", lw=1, label="peer envelope")
    axes[0].set_xlabel(f"measured speedup, {'CPU time' if clock == 'cpu' else 'wall clock'} (x)")
    axes[1].set_xlabel("branch-steps computed (fraction)")
    axes[1].invert_xaxis()
    axes[0].set_ylabel("batch PSNR against the uncached samples (dB)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left", ncol=2)
    fig.suptitle(f"{title}, DDIM {steps} steps: fidelity against speed (up and right is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compute_plot(
    rows: Sequence[Any], families: dict[str, tuple[str, str]], title: str, path: Path
) -> None:
    """PSNR against branch-steps computed, one line per family, up to 75% of the compute.

    ``rows`` have ``family``, ``computed`` and ``psnr``; ``families`` maps each family to its
    marker and colour, in the legend's order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for family, (marker, colour) in families.items():
        points = sorted(
            (r.computed, r.psnr) for r in rows if r.family == family and r.computed <= 0.75
        )
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "-", marker=marker, color=colour, label=family, ms=7, lw=1)
    ax.set_xlabel("branch-steps computed (fraction)")
    ax.set_ylabel("PSNR against uncached (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
