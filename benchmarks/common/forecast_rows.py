"""The library's forecast rows of ``benchmarks.quality_speed``, and the calibration every
calibrated method shares.

:func:`shared_curves` calibrates once per calibration seed: ``smoothcache.calibrating`` with
lookahead :data:`LOOKAHEAD` (forecast orders 0-3) on the bench's calibration samples (one sampler
run), then ``smoothcache.measure_sensitivity`` on the same samples. The library's forecast, the
paper's rule and the schedule search all read these curves: the same samples and the same
lookahead for every method that calibrates (issue #26; before it, the peers got 10 samples and
lookahead 3). :func:`forecast_rows` returns one row per compute budget of :data:`BUDGETS`: the
schedule that ``smoothcache.select_schedule`` chooses among
``curves.forecast_candidates(compute_fraction=f)`` on the held-out samples (their own seed,
neither calibrated nor evaluated on). That is the method the README recommends;
``benchmarks.forecast_selection`` sets it beside the plain search (``method="forecast"``). The
family name is :data:`FAMILY`: the benchmark compares every row of that family against the
envelope of all the other methods (its peers) and leaves them out of that envelope.
"""

from __future__ import annotations

from collections.abc import Callable
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
#: Calibration samples of every calibrated method (library and peers alike).
CALIBRATION_SAMPLES = 50
#: Samples of their own seed that every method's setting is chosen on.
HELD_OUT = 200


def shared_curves(
    bench: Bench, log: Callable[[str], None], seed: int, lookahead: int = LOOKAHEAD
) -> ErrorCurves:
    """Forecast error curves of the bench's calibration samples of ``seed`` (one sampler run)
    with the sensitivity of the same samples.

    The sensitivity is measured on all of them, not on a few: the candidates place their
    computes by it, and steps where the sampler amplifies an error for a few samples only are
    missed by a sensitivity of 10 samples (docs/forecast.md).
    """

    def run() -> torch.Tensor:
        return bench.sample(bench.model, bench.steps, calibration=True, calibration_seed=seed)

    def measure() -> ErrorCurves:
        size = bench.calibration_samples
        log(f"calibrating (lookahead {lookahead}) on {size} samples of seed {seed}")
        with smoothcache.calibrating(bench.model, lookahead=lookahead) as recorder:
            run()
        log("measuring the sensitivity on the same samples")
        return smoothcache.measure_sensitivity(bench.model, run, recorder.curves())

    return bench.checkpoint.curves(f"curves|{seed}|{lookahead}", measure)


def select(bench: Bench, candidates: list[Schedule]) -> Schedule:
    """The schedule among ``candidates`` (``curves.forecast_candidates(compute_fraction=f)``)
    that ``smoothcache.select_schedule`` chooses on the bench's held-out samples."""
    return smoothcache.select_schedule(
        bench.model,
        lambda: bench.sample(bench.model, bench.steps, batch="held_out"),
        candidates,
    )


def forecast_rows(
    bench: Bench, log: Callable[[str], None], curves: ErrorCurves, seed: int
) -> list[Row]:
    """Rows of the schedules chosen at :data:`BUDGETS` from ``curves`` (calibrated on ``seed``)."""
    rows = []
    for budget in BUDGETS:
        chosen = bench.checkpoint.schedule(
            f"forecast|{seed}|{budget}",
            lambda b=budget: select(bench, curves.forecast_candidates(compute_fraction=b)),
        )
        meta = chosen.metadata
        held = ", ".join(f"{psnr_db(e):.2f}" for e in meta["selection_mse"])
        log(
            f"  {budget:g}: chose candidate {meta['selected']} (cap {meta['order_cap']}, prior "
            f"{meta['order_prior']:g}, weighted {meta['weighted']}); held-out batch PSNRs {held}"
        )
        row = bench.cached(FAMILY, f"compute <= {budget:g}", chosen, budget=budget)
        row.calibration_seed = seed
        row.held_out_mse = float(meta["selection_mse"][meta["selected"]])
        rows.append(row)
    return rows
