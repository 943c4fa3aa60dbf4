"""Calibration error curves, their file format, and the rule that turns them into a schedule.

:class:`ErrorCurves` holds, for every residual branch of a model, every pass of a step (guidance
run as separate calls gives two), every lag ``j = 1..lookahead`` and every denoising step ``t``,
the mean over samples and runs of the relative L1 error ``||O_t - O_{t-j}||_1 / ||O_t||_1`` of
the branch's output, its standard deviation and the number of samples behind it. They are what
:func:`smoothcache.calibrating` records and what :meth:`ErrorCurves.schedule` turns into a static
:class:`~smoothcache.Schedule`, either with the SmoothCache paper's greedy rule (:func:`paper_rule`)
or, when the curves also carry a :class:`Sensitivity` (:func:`smoothcache.measure_sensitivity`),
with the schedule of least predicted error for a compute budget (``method="sensitivity"``:
:func:`run_costs`, :func:`fewest_error_rows`, :func:`spend_remainder`).

Curves are saved with safetensors (never pickle): three tensors ``mean``, ``std`` and ``count``
shaped ``(branches, passes, lookahead, steps)`` and a header with the format name, version, the
branch list and the metadata as JSON strings. A measured sensitivity adds the tensors
``sensitivity_gram`` and ``sensitivity_cross`` and a ``sensitivity`` header entry; files without
them load as before.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from smoothcache.adapter import Adapter, Branch
from smoothcache.binding import denoisers, measured_branches, resolve
from smoothcache.errors import CalibrationError, CurvesFileError, ScheduleError
from smoothcache.forecast_search import ForecastErrors, forecast_candidates, forecast_schedule
from smoothcache.jsonfile import parse_json
from smoothcache.schedule import Schedule
from smoothcache.validation import check_counts, check_errors

FORMAT_NAME = "smoothcache.curves"
FORMAT_VERSION = 1
METHODS = ("paper", "sensitivity", "forecast")
#: The sensitivity group where every branch reuses at once (the others: :func:`all_but`).
ALL_BRANCHES = "all"

# Tolerance, in branch-steps, when comparing a schedule's compute count with a budget.
_BUDGET_SLACK = 1e-9


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


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise ScheduleError(f"alpha must be a number, found {type(alpha).__name__} {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value) or value < 0:
        raise ScheduleError(
            f"alpha must be a finite number >= 0 (the largest relative L1 error a reuse may "
            f"cause, e.g. 0.1), found {value!r}"
        )
    return value


def _check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(
        fraction, (int, float, np.floating, np.integer)
    ):
        raise ScheduleError(
            f"compute_fraction must be a number in (0, 1], found {type(fraction).__name__} "
            f"{fraction!r}"
        )
    value = float(fraction)
    if not 0 < value <= 1:  # also rejects NaN
        raise ScheduleError(
            f"compute_fraction must be in (0, 1] (the share of branch-steps that compute, e.g. "
            f"0.5), found {value!r}"
        )
    return value


# -- schedules of least predicted error ------------------------------------------------------


def all_but(kind: str | None = None, block: int | None = None) -> str:
    """The name of the sensitivity group where every branch reuses except one kind or block."""
    return f"all-but-{kind}" if block is None else f"all-but-block-{block}"


@dataclass(frozen=True)
class Sensitivity:
    """How much one step of reuse changes the final output of a run, per group of branches.

    ``groups`` names what reuses: :data:`ALL_BRANCHES` (first: every branch), ``all-but-<kind>``
    (every branch but those of one kind) or ``all-but-block-<i>`` (every branch but block
    ``i``'s); see :func:`all_but`. Let ``P[g, t]`` be the change of the final output when group
    ``g`` reuses at step ``t`` its outputs of step ``t - 1`` and every other branch computes.
    ``gram[g, t, u]`` is the mean over the output's elements of ``P[g, t] * P[g, u]``, and
    ``cross[g, t, u]`` that of ``P[all, t] * P[g, u]``; both are shaped ``(groups, steps,
    steps)`` and zero at the first and the last step (those always compute). ``metadata``
    records how they were measured (runs, seconds ...).
    """

    groups: tuple[str, ...]
    gram: np.ndarray
    cross: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        groups = tuple(self.groups)
        gram = np.ascontiguousarray(self.gram, dtype=np.float64)
        cross = np.ascontiguousarray(self.cross, dtype=np.float64)
        shape = (len(groups), gram.shape[-1], gram.shape[-1])
        if gram.shape != shape or cross.shape != shape:
            raise CalibrationError(
                f"a sensitivity's gram and cross must be shaped (groups, steps, steps) with one "
                f"entry per group ({len(groups)}), found {gram.shape} and {cross.shape}"
            )
        if not groups or groups[0] != ALL_BRANCHES or len(set(groups)) != len(groups):
            raise CalibrationError(
                f"sensitivity groups must be unique and start with {ALL_BRANCHES!r}, found {groups}"
            )
        if not (np.isfinite(gram).all() and np.isfinite(cross).all()):
            raise CalibrationError("a sensitivity holds NaN or inf; measure it again")
        if (np.diagonal(gram, axis1=1, axis2=2) < 0).any():
            raise CalibrationError("a sensitivity's gram has a negative diagonal (a mean square)")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "gram", gram)
        object.__setattr__(self, "cross", cross)
        object.__setattr__(self, "metadata", dict(self.metadata))


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


_FORECAST_TENSORS = ("mean", "square", "worst", "count")


def _check_dtypes(tensors: Mapping[str, torch.Tensor]) -> None:
    """Tensors read from a curves file: float64 statistics and int64 counts, nothing else."""
    for name, tensor in tensors.items():
        expected = torch.int64 if name.endswith("count") else torch.float64
        if tensor.dtype != expected:
            raise CalibrationError(f"tensor {name!r} has dtype {tensor.dtype}, expected {expected}")


def _header(header: Mapping[str, str], key: str, kind: type) -> Any:
    """A JSON entry of a curves file's header, checked to be a ``kind`` (list or dict)."""
    value = parse_json(header[key])
    if not isinstance(value, kind):
        raise CalibrationError(
            f"header entry {key!r} must be a JSON {'array' if kind is list else 'object'}, "
            f"found {type(value).__name__}"
        )
    return value


def _describe(branches: Sequence[Branch]) -> str:
    """A short summary of a branch list: ``24 branches (attn1 x12, ff x12)``."""
    kinds: dict[str, int] = {}
    for branch in branches:
        kinds[branch.kind] = kinds.get(branch.kind, 0) + 1
    parts = ", ".join(f"{kind} x{n}" for kind, n in kinds.items())
    return f"{len(branches)} branches ({parts})"


class ErrorCurves:
    """Per-branch, per-pass, per-lag, per-step calibration errors of one model and sampler.

    ``mean``, ``std`` (float64) and ``count`` (int64) are shaped ``(branches, passes, lookahead,
    steps)``: entry ``[b, p, j - 1, t]`` describes the relative L1 error between branch ``b``'s
    outputs at steps ``t`` and ``t - j`` in pass ``p``, over ``count`` samples. Entries that
    cannot exist (``t < j``) or were never seen have NaN mean and std and count 0. ``metadata``
    records where the curves came from (model class, adapter, timesteps, number of samples ...).
    ``sensitivity``, if measured (:func:`smoothcache.measure_sensitivity`), is what
    ``schedule(method="sensitivity")`` needs.
    """

    def __init__(
        self,
        branches: Sequence[Branch],
        mean: np.ndarray,
        std: np.ndarray,
        count: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        sensitivity: Sensitivity | None = None,
        forecast: ForecastErrors | None = None,
    ) -> None:
        self.branches = tuple(branches)
        self.mean = np.ascontiguousarray(mean, dtype=np.float64)
        self.std = np.ascontiguousarray(std, dtype=np.float64)
        self.count = check_counts(count, "curves counts")
        if self.mean.ndim != 4:
            raise CalibrationError(
                f"curves must be shaped (branches, passes, lookahead, steps), found mean of shape "
                f"{self.mean.shape}"
            )
        if self.std.shape != self.mean.shape or self.count.shape != self.mean.shape:
            raise CalibrationError(
                f"mean, std and count must have one shape, found {self.mean.shape}, "
                f"{self.std.shape} and {self.count.shape}"
            )
        n_branches, passes, lookahead, num_steps = self.mean.shape
        if n_branches != len(self.branches) or n_branches == 0:
            raise CalibrationError(
                f"curves hold {n_branches} branch rows but {len(self.branches)} branches are named"
            )
        if passes < 1 or lookahead < 1 or num_steps < 2:
            raise CalibrationError(
                f"curves need at least 1 pass, lag 1 and 2 steps, found {passes} passes, "
                f"lookahead {lookahead} and {num_steps} steps"
            )
        check_errors(self.count > 0, self.mean, self.std, what="curves")
        meta = dict(metadata or {})
        for key, value in (("num_steps", num_steps), ("lookahead", lookahead)):
            if meta.setdefault(key, value) != value:
                raise CalibrationError(
                    f"curves metadata says {key}={meta[key]!r} but the arrays have {value}"
                )
        self.metadata = meta
        if sensitivity is not None and sensitivity.gram.shape[1] != num_steps:
            raise CalibrationError(
                f"the sensitivity was measured over {sensitivity.gram.shape[1]} steps but the "
                f"curves have {num_steps}; measure it with runs of the curves' step count"
            )
        self.sensitivity = sensitivity
        if forecast is not None and forecast.mean.shape[:2] != (n_branches, passes):
            raise CalibrationError(
                f"forecast errors cover {forecast.mean.shape[:2]} (branches, passes) but the "
                f"curves have {(n_branches, passes)}; they come from another calibration"
            )
        if forecast is not None and forecast.mean.shape[3] != num_steps:
            raise CalibrationError(
                f"forecast errors cover {forecast.mean.shape[3]} steps but the curves have "
                f"{num_steps}; they come from another calibration"
            )
        #: forecast errors per order, lag and spacing (:mod:`smoothcache.forecast_search`)
        self.forecast = forecast

    def with_sensitivity(self, sensitivity: Sensitivity) -> ErrorCurves:
        """A copy of these curves that carries ``sensitivity``."""
        return ErrorCurves(
            self.branches,
            self.mean,
            self.std,
            self.count,
            self.metadata,
            sensitivity,
            self.forecast,
        )

    # -- shape and provenance ----------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Number of denoising steps of each calibration run."""
        return self.mean.shape[3]

    @property
    def lookahead(self) -> int:
        """The largest lag recorded."""
        return self.mean.shape[2]

    @property
    def passes(self) -> int:
        """Model calls per step (2 when guidance runs the conditional and unconditional apart)."""
        return self.mean.shape[1]

    @property
    def kinds(self) -> tuple[str, ...]:
        """Branch kinds in order of first appearance."""
        return tuple(dict.fromkeys(b.kind for b in self.branches))

    # -- pooled curves -----------------------------------------------------------------------

    def curve(
        self, kind: str | None = None, block: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and count shaped ``(lookahead, steps)``, pooled over passes and branches.

        ``kind`` and ``block`` select the branches (``None`` selects all); pooling weights every
        branch and pass by its sample count, so the result is the mean and spread over every
        sample behind the selected entries. Steps without data have NaN mean and std.
        """
        rows = np.array(
            [
                (kind is None or b.kind == kind) and (block is None or b.block == block)
                for b in self.branches
            ]
        )
        if not rows.any():
            raise CalibrationError(
                f"no branch has kind={kind!r} and block={block!r}; the curves hold "
                f"{_describe(self.branches)}"
            )
        return self._pool(rows)

    def _pool(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = self.count[rows]
        seen = count > 0
        mean = np.where(seen, self.mean[rows], 0.0)
        std = np.where(seen, self.std[rows], 0.0)
        total = count.sum(axis=(0, 1))
        first = (mean * count).sum(axis=(0, 1))
        second = ((std * std + mean * mean) * count).sum(axis=(0, 1))
        has = total > 0
        pooled = np.divide(first, total, out=np.full(total.shape, np.nan), where=has)
        square = np.divide(second, total, out=np.full(total.shape, np.nan), where=has)
        spread = np.sqrt(np.maximum(square - pooled * pooled, 0.0))  # NaN stays NaN
        return pooled, spread, total

    # -- schedules ---------------------------------------------------------------------------

    def row_members(self, per_block: bool) -> list[tuple[str, np.ndarray]]:
        """``(schedule key, mask of its branches)`` per schedule row: one per kind, or per block."""
        if per_block:
            return [
                (b.key, np.arange(len(self.branches)) == i) for i, b in enumerate(self.branches)
            ]
        return [(kind, np.array([b.kind == kind for b in self.branches])) for kind in self.kinds]

    def shared_steps(self, target: float) -> int:
        """Steps every branch can compute within ``target`` when all share one row (at least 2).

        The budget is ``target`` of the model's branch-steps; what is left below one more step
        of every branch is the remainder a search may spend elsewhere.
        """
        n = self.num_steps
        shared = math.floor(target * len(self.branches) * n + _BUDGET_SLACK) // len(self.branches)
        if shared < 2:
            raise ScheduleError(
                f"no schedule computes at most {target:g} of the branch-steps: every branch "
                f"computes at its first and last step, {2 / n:.4f} of them; raise compute_fraction"
            )
        return shared

    def _rule_rows(self, per_block: bool) -> list[tuple[str, np.ndarray, int]]:
        """``(schedule key, errors (lookahead, steps), branch-steps weight)`` per schedule row."""
        return [
            (key, self._pool(members)[0], int(members.sum()))
            for key, members in self.row_members(per_block)
        ]

    def schedule(
        self,
        alpha: float | None = None,
        *,
        compute_fraction: float | None = None,
        per_block: bool = False,
        method: str = "paper",
    ) -> Schedule:
        """A static schedule from these curves.

        ``method="paper"`` (the default) applies the paper's rule (:func:`paper_rule`). Give
        exactly one of ``alpha`` (the largest error a reuse may cause) or ``compute_fraction`` (a
        budget: the alpha whose schedule computes the largest share of the model's branch-steps
        not above it is searched among the curves' error values; a per-kind row counts once per
        block of its kind). ``per_block=False`` pools blocks of one kind into one row, as the
        paper does; ``per_block=True`` gives every block its own row.

        ``method="sensitivity"`` takes a ``compute_fraction`` only and needs the curves'
        :attr:`sensitivity`: it returns a schedule of least predicted error of the final output
        within the budget (see :meth:`_least_error_rows`). Every branch shares one row; what is
        left of the budget buys extra computes of single kinds (``per_block=False``) or single
        blocks (``per_block=True``, which needs the sensitivity measured per block).

        ``method="forecast"`` takes a ``compute_fraction`` only and needs the curves'
        :attr:`forecast` errors (recorded by default): it chooses which steps compute and, for
        every skipped step and kind (or block), whether to reuse or forecast and with which
        order (:func:`~smoothcache.forecast_search.forecast_schedule`); a sensitivity, if the
        curves carry one, weighs the steps.

        The schedule's metadata records the method, the achieved compute fraction (and the
        target, for a budget), alpha and lookahead for the paper's rule, and the curves' metadata.
        """
        if method not in METHODS:
            raise ScheduleError(
                f"unknown schedule method {method!r}; available methods: {', '.join(METHODS)}"
            )
        if method in ("sensitivity", "forecast"):
            if alpha is not None or compute_fraction is None:
                raise ScheduleError(
                    f"method {method!r} chooses the best schedule for a budget: give "
                    "compute_fraction (e.g. 0.35), not alpha"
                )
            fraction = _check_fraction(compute_fraction)
            if method == "forecast":
                return forecast_schedule(self, fraction, per_block)
            return self._least_error_rows(fraction, per_block)
        if (alpha is None) == (compute_fraction is None):
            raise ScheduleError(
                "give exactly one of alpha (an error threshold, e.g. 0.1) or compute_fraction "
                "(a budget, e.g. 0.5)"
            )
        rows = self._rule_rows(per_block)
        extra: dict[str, Any] = {}
        if compute_fraction is not None:
            target = _check_fraction(compute_fraction)
            value = self._search_alpha(rows, target)
            extra["compute_fraction_target"] = target
        else:
            value = _check_alpha(alpha)
        flags = {key: paper_rule(errors, value) for key, errors, _ in rows}
        computed = sum(sum(flags[key]) * weight for key, _, weight in rows)
        cells = sum(weight for _, _, weight in rows) * self.num_steps
        metadata = {
            **self.metadata,
            "method": method,
            "alpha": value,
            "lookahead": self.lookahead,
            "per_block": per_block,
            "compute_fraction": computed / cells,
            **extra,
        }
        return Schedule(rows=flags, metadata=metadata)

    def forecast_candidates(
        self, compute_fraction: float, *, per_block: bool = False
    ) -> list[Schedule]:
        """Forecast schedules within ``compute_fraction`` for :func:`smoothcache.select_schedule`
        to choose from on held-out samples: the one of ``schedule(..., method="forecast")``
        first, then the distinct others of a small family (a cap on the order times a prior
        toward higher orders; :func:`~smoothcache.forecast_search.forecast_candidates`). When
        these curves carry a sensitivity (:func:`smoothcache.measure_sensitivity`), the family's
        members place their computes by the final output's sensitivity (``weighted`` in their
        metadata): measure it on the whole calibration batch, which must contain the tail.
        """
        return forecast_candidates(self, _check_fraction(compute_fraction), per_block)

    def _least_error_rows(self, target: float, per_block: bool) -> Schedule:
        """The schedule of least predicted error within ``target``: ``method="sensitivity"``.

        Every branch shares one row: the most steps that fit, placed by :func:`run_costs` and
        :func:`fewest_error_rows` from the gram of every branch reusing at once. The branch-steps
        left over (less than one step of every branch) buy extra computes of single kinds, or of
        single blocks with ``per_block``, by :func:`spend_remainder`. The search adds the runs'
        mean squares, as if the changes that different runs cause were uncorrelated;
        ``predicted_rms`` in the metadata is the root of :func:`predicted_error`, which counts
        their correlation, in the units of the run's output on the calibration samples.
        """
        sensitivity = self.sensitivity
        if sensitivity is None:
            raise ScheduleError(
                "method 'sensitivity' needs the final output's sensitivity to each step, which "
                "these curves do not carry: curves = smoothcache.measure_sensitivity(model, run, "
                "curves) measures it (see docs/schedule-search-method.md)"
            )
        n, branches = self.num_steps, len(self.branches)
        budget = math.floor(target * branches * n + _BUDGET_SLACK)
        shared = self.shared_steps(target)
        if per_block:
            parts = {b.block: all_but(block=b.block) for b in self.branches}
            missing = [name for name in parts.values() if name not in sensitivity.groups]
            if missing:
                raise ScheduleError(
                    f"per_block needs the sensitivity of every block, and {missing[0]!r} was not "
                    "measured; measure it with smoothcache.measure_sensitivity(model, run, "
                    "curves, per_block=True)"
                )
            member = {b: b.block for b in self.branches}
        else:
            parts = {kind: all_but(kind) for kind in self.kinds}
            member = {b: b.kind for b in self.branches}
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
            **self.metadata,
            "method": "sensitivity",
            "per_block": per_block,
            "compute_fraction": computed / (branches * n),
            "compute_fraction_target": target,
            "predicted_rms": math.sqrt(predicted_error(sensitivity, row, extra)),
            "sensitivity": dict(sensitivity.metadata),
        }
        return Schedule(rows=schedule_rows, metadata=metadata)

    def _search_alpha(self, rows: list[tuple[str, np.ndarray, int]], target: float) -> float:
        """The alpha whose schedule computes the most branch-steps without exceeding ``target``.

        A row's schedule changes only where alpha crosses one of the errors the rule reads, so
        every distinct schedule is reached by some candidate in {0} and those errors. The share
        of computed steps need not fall monotonically as alpha grows (a longer reuse run can land
        on a step from which nothing can be reused), so every candidate is scored; ties go to
        the smallest alpha.
        """
        readable = _rule_entries(self.lookahead, self.num_steps)
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
        cells = sum(weight for _, _, weight in rows) * self.num_steps
        fits = totals <= target * cells + _BUDGET_SLACK
        if not fits.any():
            low = int(np.argmin(totals))
            raise ScheduleError(
                f"no alpha computes at most {target:g} of the branch-steps: the smallest "
                f"achievable fraction with lookahead {self.lookahead} is "
                f"{totals[low] / cells:.4f} (alpha={alphas[low]:g}); raise compute_fraction or "
                "calibrate with a larger lookahead"
            )
        best = totals[fits].max()
        return float(alphas[np.flatnonzero(fits & (totals == best))[0]])

    # -- model check -------------------------------------------------------------------------

    def check_model(self, model: Any, adapter: str | Adapter | None = None) -> None:
        """Raise :class:`CalibrationError` unless ``model`` is the kind of model the curves fit.

        Compares the denoiser's class name, the adapter's name and the branch list (paths, kinds
        and blocks of the branches calibration measures: group leaders, the second denoiser's
        too) with those recorded at calibration. ``model`` is a denoiser or a pipeline.
        """
        root, chosen = resolve(model, adapter)
        branches = [b for b, _ in measured_branches(denoisers(model, root, chosen), chosen)]
        recorded_class = self.metadata.get("model")
        recorded_adapter = self.metadata.get("adapter")
        found_class = type(root).__qualname__
        problems = []
        if recorded_class is not None and recorded_class != found_class:
            problems.append(f"model class {recorded_class} vs {found_class}")
        if recorded_adapter is not None and recorded_adapter != chosen.name:
            problems.append(f"adapter {recorded_adapter!r} vs {chosen.name!r}")
        if list(self.branches) != branches:
            problems.append(f"{_describe(self.branches)} vs {_describe(branches)}")
        if problems:
            raise CalibrationError(
                "these curves were recorded on another model (curves vs this model: "
                f"{'; '.join(problems)}); calibrate this model instead"
            )

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the curves as a safetensors file with the metadata in its header."""
        header = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "branches": json.dumps([[b.path, b.kind, b.block] for b in self.branches]),
            "metadata": json.dumps(self.metadata),
        }
        tensors = {
            "mean": torch.from_numpy(self.mean),
            "std": torch.from_numpy(self.std),
            "count": torch.from_numpy(self.count),
        }
        if self.sensitivity is not None:
            header["sensitivity"] = json.dumps(
                {"groups": list(self.sensitivity.groups), "metadata": self.sensitivity.metadata}
            )
            tensors["sensitivity_gram"] = torch.from_numpy(self.sensitivity.gram)
            tensors["sensitivity_cross"] = torch.from_numpy(self.sensitivity.cross)
        if self.forecast is not None:
            header["forecast"] = json.dumps(
                {"combos": [list(c) for c in self.forecast.combos], **self.forecast.metadata}
            )
            for name in _FORECAST_TENSORS:
                tensors[f"forecast_{name}"] = torch.from_numpy(getattr(self.forecast, name))
        save_file(tensors, str(path), metadata=header)

    @classmethod
    def load(cls, path: str | Path) -> ErrorCurves:
        """Read a curves file written by :meth:`save`; anything else is a CurvesFileError."""
        name = str(path)
        try:
            with safe_open(name, framework="pt") as handle:
                header = handle.metadata() or {}
                if header.get("format") != FORMAT_NAME:
                    raise CurvesFileError(
                        f"{name!r} is a safetensors file but not a smoothcache curves file "
                        f"(format {header.get('format')!r}, expected {FORMAT_NAME!r})"
                    )
                if header.get("version") != str(FORMAT_VERSION):
                    raise CurvesFileError(
                        f"curves file {name!r} has format version {header.get('version')!r}; "
                        f"this library reads version {FORMAT_VERSION}: upgrade smoothcache or "
                        "calibrate again"
                    )
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except FileNotFoundError:
            raise CurvesFileError(f"curves file {name!r} does not exist; check the path") from None
        except (SafetensorError, OSError) as exc:
            raise CurvesFileError(
                f"{name!r} is not a smoothcache curves file (not readable as safetensors: {exc}); "
                "curves files are written by `smoothcache calibrate` or ErrorCurves.save"
            ) from None
        missing = [k for k in ("mean", "std", "count") if k not in tensors]
        try:
            if missing:
                raise CalibrationError(f"tensors {missing} are missing")
            _check_dtypes(tensors)
            branches = [
                Branch(path=str(p), kind=str(k), block=int(b))
                for p, k, b in _header(header, "branches", list)
            ]
            metadata = _header(header, "metadata", dict)
            sensitivity = None
            if "sensitivity_gram" in tensors:
                described = _header(header, "sensitivity", dict)
                sensitivity = Sensitivity(
                    tuple(str(g) for g in described["groups"]),
                    tensors["sensitivity_gram"].numpy(),
                    tensors["sensitivity_cross"].numpy(),
                    described["metadata"],
                )
            forecast = None
            if "forecast" in header:
                described = _header(header, "forecast", dict)
                arrays = {name: tensors[f"forecast_{name}"] for name in _FORECAST_TENSORS}
                forecast = ForecastErrors(
                    tuple(tuple(c) for c in described.pop("combos")),
                    *(arrays[name].numpy() for name in _FORECAST_TENSORS),
                    metadata=described,
                )
            return cls(
                branches,
                tensors["mean"].numpy(),
                tensors["std"].numpy(),
                tensors["count"].numpy(),
                metadata,
                sensitivity,
                forecast,
            )
        except (CalibrationError, LookupError, TypeError, ValueError) as exc:
            raise CurvesFileError(f"curves file {name!r} is corrupt: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"ErrorCurves(model={self.metadata.get('model')!r}, "
            f"adapter={self.metadata.get('adapter')!r}, {_describe(self.branches)}, "
            f"passes={self.passes}, lookahead={self.lookahead}, num_steps={self.num_steps}"
            + (f", sensitivity={list(self.sensitivity.groups)}" if self.sensitivity else "")
            + ")"
        )
