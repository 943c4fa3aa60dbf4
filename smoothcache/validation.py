"""Checks of calibration arrays, shared by the reuse curves and the forecast errors.

Arrays come from calibration or from files a user hands over; corrupt data must be refused
with the library's error, never rounded or passed on to a search that then picks a wrong
schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smoothcache.errors import CalibrationError


def check_counts(count: Any, what: str) -> np.ndarray:
    """``count`` as int64 if it holds only non-negative whole numbers; a CalibrationError if not
    (a fractional, negative, boolean or complex count is corrupt data, not something to round)."""
    array = np.asarray(count)
    if array.dtype.kind not in "iuf" or (
        array.dtype.kind == "f"
        and not (np.isfinite(array).all() and (array == np.round(array)).all())
    ):
        raise CalibrationError(f"{what} must be whole numbers, found dtype {array.dtype}")
    if (array < 0).any():
        raise CalibrationError(f"{what} hold a negative count; the data is corrupt")
    return np.ascontiguousarray(array, dtype=np.int64)


def check_errors(counted: np.ndarray, *arrays: np.ndarray, what: str) -> None:
    """Errors where samples were counted must be finite and non-negative."""
    values = np.concatenate([a[counted] for a in arrays])
    if not np.isfinite(values).all() or (values < 0).any():
        raise CalibrationError(
            f"{what} hold negative, NaN or inf values where samples were counted"
        )
