"""Compute, reuse or forecast: ``method="forecast"`` and its candidates.

It reads the curves' :class:`~smoothcache.measurements.ForecastErrors` (recorded by
:func:`smoothcache.calibrating`). :func:`forecast_schedule` places one row of computed steps
shared by every branch with the exact dynamic program of the sensitivity search over runs
(:func:`~smoothcache.searches.sensitivity.fewest_error_rows`), and gives every run of skipped
steps and branch kind (or block) the order of least mean square error of the run's summed
forecasts, reuse included: a mean of squares, so one calibration sample whose forecast blows up
counts with its square, as one broken sample counts in a batch PSNR. :func:`forecast_candidates`
makes a small family of such schedules (with a measured sensitivity, their computes placed where
the final output is sensitive) for :func:`smoothcache.select_schedule` to choose from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from smoothcache.errors import ScheduleError
from smoothcache.fitting import fit_forecasts, run_ratios
from smoothcache.measurements import ForecastErrors
from smoothcache.schedule import MAX_ORDER, Schedule
from smoothcache.searches.base import Measurements, budget_only, shared_steps
from smoothcache.searches.sensitivity import fewest_error_rows, run_costs


def _unit_costs(
    curves: Measurements, forecast: ForecastErrors, per_block: bool, fitted: bool
) -> list[tuple[str, np.ndarray]]:
    """``(key, mean square error (combos, steps) summed over the key's branches)`` per row;
    with ``fitted``, the run combos' errors scaled to those of fitted forecasts."""
    units = []
    for key, members in curves.row_members(per_block):
        square = forecast.pooled(members)[1] * int(members.sum())
        if fitted:
            square = square * run_ratios(forecast, members)
        units.append((key, square))
    return units


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
    curves: Measurements,
    target: float,
    per_block: bool,
    *,
    cap: int = MAX_ORDER,
    prior: float = 1.0,
    weighted: bool = False,
    fitted: bool = False,
) -> Schedule:
    """The schedule of least expected forecast error within ``target``: ``method="forecast"``.

    Every branch computes at the same steps: the most steps the budget allows, placed by
    :func:`fewest_error_rows` over run costs. A run computing at ``i`` and skipping
    ``i + 1 .. i + r`` costs, for each key (kind, or block with ``per_block``), the least over
    the orders ``k`` of the mean square error of the run's summed forecasts (the run combo
    ``(k, 0, r + 1)`` at its last step), summed over the key's branches; that order answers
    every skipped step of the run. Reuse wins wherever no forecast is better on the
    calibration samples, the tail included. Runs longer than the calibration's lookahead are
    not considered (their errors were not measured).

    ``cap`` and ``prior`` make the other members of :func:`forecast_candidates`: a run takes
    the highest order up to ``cap`` whose error is within ``prior`` times the least
    (:func:`preferred_order`), both to place the computes and to answer the run. The defaults
    are the plain search above.

    ``weighted=True`` places the computes by how much a run moves the *final output*: the
    curves' sensitivity (:func:`smoothcache.measure_sensitivity`) predicts that for a run of
    reuse (:func:`run_costs`, the trajectory-level signal, correlations between the run's steps
    included), and the run's cost is that prediction times the ratio of
    the chosen orders' mean square run error to reuse's, over every branch. Steps where an error
    is amplified downstream (where samples can flip to another mode) get computes even where the
    branches' own errors are small there.
    """
    forecast = curves.forecast
    if forecast is None:
        raise ScheduleError(
            "method 'forecast' needs forecast errors, which these curves do not carry: "
            "calibrate again with this version (smoothcache.calibrating(model, orders=3) "
            "measures them; orders=0 turns them off)"
        )
    units = _unit_costs(curves, forecast, per_block, fitted)
    top = forecast.max_order
    cap = min(cap, top)
    n = curves.num_steps
    shared = shared_steps(len(curves.branches), n, target)
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
                finite = math.isfinite(value) and math.isfinite(reused) and reused > 0
                value = response[i, r] * value / reused if finite else math.inf
            costs[i, r] = value if math.isfinite(value) else np.inf
    spans = _active_spans(curves)
    for first in {int(f) for f in spans[:, 0] if f > 0}:  # a denoiser taking over at `first`
        for i in range(max(first - lookahead, 0), first):  # must compute there: nothing stored
            costs[i, first - i :] = np.inf
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
    members = dict(curves.row_members(per_block))
    for u, (key, _) in enumerate(units):
        order_row = [0] * n
        for start, end in itertools.pairwise(computed):
            if end - start < 2:
                continue
            since = _computed_since(spans[members[key]], computed, start)
            table = tables[u][end - start][:since, end - 1]  # k + 1 <= computed so far
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
    schedule = Schedule(rows=schedule_rows, metadata=metadata, orders=orders)
    return fit_forecasts(schedule, curves) if fitted else schedule


def _active_spans(curves: Measurements) -> np.ndarray:
    """Per branch, the first and last step it produced an output at in calibration
    (``(branches, 2)``): a pipeline of two denoisers (Wan 2.2's experts) hands over partway, and
    the second one's branches have nothing stored before their first step."""
    seen = (curves.count[:, :, 0, :] > 0).any(axis=1)  # outputs at t and t - 1
    ran = seen | np.roll(seen, -1, axis=1) & (np.arange(seen.shape[1]) < seen.shape[1] - 1)
    spans = np.zeros((len(ran), 2), dtype=int)
    for b, steps in enumerate(ran):
        found = np.flatnonzero(steps)
        spans[b] = (found[0], found[-1]) if found.size else (0, seen.shape[1] - 1)
    return spans


