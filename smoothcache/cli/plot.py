"""``show --plot``: error curves and a schedule drawn to a PNG (matplotlib, imported on use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smoothcache.cli.validators import CommandError
from smoothcache.curves import ErrorCurves
from smoothcache.schedule import MAX_ORDER, Schedule


def plot(path: Path, curves: ErrorCurves | None, schedule: Schedule | None) -> None:
    """Error curves (mean ± std per lag, one panel per kind) over the schedule raster.

    Like Figure 2 of the paper: with curves and a schedule made from them, the panels also
    draw the schedule's alpha as a dashed line.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install smoothcache[plot]") from None
    kinds = curves.kinds if curves is not None else ()
    alpha = schedule.metadata.get("alpha") if curves is not None and schedule is not None else None
    forecast = curves.forecast if curves is not None else None
    panels = len(kinds) * (2 if forecast is not None else 1)
    heights = [2.2] * panels + ([0.4 + 0.25 * len(schedule.rows)] if schedule else [])
    fig = Figure(figsize=(8, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds):
        assert curves is not None
        mean, std, _ = curves.curve(kind)
        steps = np.arange(curves.num_steps)
        for lag in range(1, curves.lookahead + 1):
            (line,) = ax.plot(steps, mean[lag - 1], marker=".", label=f"lag {lag}")
            low, high = mean[lag - 1] - std[lag - 1], mean[lag - 1] + std[lag - 1]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if alpha is not None:
            ax.axhline(
                alpha, color="black", linestyle="--", linewidth=1, label=f"alpha {alpha:.3g}"
            )
        ax.set_ylabel(f"{kind}\nrel. L1 error")
        ax.legend(loc="upper right", fontsize="small")
    if forecast is not None:
        assert curves is not None
        steps = np.arange(curves.num_steps)
        g = forecast.lookahead + 1
        for ax, kind in zip(axes[len(kinds) :], kinds):
            rows = np.array([b.kind == kind for b in curves.branches])
            for k in range(forecast.max_order + 1):
                for lag, style in ((1, "-"), (g - 1, "--")):
                    values = forecast.curve(rows, k, lag, g)
                    label = f"order {k}, lag {lag}" if k else f"reuse, lag {lag}"
                    ax.plot(steps, values, linestyle=style, color=f"C{k}", label=label)
            ax.set_yscale("log")
            ax.set_ylabel(f"{kind}\nforecast error")
            ax.set_title(f"runs computing every {g}th step", fontsize="small")
            ax.legend(loc="upper right", fontsize="x-small", ncol=2)
    if schedule is not None:
        ax = axes[-1]
        raster = np.array(list(schedule.rows.values()), dtype=float)
        for r, key in enumerate(schedule.rows):
            orders = schedule.orders.get(key)
            if orders:
                raster[r] += np.array(orders) / (2 * MAX_ORDER)  # grey: forecast, darker: higher
        ax.imshow(raster, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(schedule.rows)), list(schedule.rows))
        ax.set_title(
            "schedule (black: compute, white: reuse, grey: forecast, darker for higher orders)",
            fontsize="small",
        )
    axes[-1].set_xlabel("denoising step")
    fig.savefig(path, dpi=120)
