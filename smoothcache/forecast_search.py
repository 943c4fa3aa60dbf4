"""Forecast calibration data and the schedule search that chooses compute, reuse or forecast.

Calibration (:func:`smoothcache.calibrating`) computes every step, so for every branch and step
it can measure what a forecast *would* have cost: the relative L1 error
``||F_t - O_t||_1 / ||O_t||_1`` of a forecast ``F_t`` of order ``k`` made from the outputs at
steps ``t - j, t - j - g, ..., t - j - k g``: the step is the ``j``-th skipped step of a run
between computes ``g`` steps apart, with the earlier computes at the same spacing. Order 0 is
reuse at lag ``j``. Each such case is a *combo* ``(k, j, g)``; :class:`ForecastErrors` keeps,
per branch, pass, combo and step, the mean, the mean square and the largest of the per-sample
errors, so the tail of the samples is seen, not only their mean.

:func:`forecast_schedule` (``curves.schedule(compute_fraction=f, method="forecast")``) turns that
into a schedule: one row of computed steps shared by every branch, placed by the exact dynamic
program of the sensitivity search over runs, and for every run of skipped steps and branch kind
(or block) the order of least mean square error of the run's summed forecasts, reuse included:
a mean of squares, so one calibration sample whose forecast blows up counts with its square, as
one broken sample counts in a batch PSNR. :func:`forecast_candidates` makes a small family of
such schedules (with a measured sensitivity, their computes placed where the final output is
sensitive) for :func:`smoothcache.select_schedule` to choose from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from smoothcache.errors import CalibrationError, ScheduleError
from smoothcache.forecast import lagrange_weights
from smoothcache.schedule import MAX_ORDER, Schedule
from smoothcache.validation import check_counts, check_errors

if TYPE_CHECKING:
    from smoothcache.curves import ErrorCurves

#: One forecast case: (order k, lag j, spacing g); lag 0 stands for a whole run (see
#: :func:`forecast_combos`).
Combo = tuple[int, int, int]


def forecast_combos(lookahead: int, max_order: int) -> list[Combo]:
    """Every ``(k, j, g)`` for orders ``0..max_order``, spacings ``2..lookahead + 1`` and lags
    ``1..g - 1``, and every *run* combo ``(k, 0, g)``; sorted by the farthest step they read (so
    the ones readable at a step are a prefix).

    A run combo measures, at the last skipped step ``t`` of a run that computed at
    ``c = t - g + 1``, the error of the **sum** of the run's forecasts ``F_{c+1} .. F_{t}``
    against the sum of the true outputs: errors that keep one sign along the run (the bias of a
    too-low order) add up there, errors that alternate (the noise of a too-high order) cancel,
    as they do in the sampler's trajectory.
    """
    combos = [
        (k, j, g)
        for k in range(max_order + 1)
        for g in range(2, lookahead + 2)
        for j in range(0, g)
    ]
    return sorted(combos, key=lambda c: (reach(c), c))


def reach(combo: Combo) -> int:
    """How many steps back the farthest output a combo reads lies."""
    k, j, g = combo
    return (j or g - 1) + k * g


def _forecast_terms(k: int, j: int, g: int) -> list[tuple[int, float]]:
    """``(steps back, weight)`` of the forecast of combo ``(k, j, g)`` (``j >= 1``)."""
    back = [j + i * g for i in range(k + 1)]
    return list(zip(back, lagrange_weights([-d for d in back], 0)))


def combo_weights(combos: Sequence[Combo]) -> np.ndarray:
    """``(combos, 1 + reach)`` weights over the outputs 0, 1, 2, ... steps back (0: the current
    one): row ``c`` times them is combo ``c``'s residual, forecast minus truth, summed over the
    run's skipped steps for a run combo."""
    depth = max(reach(c) for c in combos)
    matrix = np.zeros((len(combos), depth + 1))
    for row, (k, j, g) in enumerate(combos):
        # a run combo: lags 1..g-1 of the run, each `g - 1 - lag` steps before the last one
        parts = [(lag, g - 1 - lag) for lag in range(1, g)] if j == 0 else [(j, 0)]
        for lag, shift in parts:
            matrix[row, shift] -= 1.0
            for d, w in _forecast_terms(k, lag, g):
                matrix[row, shift + d] += w
    return matrix


