"""The schedule of least predicted error for a budget: ``method="sensitivity"``.

It needs the curves' :class:`~smoothcache.Sensitivity` (:func:`smoothcache.measure_sensitivity`):
how much one step of reuse changes the final output. Every branch shares one row of computed
steps, the most the budget allows, placed by the exact dynamic program :func:`fewest_error_rows`
over :func:`run_costs`; the branch-steps left over buy extra computes of single kinds or blocks
(:func:`spend_remainder`). :func:`predicted_error` scores a whole schedule. The forecast search
(:mod:`smoothcache.searches.forecast`) places its computes with the same dynamic program.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smoothcache.errors import ScheduleError
from smoothcache.measurements import Sensitivity, all_but
from smoothcache.schedule import Schedule
from smoothcache.searches.base import BUDGET_SLACK, Measurements, budget_only, shared_steps


def run_costs(gram: np.ndarray) -> np.ndarray:
    """Predicted error of every reuse run: ``costs[i, r]`` for computing at ``i``, reusing ``r``.

    A run computes at step ``i`` and reuses that output at steps ``i + 1 .. i + r``. Reusing
    at step ``i + j`` the output of step ``i`` is the sum of the one-step reuses at steps
    ``i + 1 .. i + j`` (the output's changes telescope), so to first order the run changes the
    final output by ``sum_m (r - m + 1) P[i + m]``, ``m = 1 .. r``; its cost is the mean square
    of that change, ``w @ gram @ w``. ``costs[i, 0]`` is 0; runs that would reuse at the last
    step are ``inf``. ``gram`` is the ``(steps, steps)`` gram of the responses ``P``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    n = gram.shape[0]
    costs = np.full((n, n), np.inf)
    costs[:, 0] = 0.0
    steps = np.arange(n)
    for i in range(n - 2):
        runs = np.arange(1, n - 1 - i)[:, None]  # r = 1 .. n - 2 - i
        m = steps[None, :] - i  # offset of each step from the computed one
        weights = np.where(m >= 1, np.clip(runs - m + 1, 0, None), 0).astype(np.float64)
        values = np.einsum("rn,nk,rk->r", weights, gram, weights)
        costs[i, 1 : n - 1 - i] = np.maximum(values, 0.0)  # the gram is PSD up to rounding
    return costs


def fewest_error_rows(costs: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, ...]]]:
    """For every number of computed steps, the row of least total cost (exact dynamic program).

    ``costs`` is :func:`run_costs`' table. A row computes at its first and last step and splits
    the steps between into reuse runs; its cost is the sum of its runs' costs. Returns
    ``least[k]`` (shape ``(steps + 1,)``, ``inf`` where no row computes exactly ``k`` steps)
    and the rows themselves, by ``k``. Time ``O(steps^3)``: the best row with ``k`` computes
    ending at step ``c`` extends the best row with ``k - 1`` computes ending at some ``c' < c``.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n = costs.shape[0]
    before, after = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    gap = after - before - 1
    step = np.where(gap >= 0, costs[before, np.clip(gap, 0, None)], np.inf)  # c' -> c
    best = np.full((n + 1, n), np.inf)
    parent = np.zeros((n + 1, n), dtype=np.int64)
    best[1, 0] = 0.0
    for k in range(2, n + 1):
        totals = best[k - 1][:, None] + step
        parent[k] = np.argmin(totals, axis=0)
        best[k] = totals[parent[k], np.arange(n)]
    least = best[:, n - 1].copy()
    rows: dict[int, tuple[int, ...]] = {}
    for k in np.flatnonzero(np.isfinite(least)):
        row = [0] * n
        c = n - 1
        for kk in range(int(k), 1, -1):
            row[c] = 1
            c = int(parent[kk, c])
        row[c] = 1
        rows[int(k)] = tuple(row)
    return least, rows


def _run_weights(
    n: int, start: int, length: int, extra: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """How often each step's one-step response counts in a run: every branch's, the group's.

    See :func:`split_run_cost`: at a step ``s`` of the run, with ``c`` the last extra compute up
    to ``s`` (or ``start``), every branch's responses count over ``(c, s]`` and the group's over
    ``(start, c]``.
    """
    whole, part = np.zeros(n), np.zeros(n)
    for s in range(start + 1, start + length + 1):
        last = max([start, *(m for m in extra if m <= s)])
        whole[last + 1 : s + 1] += 1.0
        part[start + 1 : last + 1] += 1.0
    return whole, part


def split_run_cost(
    sensitivity: Sensitivity, group: int, start: int, length: int, extra: Sequence[int]
) -> float:
    """Predicted error of a run in which one kind or block computes at the steps ``extra`` too.

    The run computes every branch at ``start`` and reuses at ``start + 1 .. start + length``,
    except that the kind or block that sensitivity group ``group`` (an :func:`all_but` group)
    leaves out computes again at each step of ``extra``. At a step ``s`` of the run, with ``c``
    the last of those extra computes up to ``s`` (or ``start``), the output's change is the
    one-step responses of every branch over ``(c, s]`` plus those of the group over
    ``(start, c]``. With no extra steps this is :func:`run_costs`' ``costs[start, length]``.
    """
    whole, part = _run_weights(sensitivity.gram.shape[1], start, length, extra)
    value = (
        whole @ sensitivity.gram[0] @ whole
        + 2.0 * whole @ sensitivity.cross[group] @ part
        + part @ sensitivity.gram[group] @ part
    )
    return max(float(value), 0.0)


def predicted_error(
    sensitivity: Sensitivity, row: Sequence[int], extra: Mapping[int, Sequence[int]]
) -> float:
    """The predicted mean square change of the final output under a whole schedule.

    ``row`` is the row every branch shares and ``extra`` the extra compute steps per
    sensitivity group (:func:`spend_remainder`'s result). Unlike the search, which adds the
    runs' costs, this adds the runs' changes before squaring, so it counts the correlation
    between runs; only the products of two different groups' responses, which are not
    measured, are left out.
    """
    n = len(row)
    whole = np.zeros(n)
    parts: dict[int, np.ndarray] = {}
    owner = {step: group for group, steps in extra.items() for step in steps}
    starts = [i for i in range(n) if row[i]]
    for i, nxt in itertools.pairwise(starts):
        marks = [s for s in range(i + 1, nxt) if s in owner]
        run_whole, run_part = _run_weights(n, i, nxt - i - 1, marks)
        whole += run_whole
        if marks:
            group = owner[marks[0]]
            parts[group] = parts.get(group, np.zeros(n)) + run_part
    value = whole @ sensitivity.gram[0] @ whole
    for group, part in parts.items():
        value += 2.0 * whole @ sensitivity.cross[group] @ part
        value += part @ sensitivity.gram[group] @ part
    return max(float(value), 0.0)


def spend_remainder(
    row: Sequence[int],
    sensitivity: Sensitivity,
    groups: Sequence[tuple[int, int]],
    remainder: int,
) -> dict[int, list[int]]:
    """Extra computes of single kinds or blocks that lower the predicted error most.

    ``row`` is the schedule every branch shares; ``groups`` lists ``(index of an
    :func:`all_but` group in the sensitivity, branches of the kind or block it leaves out)`` for
    the kinds or blocks that may compute more, and ``remainder`` the branch-steps left in the
    budget. Greedily, while something fits, the extra compute of one kind or block at one reuse
    step of ``row`` that lowers the predicted error most per branch-step is added; a run takes
    extra computes of one kind or block only, so that :func:`split_run_cost` prices it. Returns
    the extra steps per group index.
    """
    n = len(row)
    starts = [i for i in range(n) if row[i]]
    runs = [(i, nxt - i - 1) for i, nxt in itertools.pairwise(starts)]
    owner: list[int | None] = [None] * len(runs)
    marks: list[list[int]] = [[] for _ in runs]
    costs = [split_run_cost(sensitivity, 0, i, length, ()) for i, length in runs]
    while True:
        best: tuple[float, int, int, int, float] | None = None
        for r, (i, length) in enumerate(runs):
            for group, size in groups:
                if size > remainder or owner[r] not in (None, group):
                    continue
                for step in range(i + 1, i + length + 1):
                    if step in marks[r]:
                        continue
                    cost = split_run_cost(sensitivity, group, i, length, [*marks[r], step])
                    gain = (costs[r] - cost) / size
                    if gain > 0 and (best is None or gain > best[0]):
                        best = (gain, r, group, step, cost)
        if best is None:
            break
        _, r, group, step, cost = best
        owner[r] = group
        marks[r].append(step)
        costs[r] = cost
        remainder -= dict(groups)[group]
    extra: dict[int, list[int]] = {}
    for group, steps in zip(owner, marks):
        if group is not None:
            extra.setdefault(group, []).extend(steps)
    return extra


def sensitivity_search(
    curves: Measurements,
    *,
    alpha: float | None,
    compute_fraction: float | None,
    per_block: bool,
) -> Schedule:
    """The schedule of least predicted error within ``compute_fraction`` (no ``alpha``).

    Every branch shares one row: the most steps that fit, placed by :func:`run_costs` and
    :func:`fewest_error_rows` from the gram of every branch reusing at once. The branch-steps
    left over (less than one step of every branch) buy extra computes of single kinds, or of
    single blocks with ``per_block`` (which needs the sensitivity measured per block), by
    :func:`spend_remainder`. The search adds the runs' mean squares, as if the changes that
    different runs cause were uncorrelated; ``predicted_rms`` in the metadata is the root of
    :func:`predicted_error`, which counts their correlation, in the units of the run's output
    on the calibration samples.
    """
    target = budget_only("sensitivity", alpha, compute_fraction)
    sensitivity = curves.sensitivity
    if sensitivity is None:
        raise ScheduleError(
            "method 'sensitivity' needs the final output's sensitivity to each step, which "
            "these curves do not carry: curves = smoothcache.measure_sensitivity(model, run, "
            "curves) measures it (see docs/schedule-search-method.md)"
        )
    n, branches = curves.num_steps, len(curves.branches)
    budget = math.floor(target * branches * n + BUDGET_SLACK)
    shared = shared_steps(branches, n, target)
    if per_block:
        parts = {b.block: all_but(block=b.block) for b in curves.branches}
        missing = [name for name in parts.values() if name not in sensitivity.groups]
        if missing:
            raise ScheduleError(
                f"per_block needs the sensitivity of every block, and {missing[0]!r} was not "
                "measured; measure it with smoothcache.measure_sensitivity(model, run, "
                "curves, per_block=True)"
            )
        member = {b: b.block for b in curves.branches}
    else:
        parts = {kind: all_but(kind) for kind in curves.kinds}
        member = {b: b.kind for b in curves.branches}
    sizes = {part: sum(1 for b in member if member[b] == part) for part in parts}
    groups = [
        (sensitivity.groups.index(name), sizes[part])
        for part, name in parts.items()
        if name in sensitivity.groups
    ]
    _, rows = fewest_error_rows(run_costs(sensitivity.gram[0]))
    row = rows[shared]
    extra = spend_remainder(row, sensitivity, groups, budget - shared * branches)
    part_of = {name: part for part, name in parts.items()}
    own: dict[Any, tuple[int, ...]] = {}
    for group, steps in extra.items():
        flags = list(row)
        for step in steps:
            flags[step] = 1
        own[part_of[sensitivity.groups[group]]] = tuple(flags)
    schedule_rows: dict[str, tuple[int, ...]] = {}
    for branch, part in member.items():
        schedule_rows[branch.key if per_block else branch.kind] = own.get(part, row)
    computed = sum(sum(own.get(part, row)) for part in member.values())
    metadata = {
        **curves.metadata,
        "method": "sensitivity",
        "per_block": per_block,
        "compute_fraction": computed / (branches * n),
        "compute_fraction_target": target,
        "predicted_rms": math.sqrt(predicted_error(sensitivity, row, extra)),
        "sensitivity": dict(sensitivity.metadata),
    }
    return Schedule(rows=schedule_rows, metadata=metadata)
