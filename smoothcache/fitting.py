"""Fitted forecasts: per-step weights fitted to the calibration outputs instead of Lagrange's.

A forecast of order ``k`` answers a skipped step ``s`` with ``sum_i w_i O_{a_i}``, a linear
combination of the branch's outputs at its last ``k + 1`` computed steps ``a_0 < ... < a_k``
(:mod:`smoothcache.forecast`). Lagrange's ``w`` depend only on the positions: they are exact for
a polynomial path, whatever the model. A static schedule fixes every ``(s, a)`` in advance, so
the weights may instead be fitted to how the model's outputs actually move: the least-squares

    ``w = argmin sum ||sum_i w_i O_{a_i} - O_s||^2``   (over calibration samples and branches)

needs only the inner products ``<O_t, O_u>`` of a branch's outputs at pairs of steps within the
forecast window, which calibration accumulates on the device as it runs
(:class:`~smoothcache.measurements.ForecastErrors` ``gram``): no output is kept and no sampler
run is added. The solve is ridge-regularised toward the Lagrange weights (the prior, and what a
step keeps where the window does not cover its anchors or the solve fails).

The weights are constants of the schedule, like Lagrange's: a fitted forecast does the same
counted work per answer (``k + 1`` elementwise kernels), never reads the device, and order 0
stays reuse (bit-identical; nothing is fitted there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from smoothcache.errors import CalibrationError, ScheduleError
from smoothcache.forecast import lagrange_weights, plan_reads
from smoothcache.measurements import ForecastErrors, Measured
from smoothcache.schedule import Schedule, StepWeights

#: Ridge toward the Lagrange weights, relative to the mean squared norm of the anchors: small
#: enough not to undo the fit (docs/forecast.md, "Fitted forecasts"), large enough that
#: nearly collinear anchors give bounded weights.
RIDGE = 1e-3
#: The highest polynomial degree a fitted forecast still reproduces exactly (-1: none).
EXACT = 0

_NO_GRAM = (
    "fitting forecasts needs the inner products of the branch outputs, which these curves do "
    "not carry (recorded by calibrating() since fitted forecasts came; curves saved before "
    "that have none): calibrate again"
)


class _Inner:
    """Per-sample mean inner products ``<O_t, O_u>`` of one schedule key's branches, pooled."""

    def __init__(self, gram: np.ndarray, count: np.ndarray) -> None:
        total = count.sum(axis=(0, 1))
        self.window = gram.shape[-1]
        self.mean = np.divide(
            gram.sum(axis=(0, 1)), total, out=np.full(total.shape, np.nan), where=total > 0
        )

    def __call__(self, t: int, u: int) -> float:
        late, lag = max(t, u), abs(t - u)
        return float(self.mean[late, lag]) if lag < self.window else math.nan


class _Fit(NamedTuple):
    """The fitted summed weights (``None`` where the constraints leave only Lagrange's) and the
    mean squared errors per sample of the summed forecasts with Lagrange's and with them."""

    weights: np.ndarray | None
    lagrange: float
    fitted: float


def _fit(
    inner: _Inner, anchors: Sequence[int], targets: Sequence[int], ridge: float, exact: int
) -> _Fit | None:
    """The fit of the summed forecasts of ``targets`` from ``anchors`` (``None`` where the
    window does not cover every pair it reads, or the solve fails).

    The fit minimises the squared error plus ``ridge`` (relative to the anchors' mean squared
    norm) times the distance to the Lagrange weights, subject to reproducing every polynomial of
    degree up to ``exact`` through the anchors (``-1``: no constraint).
    """
    n = len(anchors)
    gram = np.array([[inner(a, b) for b in anchors] for a in anchors])
    target = np.array([sum(inner(a, t) for t in targets) for a in anchors])
    truth = sum(inner(t, u) for t in targets for u in targets)
    prior = sum(np.array(lagrange_weights(anchors, t)) for t in targets)
    if not (np.isfinite(gram).all() and np.isfinite(target).all() and math.isfinite(truth)):
        return None

    def error(w: np.ndarray) -> float:
        return float(truth - 2 * w @ target + w @ gram @ w)

    degrees = min(exact + 1, n)
    if degrees == n:  # the constraints leave nothing to fit
        return _Fit(None, error(prior), error(prior))
    scale = ridge * float(np.trace(gram)) / n
    span = max((anchors[-1] - anchors[0]) / max(n - 1, 1), 1.0)
    base = np.array([(a - anchors[-1]) / span for a in anchors])
    moments = np.vander(base, degrees, increasing=True).T  # (degrees, n)
    wanted = sum(
        np.array([((t - anchors[-1]) / span) ** m for m in range(degrees)]) for t in targets
    )
    system = np.block(
        [[gram + scale * np.eye(n), moments.T], [moments, np.zeros((degrees, degrees))]]
    )
    rhs = np.concatenate([target + scale * prior, np.atleast_1d(wanted)])
    try:
        weights = np.linalg.solve(system, rhs)[:n]
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(weights).all():
        return None
    return _Fit(weights, error(prior), error(weights))


