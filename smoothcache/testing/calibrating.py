"""Checks of calibration on the adapter's model: recording curves, and the recommended path.

Calibration attaches to the same branches and timestep source as a session, through a
recorder of its own; these checks show that it measures every branch, leaves the model as it
was, and that every schedule search fed by its curves gives a schedule the engine applies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smoothcache.calibration import calibrating
from smoothcache.curves import ErrorCurves
from smoothcache.errors import SmoothCacheError
from smoothcache.testing.harness import Subject, as_failure
from smoothcache.testing.results import ConformanceError
from smoothcache.testing.state import module_state
from smoothcache.tuner import tune
from smoothcache.tuning import measure_sensitivity, select_schedule


def _calibrated(subject: Subject, check: str, runs: int) -> tuple[ErrorCurves, dict[str, Any]]:
    """Curves of ``runs`` calibration runs (lookahead 2), and the model's state before them,
    which calibrating must have left as it was."""
    subject.baseline(check)  # a model may create state lazily on its first call: not ours
    before = module_state(subject.root)
    with as_failure(check):
        with calibrating(subject.obj, lookahead=2, adapter=subject.adapter) as recorder:
            for _ in range(runs):
                subject.run(check)
        curves = recorder.curves()
    subject.assert_restored(check, before, "after calibrating")
    return curves, before


def calibration(subject: Subject) -> None:
    """The ``calibration`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "calibration"
    pairs = [
        (b, m) for b, m in subject.branches(check) if b.leader is None
    ]  # members: not measured
    curves, _ = _calibrated(subject, check, runs=2)
    if curves.num_steps != subject.num_steps or curves.metadata.get("runs") != 2:
        raise ConformanceError(
            check,
            f"calibration saw {curves.metadata.get('runs')} runs of {curves.num_steps} steps; "
            f"expected 2 runs of num_steps={subject.num_steps}",
        )
    for index, (branch, _) in enumerate(pairs):
        lag1 = curves.count[index, :, 0, :]
        if not lag1.any():
            raise ConformanceError(check, f"branch {branch.path!r} has no calibration errors")
    errors = curves.mean[:, :, 0, :][curves.count[:, :, 0, :] > 0]
    if not np.isfinite(errors).all():
        raise ConformanceError(check, "the calibration errors are not finite")
    schedule = curves.schedule(float(np.median(errors)))
    with as_failure(check), subject.enabled(schedule):
        subject.run(check)


#: The budget of the schedules :func:`calibration_path` makes: a skipped step at 3 or 4 steps.
_PATH_FRACTION = 0.75


def calibration_path(subject: Subject) -> None:
    """The whole path from calibration to a cached run, as the README recommends it."""
    check = "calibration_path"
    curves, before = _calibrated(subject, check, runs=1)
    try:
        curves.check_model(subject.obj, subject.adapter)
    except SmoothCacheError as exc:
        raise ConformanceError(
            check, f"curves recorded on this model are refused by check_model: {exc}"
        ) from None
    with as_failure(check):
        curves = measure_sensitivity(
            subject.obj, lambda: subject.run(check), curves, adapter=subject.adapter
        )
        alpha = float(np.nanmedian(curves.mean[:, :, 0, :][curves.count[:, :, 0, :] > 0]))
        schedules = {
            "paper, alpha": curves.schedule(alpha),
            "paper, alpha, per block": curves.schedule(alpha, per_block=True),
            "paper, budget": curves.schedule(compute_fraction=_PATH_FRACTION, method="paper"),
            "sensitivity": curves.schedule(compute_fraction=_PATH_FRACTION, method="sensitivity"),
            "forecast": curves.schedule(compute_fraction=_PATH_FRACTION, method="forecast"),
        }
        candidates = curves.forecast_candidates(compute_fraction=_PATH_FRACTION)
        schedules["selected"] = select_schedule(
            subject.obj, lambda: subject.run(check), candidates, adapter=subject.adapter
        )
    for name, schedule in schedules.items():
        with as_failure(check), subject.enabled(schedule) as session:
            subject.run(check)
        skips = any(0 in row for row in schedule.rows.values())
        if not name.startswith("paper, alpha") and not skips:  # a budget below 1 must skip
            raise ConformanceError(check, f"the {name} schedule skips nothing at a 0.75 budget")
        if skips and session.stats.total_reused == 0:
            raise ConformanceError(
                check, f"the {name} schedule skips steps but the run reused nothing"
            )
    subject.assert_restored(check, before, "after the schedules ran")


def tune_path(subject: Subject) -> None:
    """``smoothcache.tune`` end to end: it restores the model and its schedule skips and reuses.

    The kit's runner is deterministic and takes no seed, so the calibration and held-out
    batches are the same samples here: this checks that tune runs on the model (its sensitivity
    estimate included, when the runner keeps gradients), not how well it chooses.
    """
    check = "tune"
    subject.baseline(check)
    before = module_state(subject.root)
    with as_failure(check):
        tuned = tune(
            subject.obj, subject.sample, compute_fraction=_PATH_FRACTION, adapter=subject.adapter
        )
    subject.assert_restored(check, before, "after tune")
    schedule = tuned.schedule
    if not any(0 in row for row in schedule.rows.values()):
        raise ConformanceError(check, "tune's schedule skips nothing at a 0.75 budget")
    with as_failure(check), subject.enabled(schedule) as session:
        subject.run(check)
    if session.stats.total_reused == 0:
        raise ConformanceError(check, "tune's schedule skips steps but the run reused nothing")
    subject.assert_restored(check, before, "after tune's schedule ran")
