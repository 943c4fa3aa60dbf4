"""Calibration error curves: the reuse errors of every branch, and what rides with them.

:class:`ErrorCurves` holds, for every residual branch of a model, every pass of a step (guidance
run as separate calls gives two), every lag ``j = 1..lookahead`` and every denoising step ``t``,
the mean over samples and runs of the relative L1 error ``||O_t - O_{t-j}||_1 / ||O_t||_1`` of
the branch's output, its standard deviation and the number of samples behind it. They are what
:func:`smoothcache.calibrating` records, with the forecast errors
(:class:`~smoothcache.measurements.ForecastErrors`) and, once
:func:`smoothcache.measure_sensitivity` adds it, a :class:`~smoothcache.Sensitivity`.

:meth:`ErrorCurves.schedule` turns them into a static :class:`~smoothcache.Schedule` through
the search its ``method`` names (:data:`smoothcache.searches.METHODS`);
:meth:`ErrorCurves.save` and :meth:`ErrorCurves.load` use the curves file
(:mod:`smoothcache.curves_file`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smoothcache.adapter import Adapter, Branch
from smoothcache.binding import denoisers, measured_branches, resolve
from smoothcache.curves_file import read_curves, write_curves
from smoothcache.errors import CalibrationError, ScheduleError
from smoothcache.measurements import ForecastErrors, Sensitivity
from smoothcache.schedule import Schedule
from smoothcache.searches import METHODS, base
from smoothcache.searches.forecast import (
    CANDIDATE_CAPS,
    CANDIDATE_PRIORS,
    forecast_candidates,
)
from smoothcache.validation import check_counts, check_errors


def _describe(branches: Sequence[Branch]) -> str:
    """A short summary of a branch list: ``24 branches (attn1 x12, ff x12)``."""
    kinds: dict[str, int] = {}
    for branch in branches:
        kinds[branch.kind] = kinds.get(branch.kind, 0) + 1
    parts = ", ".join(f"{kind} x{n}" for kind, n in kinds.items())
    return f"{len(branches)} branches ({parts})"


def _check_riders(
    shape: tuple[int, ...], sensitivity: Sensitivity | None, forecast: ForecastErrors | None
) -> None:
    """A CalibrationError unless the sensitivity and forecast errors fit curves of ``shape``."""
    n_branches, passes, _, num_steps = shape
    if sensitivity is not None and sensitivity.gram.shape[1] != num_steps:
        raise CalibrationError(
            f"the sensitivity was measured over {sensitivity.gram.shape[1]} steps but the "
            f"curves have {num_steps}; measure it with runs of the curves' step count"
        )
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


class ErrorCurves:
    """Per-branch, per-pass, per-lag, per-step calibration errors of one model and sampler.

    ``mean``, ``std`` (float64) and ``count`` (int64) are shaped ``(branches, passes, lookahead,
    steps)``: entry ``[b, p, j - 1, t]`` describes the relative L1 error between branch ``b``'s
    outputs at steps ``t`` and ``t - j`` in pass ``p``, over ``count`` samples. Entries that
    cannot exist (``t < j``) or were never seen have NaN mean and std and count 0. ``metadata``
    records where the curves came from (model class, adapter, timesteps, number of samples ...).
    ``sensitivity``, if measured (:func:`smoothcache.measure_sensitivity`), is what
    ``schedule(method="sensitivity")`` needs; ``forecast``, the forecast errors calibration
    records by default, what ``schedule(method="forecast")`` needs.
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
        _check_riders(self.mean.shape, sensitivity, forecast)
        self.sensitivity = sensitivity
        #: forecast errors per order, lag and spacing (:mod:`smoothcache.measurements`)
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
        return self.pooled(rows)

    def pooled(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and count ``(lookahead, steps)`` over the selected branches (a mask) and
        every pass; :meth:`curve` selects by kind and block."""
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
        return base.shared_steps(len(self.branches), self.num_steps, target)

    def schedule(
        self,
        alpha: float | None = None,
        *,
        compute_fraction: float | None = None,
        per_block: bool = False,
        method: str | None = None,
    ) -> Schedule:
        """A static schedule from these curves, by the search ``method`` names
        (:data:`smoothcache.searches.METHODS`: what each needs and does).

        Give exactly one of ``alpha`` (the largest error a reuse may cause: the paper's rule
        only) or ``compute_fraction`` (a budget: a share of the model's branch-steps, a per-kind
        row counting once per block of its kind). Without a ``method``, :meth:`best_method`
        chooses: ``"forecast"`` when the curves carry forecast errors (recorded by default),
        else ``"sensitivity"`` when they carry a sensitivity, else ``"paper"``; ``"paper"`` for
        an ``alpha``. (The default used to be ``"paper"`` always: name it to reproduce the
        paper.) ``per_block=True`` gives every block its own row instead of one per kind.

        The schedule's metadata records the method, the achieved compute fraction (and the
        target, for a budget), the search's own settings and the curves' metadata.
        """
        if method is None:
            method = self.best_method(alpha is not None)
        search = METHODS.get(method) if isinstance(method, str) else None
        if search is None:
            raise ScheduleError(
                f"unknown schedule method {method!r}; available methods: {', '.join(METHODS)}"
            )
        return search(self, alpha=alpha, compute_fraction=compute_fraction, per_block=per_block)

    def best_method(self, threshold: bool = False) -> str:
        """The search :meth:`schedule` uses without a ``method``: ``"paper"`` for a
        ``threshold`` (an alpha), else the best these curves carry what it needs for."""
        if threshold:
            return "paper"
        if self.forecast is not None:
            return "forecast"
        return "sensitivity" if self.sensitivity is not None else "paper"

    def forecast_candidates(
        self,
        compute_fraction: float,
        *,
        per_block: bool = False,
        caps: Sequence[int] = CANDIDATE_CAPS,
        priors: Sequence[float] = CANDIDATE_PRIORS,
        fitted: bool = False,
    ) -> list[Schedule]:
        """Forecast schedules within ``compute_fraction`` for :func:`smoothcache.select_schedule`
        to choose from on held-out samples: the one of ``schedule(..., method="forecast")``
        first, then the distinct others of a small family (a cap on the order times a prior
        toward higher orders; :func:`~smoothcache.searches.forecast.forecast_candidates`). When
        these curves carry a sensitivity (:func:`smoothcache.measure_sensitivity`), the family's
        members place their computes by the final output's sensitivity (``weighted`` in their
        metadata): measure it on the whole calibration batch, which must contain the tail.
        ``caps`` and ``priors`` choose the family (:func:`smoothcache.tune` takes a smaller one);
        ``fitted=True`` follows every member with its fitted twin (:mod:`smoothcache.fitting`).
        """
        fraction = base.check_fraction(compute_fraction)
        return forecast_candidates(self, fraction, per_block, caps, priors, fitted)

    # -- model check and files -----------------------------------------------------------------

    def check_model(self, model: Any, adapter: str | Adapter | None = None) -> None:
        """Raise :class:`CalibrationError` unless ``model`` is the kind of model the curves fit.

        Compares the denoiser's class name, the adapter's name and the branch list (paths, kinds
        and blocks of the branches calibration measures: group leaders, the second denoiser's
        too) with those recorded at calibration. ``model`` is a denoiser or a pipeline.
        """
        problems = _model_differences(self, model, adapter)
        if problems:
            raise CalibrationError(
                "these curves were recorded on another model (curves vs this model: "
                f"{'; '.join(problems)}); calibrate this model instead"
            )

    def save(self, path: str | Path) -> None:
        """Write the curves as a safetensors file with the metadata in its header."""
        write_curves(path, self)

    @classmethod
    def load(cls, path: str | Path) -> ErrorCurves:
        """Read a curves file written by :meth:`save`; anything else is a CurvesFileError."""
        return read_curves(path, cls)

    def __repr__(self) -> str:
        return (
            f"ErrorCurves(model={self.metadata.get('model')!r}, "
            f"adapter={self.metadata.get('adapter')!r}, {_describe(self.branches)}, "
            f"passes={self.passes}, lookahead={self.lookahead}, num_steps={self.num_steps}"
            + (f", sensitivity={list(self.sensitivity.groups)}" if self.sensitivity else "")
            + ")"
        )


def _model_differences(curves: ErrorCurves, model: Any, adapter: str | Adapter | None) -> list[str]:
    """What differs between the model ``curves`` were recorded on and ``model``: its class, its
    adapter, the branches calibration measures."""
    root, chosen = resolve(model, adapter)
    branches = [b for b, _ in measured_branches(denoisers(model, root, chosen), chosen)]
    recorded_class = curves.metadata.get("model")
    recorded_adapter = curves.metadata.get("adapter")
    found_class = type(root).__qualname__
    problems = []
    if recorded_class is not None and recorded_class != found_class:
        problems.append(f"model class {recorded_class} vs {found_class}")
    if recorded_adapter is not None and recorded_adapter != chosen.name:
        problems.append(f"adapter {recorded_adapter!r} vs {chosen.name!r}")
    if list(curves.branches) != branches:
        problems.append(f"{_describe(curves.branches)} vs {_describe(branches)}")
    return problems