def _computed_since(spans: np.ndarray, computed: list[int], start: int) -> int:
    """The fewest computes, up to ``start``, of the branches (``spans``) that run after it:
    the most outputs a forecast of the run starting there may read."""
    counts = [
        sum(1 for c in computed if first <= c <= start)
        for first, last in spans
        if first <= start < last
    ]
    return min(counts, default=sum(1 for c in computed if c <= start))


def within_spans(schedule: Schedule, curves: Measurements) -> Schedule:
    """``schedule`` (made for ``curves``' model, with rows per kind) with every forecast order
    lowered to what the branches running at that step can read: a denoiser that takes over
    partway (Wan 2.2's second expert) has stored only its own outputs since it started, and a
    forecast asking for more would compute instead. Fitted weights are not kept where an order
    changes."""
    spans = _active_spans(curves)
    members = dict(curves.row_members(False))
    orders: dict[str, tuple[int, ...]] = {}
    for key, row in schedule.orders.items():
        computed = [t for t, flag in enumerate(schedule.rows[key]) if flag]
        chosen = spans[members[key]] if key in members else spans
        capped = []
        for step, order in enumerate(row):
            start = max((c for c in computed if c < step), default=0)
            capped.append(min(order, max(_computed_since(chosen, computed, start) - 1, 0)))
        orders[key] = tuple(capped)
    if all(orders[k] == v for k, v in schedule.orders.items()):
        return schedule
    return Schedule(schedule.rows, schedule.metadata, orders, schedule.techniques)


def _reuse_response(curves: Measurements) -> np.ndarray:
    """The sensitivity's predicted mean square change of the final output by every run of
    reuse of every branch (``costs[i, r]``, :func:`run_costs`)."""
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


def forecast_candidates(
    curves: Measurements,
    target: float,
    per_block: bool,
    caps: Sequence[int] = CANDIDATE_CAPS,
    priors: Sequence[float] = CANDIDATE_PRIORS,
    fitted: bool = False,
) -> list[Schedule]:
    """The distinct schedules of the family ``caps`` x ``priors`` (by default
    :data:`CANDIDATE_CAPS` x :data:`CANDIDATE_PRIORS`) within ``target``, the plain search
    (:func:`forecast_schedule`'s defaults) first. When the curves carry a sensitivity
    (:func:`smoothcache.measure_sensitivity`), the family's members place their computes by it
    (``weighted=True``); the plain search stays first. With ``fitted``, every member is followed
    by its fitted twin (``forecast_schedule(..., fitted=True)``: scored and answered with
    weights fitted to the calibration outputs), so a choice on held-out samples decides
    between fixed and fitted weights too.

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
    _check_family(caps, priors)
    measured = curves.sensitivity is not None
    family = [(MAX_ORDER, 1.0), *itertools.product(caps, priors)]
    members = [(MAX_ORDER, 1.0, False), *((cap, prior, measured) for cap, prior in family)]
    seen: dict[str, Schedule] = {}
    for cap, prior, weighted in members:
        if cap == 0 and prior != 1.0:
            continue  # reuse only: the prior changes nothing
        for fit in (False, True) if fitted else (False,):
            schedule = forecast_schedule(
                curves, target, per_block, cap=cap, prior=prior, weighted=weighted, fitted=fit
            )
            seen.setdefault(schedule.fingerprint(), schedule)
    return list(seen.values())


def _check_family(caps: Sequence[int], priors: Sequence[float]) -> None:
    """Refuse a family that is empty or outside what :func:`preferred_order` takes."""
    good_caps = bool(caps) and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_ORDER for c in caps
    )
    good_priors = bool(priors) and all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 1
        for p in priors
    )
    if not (good_caps and good_priors):
        raise ScheduleError(
            f"caps must be orders 0..{MAX_ORDER} and priors numbers >= 1, both non-empty; found "
            f"caps={list(caps)!r}, priors={list(priors)!r} (defaults: {CANDIDATE_CAPS}, "
            f"{CANDIDATE_PRIORS})"
        )


def forecast_search(
    curves: Measurements,
    *,
    alpha: float | None,
    compute_fraction: float | None,
    per_block: bool,
) -> Schedule:
    """``method="forecast"``: :func:`forecast_schedule` within ``compute_fraction`` (no
    ``alpha``), with its defaults."""
    return forecast_schedule(curves, budget_only("forecast", alpha, compute_fraction), per_block)


def fitted_search(
    curves: Measurements,
    *,
    alpha: float | None,
    compute_fraction: float | None,
    per_block: bool,
) -> Schedule:
    """``method="fitted"``: :func:`forecast_schedule` with ``fitted=True`` (forecasts scored
    and answered with weights fitted to the calibration outputs, :mod:`smoothcache.fitting`)."""
    target = budget_only("fitted", alpha, compute_fraction)
    return forecast_schedule(curves, target, per_block, fitted=True)
