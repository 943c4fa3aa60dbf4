"""The library's forecast rows of ``benchmarks.quality_speed``.

:func:`forecast_rows` calibrates once (``smoothcache.calibrating`` with lookahead
:data:`LOOKAHEAD`, forecast orders 0-3, on :data:`CALIBRATION_SAMPLES` calibration samples: one
sampler run; then ``smoothcache.measure_sensitivity`` on the same samples),
and returns one row per compute budget of :data:`BUDGETS`: the schedule that
``smoothcache.select_schedule`` chooses among ``curves.forecast_candidates(compute_fraction=f)``
on :data:`HELD_OUT` held-out samples (their own seed, neither calibrated nor evaluated on). That
is the method the README recommends; ``benchmarks.forecast_selection`` sets it beside the
plain search (``method="forecast"``). The calibration samples are seed 1000, classes in turn
(the first ones are the other methods' calibration samples): the search chooses orders from
the mean square of per-sample errors, so it needs enough samples to see the tail, and one more
sample costs one more sampler run of calibration, nothing else. The family name is
:data:`FAMILY`: the benchmark compares every row of that family against the envelope of all the
other methods (its peers) and leaves them out of that envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import smoothcache
from benchmarks.common.stats import psnr_db
from smoothcache import ErrorCurves, Schedule

if TYPE_CHECKING:
    from benchmarks.common.bench import Bench, Row

FAMILY = "smoothcache forecast"
BUDGETS = (0.5, 0.3, 0.2)
LOOKAHEAD = 7
CALIBRATION_SAMPLES = 50
#: Samples of their own seed that ``smoothcache.select_schedule`` chooses on.
HELD_OUT = 200


def forecast_curves(bench: Bench, log: Callable[[str], None], lookahead: int) -> ErrorCurves:
    """Forecast error curves of :data:`CALIBRATION_SAMPLES` calibration samples (one sampler
    run; at least the bench's own calibration batch, whose samples come first) with the
    sensitivity of the same samples.

    The sensitivity is measured on all of them, not on a few: the candidates place their
    computes by it, and steps where the sampler amplifies an error for a few samples only are
    missed by a sensitivity of 10 samples (docs/forecast.md).
    """
    size = max(CALIBRATION_SAMPLES, bench.calibration_samples)

    def run() -> torch.Tensor:
        return bench.sample(bench.model, bench.steps, calibration=True, count=size)

    log(f"calibrating forecast errors (lookahead {lookahead}) on {size} samples")
    with smoothcache.calibrating(bench.model, lookahead=lookahead) as recorder:
        run()
    log("measuring the sensitivity on the same samples")
    return smoothcache.measure_sensitivity(bench.model, run, recorder.curves())


def select(bench: Bench, candidates: list[Schedule], held_out: int = HELD_OUT) -> Schedule:
    """The schedule among ``candidates`` (``curves.forecast_candidates(compute_fraction=f)``)
    that ``smoothcache.select_schedule`` chooses on ``held_out`` held-out samples."""
    return smoothcache.select_schedule(
        bench.model,
        lambda: bench.sample(bench.model, bench.steps, held_out=held_out),
        candidates,
    )


def forecast_rows(bench: Bench, log: Callable[[str], None], curves_path: Path | None) -> list[Row]:
    """Rows of the schedules chosen at :data:`BUDGETS`, from one calibration of ``bench``.

    ``curves_path`` (the benchmark's ``--curves``, which holds the other methods' calibration)
    is not used: the forecast calibration is measured every time.
    """
    del curves_path
    curves = forecast_curves(bench, log, LOOKAHEAD)
    rows = []
    for budget in BUDGETS:
        chosen = select(bench, curves.forecast_candidates(compute_fraction=budget))
        meta = chosen.metadata
        held = ", ".join(f"{psnr_db(e):.2f}" for e in meta["selection_mse"])
        log(
            f"  {budget:g}: chose candidate {meta['selected']} (cap {meta['order_cap']}, prior "
            f"{meta['order_prior']:g}, weighted {meta['weighted']}); held-out batch PSNRs {held}"
        )
        rows.append(bench.cached(FAMILY, f"compute <= {budget:g}", chosen, budget=budget))
    return rows
