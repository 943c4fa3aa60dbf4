"""The curves file: :class:`~smoothcache.ErrorCurves` as safetensors (never pickle).

Three tensors ``mean``, ``std`` and ``count`` shaped ``(branches, passes, lookahead, steps)``
and a header with the format name, version, the branch list and the metadata as JSON strings.
A measured :class:`~smoothcache.Sensitivity` adds the tensors ``sensitivity_gram`` and
``sensitivity_cross`` and a ``sensitivity`` header entry; forecast errors add
``forecast_mean``, ``forecast_square``, ``forecast_worst``, ``forecast_count`` and a
``forecast`` header entry, and their inner products ``forecast_gram`` and
``forecast_gram_count`` (recorded since fitted forecasts came). Files without them load as
before.

Reading checks the format, version, dtypes and header, and hands the parts to a constructor
(``build``, the curves class) whose own checks a corrupt file fails: every failure is a
:class:`~smoothcache.CurvesFileError` that names the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from smoothcache.adapter import Branch
from smoothcache.errors import CalibrationError, CurvesFileError
from smoothcache.jsonfile import parse_json
from smoothcache.measurements import ForecastErrors, Measured, Sensitivity

FORMAT_NAME = "smoothcache.curves"
FORMAT_VERSION = 1

_FORECAST_TENSORS = ("mean", "square", "worst", "count")
_GRAM_TENSORS = ("gram", "gram_count")

Curves = TypeVar("Curves")


class CurvesContent(Measured, Protocol):
    """What a curves file holds; :class:`~smoothcache.ErrorCurves` is one."""

    @property
    def mean(self) -> np.ndarray:
        """Mean reuse errors, float64."""

    @property
    def std(self) -> np.ndarray:
        """Their standard deviations, float64."""

    @property
    def count(self) -> np.ndarray:
        """Samples behind each entry, int64."""


def write_curves(path: str | Path, curves: CurvesContent) -> None:
    """Write ``curves`` as a safetensors file with the metadata in its header."""
    header = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "branches": json.dumps([[b.path, b.kind, b.block] for b in curves.branches]),
        "metadata": json.dumps(curves.metadata),
    }
    tensors = {
        "mean": torch.from_numpy(curves.mean),
        "std": torch.from_numpy(curves.std),
        "count": torch.from_numpy(curves.count),
    }
    if curves.sensitivity is not None:
        header["sensitivity"] = json.dumps(
            {"groups": list(curves.sensitivity.groups), "metadata": curves.sensitivity.metadata}
        )
        tensors["sensitivity_gram"] = torch.from_numpy(curves.sensitivity.gram)
        tensors["sensitivity_cross"] = torch.from_numpy(curves.sensitivity.cross)
    if curves.forecast is not None:
        header["forecast"] = json.dumps(
            {"combos": [list(c) for c in curves.forecast.combos], **curves.forecast.metadata}
        )
        for name in _FORECAST_TENSORS + _GRAM_TENSORS:
            value = getattr(curves.forecast, name)
            if value is not None:
                tensors[f"forecast_{name}"] = torch.from_numpy(value)
    save_file(tensors, str(path), metadata=header)


def read_curves(path: str | Path, build: Callable[..., Curves]) -> Curves:
    """Read a file written by :func:`write_curves`; anything else is a CurvesFileError.

    ``build(branches, mean, std, count, metadata, sensitivity, forecast)`` makes the result.
    """
    name = str(path)
    header, tensors = _read(name)
    missing = [k for k in ("mean", "std", "count") if k not in tensors]
    try:
        if missing:
            raise CalibrationError(f"tensors {missing} are missing")
        _check_dtypes(tensors)
        branches = [
            Branch(path=str(p), kind=str(k), block=int(b))
            for p, k, b in _header(header, "branches", list)
        ]
        metadata = _header(header, "metadata", dict)
        sensitivity = None
        if "sensitivity_gram" in tensors:
            described = _header(header, "sensitivity", dict)
            sensitivity = Sensitivity(
                tuple(str(g) for g in described["groups"]),
                tensors["sensitivity_gram"].numpy(),
                tensors["sensitivity_cross"].numpy(),
                described["metadata"],
            )
        forecast = None
        if "forecast" in header:
            described = _header(header, "forecast", dict)
            arrays = {name: tensors[f"forecast_{name}"] for name in _FORECAST_TENSORS}
            grams = {
                name: tensors[f"forecast_{name}"].numpy()
                for name in _GRAM_TENSORS
                if f"forecast_{name}" in tensors
            }
            forecast = ForecastErrors(
                tuple(tuple(c) for c in described.pop("combos")),
                *(arrays[name].numpy() for name in _FORECAST_TENSORS),
                metadata=described,
                **grams,
            )
        return build(
            branches,
            tensors["mean"].numpy(),
            tensors["std"].numpy(),
            tensors["count"].numpy(),
            metadata,
            sensitivity,
            forecast,
        )
    except (CalibrationError, LookupError, TypeError, ValueError) as exc:
        raise CurvesFileError(f"curves file {name!r} is corrupt: {exc}") from None


def _read(name: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header and tensors of a safetensors file of this format and version."""
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
            return header, {key: handle.get_tensor(key) for key in handle.keys()}
    except FileNotFoundError:
        raise CurvesFileError(f"curves file {name!r} does not exist; check the path") from None
    except (SafetensorError, OSError) as exc:
        raise CurvesFileError(
            f"{name!r} is not a smoothcache curves file (not readable as safetensors: {exc}); "
            "curves files are written by `smoothcache calibrate` or ErrorCurves.save"
        ) from None


def _check_dtypes(tensors: Mapping[str, torch.Tensor]) -> None:
    """Tensors read from a curves file: float64 statistics and int64 counts, nothing else."""
    for name, tensor in tensors.items():
        expected = torch.int64 if name.endswith("count") else torch.float64
        if tensor.dtype != expected:
            raise CalibrationError(f"tensor {name!r} has dtype {tensor.dtype}, expected {expected}")


def _header(header: Mapping[str, str], key: str, kind: type) -> Any:
    """A JSON entry of a curves file's header, checked to be a ``kind`` (list or dict)."""
    value = parse_json(header[key])
    if not isinstance(value, kind):
        raise CalibrationError(
            f"header entry {key!r} must be a JSON {'array' if kind is list else 'object'}, "
            f"found {type(value).__name__}"
        )
    return value
