"""Forecast: a skipped step answers with a polynomial extrapolation of the last outputs.

Order ``k`` reads the ``k + 1`` latest computed outputs and combines them with the Lagrange
weights of their step indices (:mod:`smoothcache.forecast` holds the math and why positions are
step indices). The weights are constants of the schedule, kept as 0-dim tensors on the outputs'
device: under ``torch.compile`` they are graph inputs, so a new weight never recompiles.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothcache.engine.technique import Answer, Technique, register_technique
from smoothcache.forecast import combine, first_tensor, lagrange_weights


class Forecast(Technique):
    """Lagrange extrapolation through the latest computed outputs (order 0 is reuse)."""

    name = "forecast"
    forecast = True
    device_bound = True
    takes_weights = True

    def constants(self, positions: tuple[int, ...], at: int) -> tuple[float, ...]:
        return lagrange_weights(positions, at)

    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        """:func:`~smoothcache.forecast.combine` with the weights as tensors of float32
        (float64 for float64 outputs): a 0-dim tensor does not change the dtype of the output
        it scales, and bfloat16 would round weights such as 1/3."""
        tensor = first_tensor(newest)
        device = None if tensor is None else tensor.device
        wide = tensor is not None and tensor.dtype == torch.float64
        dtype = torch.float64 if wide else torch.float32
        weights = tuple(torch.full((), w, dtype=dtype, device=device) for w in constants)

        def forecast(read: list[Any]) -> Any:
            return combine(read, weights)

        return forecast


FORECAST = register_technique(Forecast())
