"""What calibration measures besides the reuse curves: the sensitivity and the forecast errors.

:class:`Sensitivity` (:func:`smoothcache.measure_sensitivity`) says how much one step of reuse
changes the final output of a run, per group of branches; the sensitivity search
(:mod:`smoothcache.searches.sensitivity`) predicts a schedule's error from it.

:class:`ForecastErrors` (:func:`smoothcache.calibrating`) holds what a forecast *would* have
cost, measured while calibration computes every step: the relative L1 error
``||F_t - O_t||_1 / ||O_t||_1`` of a forecast ``F_t`` of order ``k`` made from the outputs at
steps ``t - j, t - j - g, ..., t - j - k g``: the step is the ``j``-th skipped step of a run
between computes ``g`` steps apart, with the earlier computes at the same spacing. Order 0 is
reuse at lag ``j``. Each such case is a *combo* ``(k, j, g)``; per branch, pass, combo and step
it keeps the mean, the mean square and the largest of the per-sample errors, so the tail of the
samples is seen, not only their mean. The forecast search (:mod:`smoothcache.searches.forecast`)
reads them.

Both ride on :class:`~smoothcache.ErrorCurves` and are saved in its file
(:mod:`smoothcache.curves_file`); they know nothing of either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from smoothcache.adapter import Branch
from smoothcache.errors import CalibrationError
from smoothcache.forecast import lagrange_weights
from smoothcache.schedule import MAX_ORDER
from smoothcache.validation import check_counts, check_errors

#: The sensitivity group where every branch reuses at once (the others: :func:`all_but`).
ALL_BRANCHES = "all"


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

    ``gram`` (optional, float64) is shaped ``(branches, passes, steps, window)``: entry
    ``[b, p, t, d]`` sums, over ``gram_count[b, p, t, d]`` samples, the inner product of branch
    ``b``'s outputs at steps ``t`` and ``t - d``; what fitted forecasts are fitted from
    (:mod:`smoothcache.fitting`). Curves recorded before it existed have none.
    """

    combos: tuple[Combo, ...]
    mean: np.ndarray
    square: np.ndarray
    worst: np.ndarray
    count: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)
    gram: np.ndarray | None = None
    gram_count: np.ndarray | None = None

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
        self._check_gram(shape)

    def _check_gram(self, shape: tuple[int, ...]) -> None:
        """Refuse a gram without counts (or the reverse), of another shape, or not finite."""
        if self.gram is None and self.gram_count is None:
            return
        if self.gram is None or self.gram_count is None:
            raise CalibrationError("forecast gram and gram_count come together; give both or none")
        gram = np.ascontiguousarray(self.gram, dtype=np.float64)
        gram_count = check_counts(self.gram_count, "forecast gram counts")
        if gram.ndim != 4 or gram.shape[:3] != (shape[0], shape[1], shape[3]) or gram.shape[3] < 1:
            raise CalibrationError(
                f"a forecast gram must be shaped (branches, passes, steps, window) = "
                f"({shape[0]}, {shape[1]}, {shape[3]}, window), found {gram.shape}"
            )
        if gram_count.shape != gram.shape:
            raise CalibrationError("forecast gram and gram_count must have one shape")
        if not np.isfinite(gram).all():
            raise CalibrationError("a forecast gram holds NaN or inf; calibrate again")
        object.__setattr__(self, "gram", gram)
        object.__setattr__(self, "gram_count", gram_count)

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


class Measured(Protocol):
    """What every calibration result offers (:class:`~smoothcache.ErrorCurves` is one): what the
    schedule searches read and the curves file writes build on it."""

    @property
    def branches(self) -> tuple[Branch, ...]:
        """The measured branches, in the order of the arrays' first axis."""

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Where the measurements came from (JSON-serialisable); a schedule's starts from it."""

    @property
    def sensitivity(self) -> Sensitivity | None:
        """The final output's sensitivity to each step, if it was measured."""

    @property
    def forecast(self) -> ForecastErrors | None:
        """The forecast errors, if they were measured."""
