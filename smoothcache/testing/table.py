"""The table of conformance checks, and the public ``check_*`` functions made from it.

Each row names a check, says in one summary what it holds an adapter to, points at the function
that checks it and says what the check needs of the adapter to have anything to check. The
runner (:func:`~smoothcache.testing.check_adapter`), the public functions below and the pytest
base class (:class:`~smoothcache.testing.AdapterConformance`) are all made from this table, so a
new check is one function and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from smoothcache.adapter import Adapter
from smoothcache.testing.calibrating import calibration, calibration_path, tune_path
from smoothcache.testing.forecasting import forecast
from smoothcache.testing.harness import Factory, Runner, Subject
from smoothcache.testing.reuse import branches_residual, exact, fast_path, restore
from smoothcache.testing.structure import branches_exist, detection, timestep_source_once


@dataclass(frozen=True)
class Need:
    """What a check needs of the adapter: without it the check has nothing to check."""

    #: how an adapter lacks it, after "the adapter": the reason the check is skipped
    lacking: str
    #: whether the adapter has it on the model's root: ``met(root, adapter)``
    met: Callable[[nn.Module, Adapter], bool]


#: Block fast paths (:meth:`Adapter.fast_forwards`), which most adapters do not declare.
FAST_PATH = Need("declares no fast path", lambda root, adapter: bool(adapter.fast_forwards(root)))


@dataclass(frozen=True)
class CheckSpec:
    """One row of :data:`TABLE`: a check's name, summary, function and need."""

    name: str
    #: what the check holds an adapter to; the docstring of ``check_<name>`` and its test
    summary: str
    #: checks one :class:`~smoothcache.testing.harness.Subject`, raising ``ConformanceError``
    body: Callable[[Subject], None]
    needs: Need | None = None

    def unmet(self, root: nn.Module, adapter: Adapter) -> str | None:
        """Why the check is skipped for ``adapter`` on ``root``, or None when it runs."""
        if self.needs is None or self.needs.met(root, adapter):
            return None
        return self.needs.lacking


#: Every check, in the order :func:`~smoothcache.testing.check_adapter` runs them.
TABLE: tuple[CheckSpec, ...] = (
    CheckSpec(
        "detection",
        "The adapter matches the model, rejects an unrelated ``nn.Sequential``, and "
        ":func:`smoothcache.detect` would pick it over every other known adapter (an adapter "
        "instance that is not registered is ranked as if it were).",
        detection,
    ),
    CheckSpec(
        "branches_exist",
        "The declared branches are distinct, non-nested submodules with valid schedule kinds "
        "(among the adapter's ``kinds``) and distinct keys; the timestep source exists.",
        branches_exist,
    ),
    CheckSpec(
        "timestep_source_once",
        "Under a compute-everything schedule, the timestep source fires exactly once per model "
        "evaluation, every branch runs once per evaluation, and the run has ``num_steps`` "
        "steps in one generation.",
        timestep_source_once,
    ),
    CheckSpec(
        "exact",
        "A schedule that computes everything gives a bit-identical output (``torch.equal``), "
        "reuses nothing and raises no smoothcache warning; the model is unchanged afterwards.",
        exact,
    ),
    CheckSpec(
        "branches_residual",
        "For each branch kind, reusing it at every other step (``[1, 0, 1, ..., 1]``) skips the "
        "branch's original forward on the reuse steps and changes the output by more than "
        "``min_change`` (relative).",
        branches_residual,
    ),
    CheckSpec(
        "fast_path",
        "The adapter's block fast paths (:meth:`Adapter.fast_forwards`) give bit-identical "
        "outputs to the plain wrappers under a reuse schedule, and none falls back.",
        fast_path,
        FAST_PATH,
    ),
    CheckSpec(
        "forecast",
        "For each branch kind, a forecast of order 1 (``[1, 1, 0, 1, ..., 1]``, skipped steps "
        "extrapolated from the last two computed outputs) skips the branch's original forward, "
        "answers every skipped step and pass with exactly the extrapolation of the outputs the "
        "same run computed (checked by hand from outputs recorded with forward hooks), differs "
        "from plain reuse, and matches the fast path, if any; needs ``num_steps >= 4``.",
        forecast,
    ),
    CheckSpec(
        "restore",
        "Leaving a session, normally or through an exception raised in the middle of a model "
        "evaluation, leaves every module, hook, attribute and tensor as it was.",
        restore,
    ),
    CheckSpec(
        "calibration",
        "Calibrating over two runs gives error curves for every branch with ``num_steps`` "
        "steps, restores the model, and a schedule made from the curves applies.",
        calibration,
    ),
    CheckSpec(
        "calibration_path",
        "The path from calibration to a cached run: curves recorded on the model pass "
        ":meth:`~smoothcache.ErrorCurves.check_model` on it, "
        ":func:`smoothcache.measure_sensitivity` runs, every schedule method (the paper's rule "
        "by alpha, per block and by budget, the sensitivity search, the forecast search) and "
        ":func:`smoothcache.select_schedule` among the forecast candidates give schedules that "
        "apply and skip what they say.",
        calibration_path,
    ),
    CheckSpec(
        "tune",
        ":func:`smoothcache.tune` runs end to end on the model (its sensitivity estimate "
        "included when ``run`` keeps gradients), leaves it as it was, and its schedule applies, "
        "skips and reuses.",
        tune_path,
    ),
)


class Check(Protocol):
    """The signature of every ``check_*`` function."""

    def __call__(
        self,
        factory: Factory,
        run: Runner,
        *,
        adapter: str | Adapter | None = None,
        num_steps: int,
        min_change: float = 1e-5,
    ) -> None: ...


def _public_check(spec: CheckSpec) -> Check:
    """The public ``check_<name>`` function: runs one check on one model from ``factory``."""

    def check(
        factory: Factory,
        run: Runner,
        *,
        adapter: str | Adapter | None = None,
        num_steps: int,
        min_change: float = 1e-5,
    ) -> None:
        subject = Subject(factory, run, adapter, num_steps, min_change)
        if spec.unmet(subject.root, subject.adapter) is None:
            spec.body(subject)

    check.__name__ = check.__qualname__ = f"check_{spec.name}"
    skipped = f" Does nothing when the adapter {spec.needs.lacking}." if spec.needs else ""
    check.__doc__ = (
        f"{spec.summary}\n\nRaises :class:`ConformanceError` on failure; arguments as for "
        f":func:`check_adapter`.{skipped}"
    )
    return check


#: The checks by name, each ``check(factory, run, *, adapter=None, num_steps, min_change=1e-5)``.
CHECKS: dict[str, Check] = {spec.name: _public_check(spec) for spec in TABLE}

check_detection = CHECKS["detection"]
check_branches_exist = CHECKS["branches_exist"]
check_timestep_source_once = CHECKS["timestep_source_once"]
check_exact = CHECKS["exact"]
check_branches_residual = CHECKS["branches_residual"]
check_fast_path = CHECKS["fast_path"]
check_forecast = CHECKS["forecast"]
check_restore = CHECKS["restore"]
check_calibration = CHECKS["calibration"]
check_calibration_path = CHECKS["calibration_path"]
check_tune = CHECKS["tune"]
