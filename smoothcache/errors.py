"""Exceptions raised by smoothcache.

Every error says what was expected, what was found and what to do about it. They all derive
from :class:`SmoothCacheError` so callers can catch the library's errors in one place.
"""

from __future__ import annotations


class SmoothCacheError(Exception):
    """Base class of every error smoothcache raises on purpose."""


class ArgumentError(SmoothCacheError, ValueError):
    """An argument of a smoothcache function has the wrong type or an impossible value."""


class ScheduleError(SmoothCacheError, ValueError):
    """A schedule is malformed, or does not fit the model it is applied to."""


class ScheduleFileError(ScheduleError):
    """A schedule file is missing, unreadable, corrupt or truncated."""


class AdapterError(SmoothCacheError):
    """No adapter, an ambiguous choice of adapters, or an adapter that broke its contract."""


class AlreadyEnabledError(SmoothCacheError, RuntimeError):
    """smoothcache is already active on this model (caching or calibrating)."""


class StepCountError(SmoothCacheError, RuntimeError):
    """The sampler ran more or fewer denoising steps than the schedule describes."""


class CalibrationError(SmoothCacheError, RuntimeError):
    """Calibration recorded nothing usable, saw NaN/inf outputs, or curves do not fit a model."""


class CurvesFileError(SmoothCacheError, ValueError):
    """A curves file is missing, unreadable, or not a smoothcache curves file."""


class PluginWarning(UserWarning):
    """A third-party plugin failed to load and was skipped (filter it by this class).

    Loading adapters never raises because of someone else's plugin: when warnings are turned
    into errors, the failure is logged instead (and kept in ``REGISTRY.failures``).
    """