@dataclass(frozen=True)
class ForecastErrors:
    """Per-sample forecast errors of every branch, pass, combo and step, summarised.

    ``mean``, ``square`` (mean of the squared errors) and ``worst`` (largest) are float64,
    ``count`` int64, all shaped ``(branches, passes, combos, steps)``; NaN (0 for ``count``)
    where a combo cannot be measured at a step. ``combos`` lists ``(k, j, g)`` per combo row.
    """

    combos: tuple[Combo, ...]
    mean: np.ndarray
    square: np.ndarray
    worst: np.ndarray
    count: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        combos = tuple(tuple(int(v) for v in c) for c in self.combos)
        arrays = {}
        for name in ("mean", "square", "worst"):
            arrays[name] = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
        count = check_counts(self.count, "forecast error counts")
        shape = arrays["mean"].shape
        if len(shape) != 4 or shape[2] != len(combos) or not combos:
            raise CalibrationError(
                f"forecast errors must be shaped (branches, passes, combos, steps) with one "
                f"combo row per combo ({len(combos)}), found {shape}"
            )
        if any(a.shape != shape for a in arrays.values()) or count.shape != shape:
            raise CalibrationError("forecast mean, square, worst and count must have one shape")
        for k, j, g in combos:
            if not (0 <= k <= MAX_ORDER and 0 <= j < g):
                raise CalibrationError(f"forecast combo {(k, j, g)} is not (order, lag, spacing)")
        check_errors(count > 0, *arrays.values(), what="forecast errors")
        object.__setattr__(self, "combos", combos)
        for name, value in arrays.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def max_order(self) -> int:
        """The highest order measured."""
        return max(k for k, _, _ in self.combos)

    @property
    def lookahead(self) -> int:
        """The longest run measured (spacing minus one)."""
        return max(g for _, _, g in self.combos) - 1

    def index(self, order: int, lag: int, spacing: int) -> int:
        """The combo row of ``(order, lag, spacing)``."""
        return self.combos.index((order, lag, spacing))

    def pooled(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, mean square and worst over the selected branches and every pass, weighted by
        sample counts; ``(combos, steps)``, NaN where nothing was measured."""
        count = self.count[rows]
        seen = count > 0
        total = count.sum(axis=(0, 1))
        has = total > 0
        first = (np.where(seen, self.mean[rows], 0.0) * count).sum(axis=(0, 1))
        second = (np.where(seen, self.square[rows], 0.0) * count).sum(axis=(0, 1))
        nan = np.full(total.shape, np.nan)
        mean = np.divide(first, total, out=nan.copy(), where=has)
        square = np.divide(second, total, out=nan.copy(), where=has)
        worst = np.where(has, np.where(seen, self.worst[rows], 0.0).max(axis=(0, 1)), np.nan)
        return mean, square, worst

    def curve(self, rows: np.ndarray, order: int, lag: int, spacing: int) -> np.ndarray:
        """Mean error per step of one combo over the selected branches (NaN where unseen)."""
        return self.pooled(rows)[0][self.index(order, lag, spacing)]


def _unit_costs(
    curves: ErrorCurves, forecast: ForecastErrors, per_block: bool
) -> list[tuple[str, np.ndarray]]:
    """``(key, mean square error (combos, steps) summed over the key's branches)`` per row."""
    return [
        (key, forecast.pooled(members)[1] * int(members.sum()))
        for key, members in curves.row_members(per_block)
    ]


def preferred_order(errors: np.ndarray, cap: int = MAX_ORDER, prior: float = 1.0) -> int:
    """The order a run takes from its errors by order (``inf`` where unmeasured): the highest
    order up to ``cap`` whose error is within ``prior`` times the least error of orders
    ``0..cap``; 0 (reuse) when none was measured. ``prior=1`` takes the order of least error."""
    errors = np.asarray(errors[: cap + 1], dtype=np.float64)
    finite = np.isfinite(errors)
    if not finite.any():
        return 0
    if prior <= 1.0:
        return int(np.argmin(errors))
    return int(np.flatnonzero(finite & (errors <= prior * errors.min())).max())


def forecast_schedule(
    curves: ErrorCurves,
    target: float,
    per_block: bool,
    *,
    cap: int = MAX_ORDER,
    prior: float = 1.0,
    weighted: bool = False,
) -> Schedule:
    """The schedule of least expected forecast error within ``target``: ``method="forecast"``.

    Every branch computes at the same steps: the most steps the budget allows, placed by
    :func:`~smoothcache.curves.fewest_error_rows` over run costs. A run computing at ``i`` and
    skipping ``i + 1 .. i + r`` costs, for each key (kind, or block with ``per_block``), the
    least over the orders ``k`` of the mean square error of the run's summed forecasts (the run
    combo ``(k, 0, r + 1)`` at its last step), summed over the key's branches; that order
    answers every skipped step of the run. Reuse wins wherever no forecast is better on the
    calibration samples, the tail included. Runs longer than the calibration's lookahead are
    not considered (their errors were not measured).

    ``cap`` and ``prior`` make the other members of :func:`forecast_candidates`: a run takes
    the highest order up to ``cap`` whose error is within ``prior`` times the least
    (:func:`preferred_order`), both to place the computes and to answer the run. The defaults
    are the plain search above.

    ``weighted=True`` places the computes by how much a run moves the *final output*: the
    curves' sensitivity (:func:`smoothcache.measure_sensitivity`) predicts that for a run of
    reuse (:func:`~smoothcache.curves.run_costs`, the trajectory-level signal, correlations
    between the run's steps included), and the run's cost is that prediction times the ratio of
    the chosen orders' mean square run error to reuse's, over every branch. Steps where an error
    is amplified downstream (where samples can flip to another mode) get computes even where the
    branches' own errors are small there.
    """
    from smoothcache.curves import fewest_error_rows

    forecast = curves.forecast
    if forecast is None:
        raise ScheduleError(
            "method 'forecast' needs forecast errors, which these curves do not carry: "
            "calibrate again with this version (smoothcache.calibrating(model, orders=3) "
            "measures them; orders=0 turns them off)"
        )
    units = _unit_costs(curves, forecast, per_block)
    top = forecast.max_order
    cap = min(cap, top)
    n = curves.num_steps
    shared = curves.shared_steps(target)
    lookahead = forecast.lookahead
    # tables[u][g][k, t]: mean square error of key u's run with spacing g ending at step t
    # (last skipped step t, computed at t - g + 1) answered with order k
    tables: list[dict[int, np.ndarray]] = []
    for _, square in units:
        per_spacing = {}
        for g in range(2, lookahead + 2):
            table = square[[forecast.index(k, 0, g) for k in range(top + 1)]]
            per_spacing[g] = np.where(np.isfinite(table), table, np.inf)  # (orders, steps)
        tables.append(per_spacing)
    response = _reuse_response(curves) if weighted else None
    costs = np.full((n, n), np.inf)  # costs[i, r]: compute at i, skip i + 1 .. i + r
    costs[:, 0] = 0.0
    for i in range(n - 2):
        for r in range(1, min(lookahead, n - 2 - i) + 1):
            errors = [table[r + 1][:, i + r] for table in tables]  # (orders,) per key
            value = sum(float(e[preferred_order(e, cap, prior)]) for e in errors)
            if response is not None:
                reused = sum(float(e[0]) for e in errors)
                value = response[i, r] * value / reused if reused > 0 else math.inf
            costs[i, r] = value if math.isfinite(value) else np.inf
    least, rows = fewest_error_rows(costs)
    fits = [k for k in rows if k <= shared]
    if not fits:
        raise ScheduleError(
            f"no schedule computes at most {target:g} of the branch-steps with runs of at most "
            f"{lookahead} skipped steps (the calibration's lookahead); raise compute_fraction "
            "or calibrate with a larger lookahead"
        )
    row = rows[max(fits)]
    computed = [t for t in range(n) if row[t]]
    schedule_rows: dict[str, tuple[int, ...]] = {}
    orders: dict[str, tuple[int, ...]] = {}
    for u, (key, _) in enumerate(units):
        order_row = [0] * n
        for before, (start, end) in enumerate(itertools.pairwise(computed)):
            if end - start < 2:
                continue
            table = tables[u][end - start][: before + 1, end - 1]  # k + 1 <= computed so far
            order = preferred_order(table, cap, prior)
            order_row[start + 1 : end] = [order] * (end - start - 1)
        schedule_rows[key] = tuple(row)
        orders[key] = tuple(order_row)
    metadata = {
        **curves.metadata,
        "method": "forecast",
        "per_block": per_block,
        "compute_fraction": sum(row) / n,
        "compute_fraction_target": target,
        "max_order": top,
        "order_cap": cap,
        "order_prior": prior,
        "weighted": weighted,
        "predicted_cost": float(least[max(fits)]),
    }
    return Schedule(rows=schedule_rows, metadata=metadata, orders=orders)


def _reuse_response(curves: ErrorCurves) -> np.ndarray:
    """The sensitivity's predicted mean square change of the final output by every run of
    reuse of every branch (``costs[i, r]``, :func:`~smoothcache.curves.run_costs`)."""
    from smoothcache.curves import run_costs

    if curves.sensitivity is None:
        raise ScheduleError(
            "a weighted forecast search needs the final output's sensitivity to each step, which "
            "these curves do not carry: curves = smoothcache.measure_sensitivity(model, run, "
            "curves) measures it"
        )
    return run_costs(curves.sensitivity.gram[0])


#: The family of :func:`forecast_candidates`: a cap on the order (0: reuse only) times a prior
#: toward higher orders. Few discrete choices, so that a choice made on held-out samples
#: (:func:`smoothcache.select_schedule`) transfers to other samples.
CANDIDATE_CAPS = (0, 1, 2, 3)
CANDIDATE_PRIORS = (1.0, 1.5, 2.0, 3.0)


def forecast_candidates(curves: ErrorCurves, target: float, per_block: bool) -> list[Schedule]:
    """The distinct schedules of the family :data:`CANDIDATE_CAPS` x :data:`CANDIDATE_PRIORS`
    within ``target``, the plain search (:func:`forecast_schedule`'s defaults) first. When the
    curves carry a sensitivity (:func:`smoothcache.measure_sensitivity`), the family's members
    place their computes by it (``weighted=True``); the plain search stays first.

    Why a family: the search ranks orders by each branch's own error, which does not always say
    how an error moves the final output (a too-low order's bias keeps its sign along the
    trajectory and adds up; a higher order's noise cancels; on some models extrapolation breaks
    a few samples, and a few steps amplify every error). Which member serves a model best is a
    closed-loop question, answered on held-out samples by :func:`smoothcache.select_schedule`:
    about ten sampler runs.

    Why only weighted members once a sensitivity is measured: members whose computes follow the
    branches' own errors ignore where the sampler amplifies an error, which is where a sample
    flips to another mode; held-out samples rarely contain such a sample (a flip rate of one in
    a few hundred), so a choice among both kinds takes an unweighted member that flips samples
    whenever the held-out samples happen not to show it (docs/forecast.md).
    """
    measured = curves.sensitivity is not None
    family = [(MAX_ORDER, 1.0), *itertools.product(CANDIDATE_CAPS, CANDIDATE_PRIORS)]
    members = [(MAX_ORDER, 1.0, False), *((cap, prior, measured) for cap, prior in family)]
    seen: dict[str, Schedule] = {}
    for cap, prior, weighted in members:
        if cap == 0 and prior != 1.0:
            continue  # reuse only: the prior changes nothing
        schedule = forecast_schedule(
            curves, target, per_block, cap=cap, prior=prior, weighted=weighted
        )
        seen.setdefault(schedule.fingerprint(), schedule)
    return list(seen.values())