def run_ratios(
    forecast: ForecastErrors, members: np.ndarray, ridge: float = RIDGE, exact: int = EXACT
) -> np.ndarray:
    """Per run combo, how much fitting lowers its error: ``(combos, steps)``, the calibration's
    mean squared error of the run's summed fitted forecasts over that of the Lagrange ones,
    pooled over the ``members`` (a mask of branches); 1 for reuse and combos that are not runs,
    NaN where the window does not cover the run.

    A run computing at ``c`` (and at ``c - g, c - 2g, ...`` before) and skipping ``c + 1 ..
    c + g - 1`` forecasts every skipped step from the same anchors, so its summed forecast is
    ``X W`` with ``W`` the sum of the steps' weights: the fitted sum is the least-squares fit of
    the summed outputs, and both errors follow from the inner products alone.
    """
    if forecast.gram is None or forecast.gram_count is None:
        raise CalibrationError(_NO_GRAM)
    inner = _Inner(forecast.gram[members], forecast.gram_count[members])
    steps = inner.mean.shape[0]
    ratios = np.ones((len(forecast.combos), steps))
    for row, (order, lag, spacing) in enumerate(forecast.combos):
        if not order or lag:
            continue
        for last in range(steps):
            start = last - spacing + 1
            anchors = [start - i * spacing for i in range(order, -1, -1)]
            if anchors[0] < 0:
                ratios[row, last] = math.nan
                continue
            targets = range(start + 1, last + 1)
            fit = _fit(inner, anchors, targets, ridge, exact)
            if fit is None:
                ratios[row, last] = math.nan
                continue
            good = fit.lagrange > 0 and fit.fitted >= 0
            ratios[row, last] = min(fit.fitted / fit.lagrange, 1.0) if good else 1.0
    return ratios


def fit_forecasts(
    schedule: Schedule, curves: Measured, *, ridge: float = RIDGE, exact: int = EXACT
) -> Schedule:
    """``schedule`` with fitted weights for every forecast step the calibration can fit.

    ``curves`` are the :class:`~smoothcache.ErrorCurves` of the model the schedule is for, from
    a calibration that recorded the outputs' inner products (every calibration since fitted
    forecasts came; older curves files have none: calibrate again). A key's weights are fitted
    over the branches whose row it is (every block of its kind, or one block) and every pass.
    Steps whose anchors lie farther apart than the recorded window keep the Lagrange weights.
    The metadata's ``fitted`` records the ridge, how many steps were fitted and kept Lagrange's,
    and the calibration error of the fitted forecasts relative to Lagrange's (in dB, above 0
    is better).
    """
    forecast = curves.forecast
    if forecast is None or forecast.gram is None or forecast.gram_count is None:
        raise CalibrationError(_NO_GRAM)
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ScheduleError(f"ridge must be a number >= 0 (e.g. {RIDGE}), found {ridge!r}")
    if isinstance(exact, bool) or not isinstance(exact, int) or exact < -1:
        raise ScheduleError(
            f"exact must be an integer >= -1 (the highest polynomial degree the weights "
            f"reproduce; -1: none, 0: they sum to one), found {exact!r}"
        )
    steps = forecast.gram.shape[2]
    if schedule.num_steps != steps:
        raise ScheduleError(
            f"the schedule has {schedule.num_steps} steps but the curves {steps}: fit a "
            "schedule made from these curves"
        )
    weights: dict[str, StepWeights] = {}
    fitted = kept = 0
    errors = np.zeros(2)  # summed calibration errors: Lagrange, fitted
    for key, orders in schedule.orders.items():
        members = np.array(
            [schedule.key_for(b.kind, b.block) == key for b in curves.branches], dtype=bool
        )
        if not members.any():
            raise ScheduleError(
                f"schedule key {key!r} names no branch of the curves' model; fit a schedule "
                "made from these curves"
            )
        inner = _Inner(forecast.gram[members], forecast.gram_count[members])
        entries: list[tuple[float, ...] | None] = []
        for step, (skip, read, _) in enumerate(plan_reads(schedule.rows[key], orders)):
            fit = _fit(inner, read, [step], ridge, exact) if skip and len(read) > 1 else None
            if fit is None or fit.weights is None:
                kept += skip and len(read) > 1
                entries.append(None)
                continue
            fitted += 1
            errors += (fit.lagrange, fit.fitted)
            entries.append(tuple(float(w) for w in fit.weights))
        weights[key] = tuple(entries)
    how: dict[str, float] = {"ridge": ridge, "steps": fitted, "lagrange_steps": kept}
    if errors.min() > 0:
        how["calibration_gain_db"] = round(10 * math.log10(errors[0] / errors[1]), 3)
    metadata = {**schedule.metadata, "fitted": how}
    return dataclasses.replace(schedule, metadata=metadata, weights=weights)
