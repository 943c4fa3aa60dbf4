"""The library's forecast rows of ``benchmarks/quality_speed.py`` (first version).

:func:`forecast_rows` calibrates error curves with lookahead 5 on the calibration samples and
returns one row per compute budget of ``curves.schedule(compute_fraction=f, method="forecast")``.
The family name starts with :data:`FAMILY`: the benchmark compares every row of that family
against the envelope of all the other methods (its peers) and leaves them out of that envelope.
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


def forecast_rows(bench: Bench, log: Callable[[str], None], curves_path: Path | None) -> list[Row]:
    """Rows of the forecast schedules at :data:`BUDGETS`, from one calibration of ``bench``.

    ``curves_path`` (the benchmark's ``--curves``) is not used by this version: the calibration
    here (one sampler run of the calibration samples) is measured every time.
    """
    del curves_path
    log(f"calibrating error curves with lookahead {LOOKAHEAD} for the forecast schedules")
    with smoothcache.calibrating(bench.model, lookahead=LOOKAHEAD) as recorder:
        bench.sample(bench.model, bench.steps, calibration=True)
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
