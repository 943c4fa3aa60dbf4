"""The SmoothCache paper's rule: reuse wherever the measured error stays below ``alpha``.

``method="paper"`` of :meth:`~smoothcache.ErrorCurves.schedule` (its default for an
``alpha``): each schedule row (a branch kind, or a block with ``per_block``) is scanned left to
right by :func:`paper_rule` over its reuse errors pooled over branches and passes. Given a
``compute_fraction`` instead of an ``alpha``, the alpha is searched whose schedule fits the
budget (:func:`search_alpha`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smoothcache.errors import ScheduleError
from smoothcache.schedule import Schedule
from smoothcache.searches.base import BUDGET_SLACK, Measurements, check_alpha, check_fraction

#: ``(schedule key, errors (lookahead, steps), branch-steps weight)`` of one schedule row.
RuleRow = tuple[str, np.ndarray, int]


def paper_rule(errors: np.ndarray, alpha: float) -> list[int]:
    """One schedule row by the SmoothCache paper's greedy left-to-right scan.

    ``errors[j - 1, t]`` is the error of reusing the output of step ``t - j`` at step ``t``
    (lag ``j``, ``1 <= j <= lookahead``); NaN where unknown, which never counts as small. From
    step ``i = 0``: compute at ``i``; take the largest lag ``r <= lookahead`` with
    ``i + r <= N - 2`` and ``errors[r - 1, i + r] <= alpha`` (or ``r = 0`` if none), reuse for
    steps ``i + 1 .. i + r``, and continue at ``i + r + 1``. The first and the last step always
    compute: the scan starts at 0 and never lets a reuse run cover step ``N - 1``.

    Only the error at the lag actually chosen is checked: a reuse run of length ``r`` reuses the
    output of step ``i`` at steps ``i + 1 .. i + r``, and the paper (like its reference code)
    bounds the run by the error at its end, ``errors[r - 1, i + r]``.

    Compared with the reference implementation (Roblox/SmoothCache,
    ``SmoothCache/calibration/calibration_helper.py``, ``_scan_nrows_sublists``): it also scans
    left to right, tries the largest lag first and checks only that lag's error, indexed the same
    way (error of step ``i + r`` against step ``i``). It differs at the end of the schedule: it lets
    a run reach the last step (``i + r <= N - 1``) and afterwards overwrites the last flag with
    "compute", so such a run was accepted on an error it no longer incurs; here a run stops at
    step ``N - 2``, as this library's design notes define the rule.
    """
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors must be shaped (lookahead, steps), found shape {errors.shape}")
    lookahead, num_steps = errors.shape
    row = [0] * num_steps
    i = 0
    while i < num_steps:
        row[i] = 1
        run = 0
        for lag in range(min(lookahead, num_steps - 2 - i), 0, -1):
            if errors[lag - 1, i + lag] <= alpha:
                run = lag
                break
        i += run + 1
    return row


def _rule_entries(lookahead: int, num_steps: int) -> np.ndarray:
    """Mask of the ``(lag, step)`` entries :func:`paper_rule` can read: ``lag <= t <= N - 2``."""
    lags = np.arange(1, lookahead + 1)[:, None]
    steps = np.arange(num_steps)[None, :]
    return (steps >= lags) & (steps <= num_steps - 2)


def rule_rows(curves: Measurements, per_block: bool) -> list[RuleRow]:
    """The rows the rule scans: one per kind, or per block with ``per_block``."""
    return [
        (key, curves.pooled(members)[0], int(members.sum()))
        for key, members in curves.row_members(per_block)
    ]


def search_alpha(rows: list[RuleRow], target: float) -> float:
    """The alpha whose schedule computes the most branch-steps without exceeding ``target``.

    A row's schedule changes only where alpha crosses one of the errors the rule reads, so
    every distinct schedule is reached by some candidate in {0} and those errors. The share
    of computed steps need not fall monotonically as alpha grows (a longer reuse run can land
    on a step from which nothing can be reused), so every candidate is scored; ties go to
    the smallest alpha.
    """
    lookahead, num_steps = rows[0][1].shape
    readable = _rule_entries(lookahead, num_steps)
    per_row = []
    for _, errors, weight in rows:
        values = errors[readable]
        candidates = np.unique(np.concatenate([[0.0], values[np.isfinite(values)]]))
        computes = np.array([sum(paper_rule(errors, a)) for a in candidates])
        per_row.append((candidates, computes, weight))
    alphas = np.unique(np.concatenate([c for c, _, _ in per_row]))
    totals = np.zeros(len(alphas))
    for candidates, computes, weight in per_row:
        totals += weight * computes[np.searchsorted(candidates, alphas, side="right") - 1]
    cells = sum(weight for _, _, weight in rows) * num_steps
    fits = totals <= target * cells + BUDGET_SLACK
    if not fits.any():
        low = int(np.argmin(totals))
        raise ScheduleError(
            f"no alpha computes at most {target:g} of the branch-steps: the smallest "
            f"achievable fraction with lookahead {lookahead} is "
            f"{totals[low] / cells:.4f} (alpha={alphas[low]:g}); raise compute_fraction or "
            "calibrate with a larger lookahead"
        )
    best = totals[fits].max()
    return float(alphas[np.flatnonzero(fits & (totals == best))[0]])


def paper_search(
    curves: Measurements,
    *,
    alpha: float | None,
    compute_fraction: float | None,
    per_block: bool,
) -> Schedule:
    """``method="paper"``: exactly one of ``alpha`` or ``compute_fraction``; see the module.

    The metadata records the alpha used, the lookahead, ``per_block``, the achieved compute
    fraction (and the target, for a budget) over the curves' own metadata.
    """
    if (alpha is None) == (compute_fraction is None):
        raise ScheduleError(
            "give exactly one of alpha (an error threshold, e.g. 0.1) or compute_fraction "
            "(a budget, e.g. 0.5)"
        )
    rows = rule_rows(curves, per_block)
    extra: dict[str, Any] = {}
    if compute_fraction is not None:
        target = check_fraction(compute_fraction)
        value = search_alpha(rows, target)
        extra["compute_fraction_target"] = target
    else:
        value = check_alpha(alpha)
    flags = {key: paper_rule(errors, value) for key, errors, _ in rows}
    computed = sum(sum(flags[key]) * weight for key, _, weight in rows)
    cells = sum(weight for _, _, weight in rows) * curves.num_steps
    metadata = {
        **curves.metadata,
        "method": "paper",
        "alpha": value,
        "lookahead": curves.lookahead,
        "per_block": per_block,
        "compute_fraction": computed / cells,
        **extra,
    }
    return Schedule(rows=flags, metadata=metadata)
