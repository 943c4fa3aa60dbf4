"""Conformance kit: checks that an adapter keeps the contract smoothcache relies on.

An adapter author runs the kit with a *model factory* and a *run* function::

    from smoothcache.testing import check_adapter

    report = check_adapter(make_model, sample, adapter="my-dit", num_steps=4)
    report.raise_for_failures()

``make_model()`` returns a fresh model (or a pipeline holding one) with random weights, its
zero-initialised gates and output layers re-randomised (otherwise reusing a branch changes
nothing and every check that caching *changes* the output fails). ``sample(model)`` runs a short
sampling loop of exactly ``num_steps`` denoising steps (at least 3) on it, deterministically
(seeded noise), and returns a tensor: the final latents, say. The kit calls it about a dozen
times, so keep the model tiny and the loop short.

Each check is also a plain function (:data:`CHECKS`), usable from any test runner, that raises
:class:`ConformanceError` (an ``AssertionError``) naming the check and the branch at fault. For
pytest, subclass :class:`AdapterConformance`. Importing the kit does not import pytest.

The kit's modules: ``results`` (the error and the report), ``state`` (snapshots of a model),
``harness`` (the model under test and the counters), the checks grouped by what they exercise
(``structure``, ``reuse``, ``forecasting``, ``calibrating``), ``table`` (the one table of
checks, from which the ``check_*`` functions, the ``runner`` and the ``pytest_class`` are
made). What the checks hold an adapter to, in the order :func:`check_adapter` runs them:

"""

from __future__ import annotations

from smoothcache.testing.harness import Factory, Runner, alternating_row, forecast_row
from smoothcache.testing.pytest_class import AdapterConformance
from smoothcache.testing.results import CheckResult, ConformanceError, Report
from smoothcache.testing.runner import check_adapter
from smoothcache.testing.state import module_state, state_differences
from smoothcache.testing.table import (
    CHECKS,
    TABLE,
    Check,
    check_branches_exist,
    check_branches_residual,
    check_calibration,
    check_calibration_path,
    check_detection,
    check_exact,
    check_fast_path,
    check_forecast,
    check_restore,
    check_timestep_source_once,
    check_tune,
)

if __doc__ is not None:  # None under python -OO
    __doc__ += "\n".join(f"* ``{spec.name}`` — {spec.summary}" for spec in TABLE)

__all__ = [
    "CHECKS",
    "AdapterConformance",
    "Check",
    "CheckResult",
    "ConformanceError",
    "Factory",
    "Report",
    "Runner",
    "alternating_row",
    "check_adapter",
    "check_branches_exist",
    "check_branches_residual",
    "check_calibration",
    "check_calibration_path",
    "check_detection",
    "check_exact",
    "check_fast_path",
    "check_forecast",
    "check_restore",
    "check_timestep_source_once",
    "check_tune",
    "forecast_row",
    "module_state",
    "state_differences",
]
