"""smoothcache: training-free caching for Diffusion Transformers (SmoothCache, arXiv 2411.10510).

Apply a static schedule that says, for every residual branch and denoising step, whether to
compute the branch, reuse its last output, or forecast it from its last computed outputs
(``curves.schedule(compute_fraction=f, method="forecast")`` chooses, from a calibration)::

    import smoothcache

    with smoothcache.enabled(pipe, "dit-xl-2-256/ddim-50/alpha-0.18") as session:
        images = pipe(class_labels=[207], num_inference_steps=50).images
    print(session.stats.reuse_fraction)
"""

from __future__ import annotations

from typing import Any

from smoothcache import adapters
from smoothcache.adapter import Adapter, Branch, TimestepSource, argument
from smoothcache.calibration import Recorder, calibrating
from smoothcache.closedloop import fit_closed_loop
from smoothcache.curves import ErrorCurves
from smoothcache.engine import CacheStats, Session, enable, enabled
from smoothcache.errors import (
    AdapterError,
    AlreadyEnabledError,
    ArgumentError,
    CalibrationError,
    CurvesFileError,
    PluginWarning,
    ScheduleError,
    ScheduleFileError,
    SmoothCacheError,
    StepCountError,
)
from smoothcache.fitting import fit_forecasts
from smoothcache.hookspecs import hookimpl
from smoothcache.measurements import Sensitivity
from smoothcache.registry import REGISTRY
from smoothcache.response import estimate_sensitivity
from smoothcache.schedule import Schedule, shipped_schedules
from smoothcache.tuner import Tuned, tune
from smoothcache.tuning import measure_sensitivity, select_schedule

__version__ = "0.1.0"


def detect(model: Any) -> Adapter:
    """The adapter that matches ``model`` (a denoiser module, or a pipeline holding one)."""
    return REGISTRY.detect(model)


def register(adapter: Adapter) -> None:
    """Add an adapter at run time; plugins are the way to ship one (see docs/adapters.md)."""
    REGISTRY.register(adapter)


__all__ = [
    "Adapter",
    "AdapterError",
    "AlreadyEnabledError",
    "ArgumentError",
    "Branch",
    "CacheStats",
    "CalibrationError",
    "CurvesFileError",
    "ErrorCurves",
    "PluginWarning",
    "Recorder",
    "Schedule",
    "ScheduleError",
    "ScheduleFileError",
    "Sensitivity",
    "Session",
    "SmoothCacheError",
    "StepCountError",
    "TimestepSource",
    "Tuned",
    "adapters",
    "argument",
    "calibrating",
    "detect",
    "enable",
    "enabled",
    "estimate_sensitivity",
    "fit_closed_loop",
    "fit_forecasts",
    "hookimpl",
    "measure_sensitivity",
    "register",
    "select_schedule",
    "shipped_schedules",
    "tune",
]
