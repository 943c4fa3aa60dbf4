"""Calibration error curves, their file format, and the rule that turns them into a schedule.

:class:`ErrorCurves` holds, for every residual branch of a model, every pass of a step (guidance
run as separate calls gives two), every lag ``j = 1..lookahead`` and every denoising step ``t``,
the mean over samples and runs of the relative L1 error ``||O_t - O_{t-j}||_1 / ||O_t||_1`` of
the branch's output, its standard deviation and the number of samples behind it. They are what
:func:`smoothcache.calibrating` records and what :meth:`ErrorCurves.schedule` turns into a static
:class:`~smoothcache.Schedule` with the SmoothCache paper's greedy rule (:func:`paper_rule`).

Curves are saved with safetensors (never pickle): three tensors ``mean``, ``std`` and ``count``
shaped ``(branches, passes, lookahead, steps)`` and a header with the format name, version, the
branch list and the metadata as JSON strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from smoothcache.adapter import Adapter, Branch
from smoothcache.engine import model_branches, resolve
from smoothcache.errors import CalibrationError, CurvesFileError, ScheduleError
from smoothcache.schedule import Schedule

FORMAT_NAME = "smoothcache.curves"
FORMAT_VERSION = 1
METHODS = ("paper",)

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
    """

    def __init__(
        self,
        branches: Sequence[Branch],
        mean: np.ndarray,
        std: np.ndarray,
        count: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.branches = tuple(branches)
        self.mean = np.ascontiguousarray(mean, dtype=np.float64)
        self.std = np.ascontiguousarray(std, dtype=np.float64)
        self.count = np.ascontiguousarray(count, dtype=np.int64)
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
        if (self.count < 0).any():
            raise CalibrationError("curves have a negative sample count; the data is corrupt")
        meta = dict(metadata or {})
        for key, value in (("num_steps", num_steps), ("lookahead", lookahead)):
            if meta.setdefault(key, value) != value:
                raise CalibrationError(
                    f"curves metadata says {key}={meta[key]!r} but the arrays have {value}"
                )
        self.metadata = meta

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

    def _rule_rows(self, per_block: bool) -> list[tuple[str, np.ndarray, int]]:
        """``(schedule key, errors (lookahead, steps), branch-steps weight)`` per schedule row."""
        if per_block:
            return [
                (b.key, self._pool(np.arange(len(self.branches)) == i)[0], 1)
                for i, b in enumerate(self.branches)
            ]
        rows = []
        for kind in self.kinds:
            members = np.array([b.kind == kind for b in self.branches])
            rows.append((kind, self._pool(members)[0], int(members.sum())))
        return rows

    def schedule(
        self,
        alpha: float | None = None,
        *,
        compute_fraction: float | None = None,
        per_block: bool = False,
        method: str = "paper",
    ) -> Schedule:
        """A static schedule from these curves by the paper's rule (:func:`paper_rule`).

        Give exactly one of ``alpha`` (the largest error a reuse may cause) or
        ``compute_fraction`` (a budget: the alpha whose schedule computes the largest share of the
        model's branch-steps not above it is searched among the curves' error values; a per-kind
        row counts once per block of its kind). ``per_block=False`` pools blocks of one kind into
        one row, as the paper does; ``per_block=True`` gives every block its own row. The
        schedule's metadata records the method, alpha, lookahead, the achieved compute fraction
        (and the target, for a budget) and the curves' metadata.
        """
        if method not in METHODS:
            raise ScheduleError(
                f"unknown schedule method {method!r}; available methods: {', '.join(METHODS)}"
            )
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
        and blocks) with those recorded at calibration. ``model`` is a denoiser or a pipeline.
        """
        root, chosen = resolve(model, adapter)
        branches = [b for b, _ in model_branches(root, chosen)]
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
            branches = [
                Branch(path=str(p), kind=str(k), block=int(b))
                for p, k, b in json.loads(header["branches"])
            ]
            metadata = json.loads(header["metadata"])
            return cls(
                branches,
                tensors["mean"].numpy(),
                tensors["std"].numpy(),
                tensors["count"].numpy(),
                metadata,
            )
        except (CalibrationError, KeyError, TypeError, ValueError) as exc:
            raise CurvesFileError(f"curves file {name!r} is corrupt: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"ErrorCurves(model={self.metadata.get('model')!r}, "
            f"adapter={self.metadata.get('adapter')!r}, {_describe(self.branches)}, "
            f"passes={self.passes}, lookahead={self.lookahead}, num_steps={self.num_steps})"
        )
