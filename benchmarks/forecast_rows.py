"""The library's forecast rows of ``benchmarks/quality_speed.py``.

:func:`forecast_rows` calibrates once (``smoothcache.calibrating`` with lookahead 5, forecast
orders 0-3: one sampler run of the calibration batch, no extra runs per step) and returns one
row per compute budget of ``curves.schedule(compute_fraction=f, method="forecast")``. The
forecast calibration uses :data:`CALIBRATION_SAMPLES` samples (seed 1000, classes in turn; the
first ones are the other methods' calibration samples): the search chooses orders from the
mean square of per-sample errors, so it needs enough samples to see the tail, and one more
sample costs one more sampler run of calibration, nothing else. The family name starts with
:data:`FAMILY`: the benchmark compares every row of that family against the envelope of all the
other methods (its peers) and leaves them out of that envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import smoothcache

if TYPE_CHECKING:
    from quality_bench import Bench, Row

FAMILY = "smoothcache forecast"
BUDGETS = (0.5, 0.3, 0.2)
LOOKAHEAD = 5
CALIBRATION_SAMPLES = 50


def forecast_rows(bench: Bench, log: Callable[[str], None], curves_path: Path | None) -> list[Row]:
    """Rows of the forecast schedules at :data:`BUDGETS`, from one calibration of ``bench``.

    ``curves_path`` (the benchmark's ``--curves``, which holds the other methods' calibration)
    is not used: the forecast calibration is one sampler run, measured every time.
    """
    del curves_path
    count = max(CALIBRATION_SAMPLES, bench.calibration_samples)
    log(f"calibrating forecast errors (lookahead {LOOKAHEAD}) on {count} calibration samples")
    saved = bench.calibration_samples
    bench.calibration_samples = count
    try:
        with smoothcache.calibrating(bench.model, lookahead=LOOKAHEAD) as recorder:
            bench.sample(bench.model, bench.steps, calibration=True)
    finally:
        bench.calibration_samples = saved
    curves = recorder.curves()
    return [
        bench.cached(
            FAMILY,
            f"compute <= {budget:g}",
            curves.schedule(compute_fraction=budget, method="forecast"),
            budget=budget,
        )
        for budget in BUDGETS
    ]
