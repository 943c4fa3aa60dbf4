"""What every schedule search shares: the interface, the measurements it reads, the budget.

A search is a function ``search(curves, *, alpha, compute_fraction, per_block) -> Schedule``
(:class:`Search`): it reads a calibration's measurements (:class:`Measurements`, which
:class:`~smoothcache.ErrorCurves` provides), checks that it was given the arguments it takes,
and returns a static :class:`~smoothcache.Schedule` whose metadata names the method. The table
:data:`smoothcache.searches.METHODS` maps method names to searches; a new search is one file in
this package and one entry there (docs/design.md).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from smoothcache.errors import ScheduleError
from smoothcache.measurements import Measured
from smoothcache.schedule import Schedule

# Tolerance, in branch-steps, when comparing a schedule's compute count with a budget.
BUDGET_SLACK = 1e-9


class Measurements(Measured, Protocol):
    """What a search reads from a calibration; :class:`~smoothcache.ErrorCurves` is one."""

    @property
    def num_steps(self) -> int:
        """Denoising steps of each calibration run."""

    @property
    def lookahead(self) -> int:
        """The largest reuse lag measured."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """Branch kinds in order of first appearance."""

    def row_members(self, per_block: bool) -> list[tuple[str, np.ndarray]]:
        """``(schedule key, mask of its branches)`` per schedule row."""

    def pooled(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reuse errors' mean, std and count ``(lookahead, steps)`` over the selected branches."""


class Search(Protocol):
    """A schedule search: measurements and the caller's arguments in, a schedule out."""

    def __call__(
        self,
        curves: Measurements,
        *,
        alpha: float | None,
        compute_fraction: float | None,
        per_block: bool,
    ) -> Schedule:
        """The schedule this search chooses; a ScheduleError names what is missing or wrong."""


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float, if it is a finite number >= 0; a ScheduleError if not."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise ScheduleError(f"alpha must be a number, found {type(alpha).__name__} {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value) or value < 0:
        raise ScheduleError(
            f"alpha must be a finite number >= 0 (the largest relative L1 error a reuse may "
            f"cause, e.g. 0.1), found {value!r}"
        )
    return value


def check_fraction(fraction: Any) -> float:
    """``fraction`` as a float, if it is a number in (0, 1]; a ScheduleError if not."""
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


def budget_only(method: str, alpha: float | None, compute_fraction: float | None) -> float:
    """The checked budget of a search that takes ``compute_fraction`` and no ``alpha``."""
    if alpha is not None or compute_fraction is None:
        raise ScheduleError(
            f"method {method!r} chooses the best schedule for a budget: give "
            "compute_fraction (e.g. 0.35), not alpha"
        )
    return check_fraction(compute_fraction)


def shared_steps(branches: int, num_steps: int, target: float) -> int:
    """Steps every branch can compute within ``target`` when all share one row (at least 2).

    The budget is ``target`` of the model's branch-steps; what is left below one more step
    of every branch is the remainder a search may spend elsewhere.
    """
    shared = math.floor(target * branches * num_steps + BUDGET_SLACK) // branches
    if shared < 2:
        raise ScheduleError(
            f"no schedule computes at most {target:g} of the branch-steps: every branch "
            f"computes at its first and last step, {2 / num_steps:.4f} of them; raise "
            "compute_fraction"
        )
    return shared
