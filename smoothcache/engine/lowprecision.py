"""Stored outputs in half the bytes: reuse and forecasts from anchors kept in 16 bits.

A forecast of order ``k`` keeps ``k + 1`` outputs of every branch it answers (on FLUX.1-dev at
1024 x 1024 in bfloat16, about 2 GiB per kept output of every branch). When the model runs in
float32, keeping them in bfloat16 or float16 halves that. The answer combines the kept values
with the same weights as :mod:`smoothcache.engine.forecast` (Lagrange's, or the schedule's
fitted ones) and casts the result back to the output's own dtype: one more elementwise kernel
per answer, and the rounding of the kept values (2^-8 relative for bfloat16, 2^-11 for float16,
which overflows above 65504) in every answer, reuse included. Whether that costs quality is the
model's to say (docs/forecast.md measures it); :func:`low_precision` applies it to a schedule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from smoothcache.engine.technique import Answer, Technique, register_technique
from smoothcache.errors import ArgumentError
from smoothcache.forecast import combine, first_tensor, lagrange_weights
from smoothcache.schedule import Schedule


class _Kept(NamedTuple):
    """A branch output's tensors in the storage dtype, and how to give the output back (a
    tuple, so the engine counts its bytes and finds its device as for any output)."""

    values: Any
    dtypes: Any


def _cast(value: Any, dtype: torch.dtype) -> tuple[Any, Any]:
    """``value`` with its floating tensors in ``dtype``, and their original dtypes alike."""
    if isinstance(value, torch.Tensor):
        return (value.to(dtype) if value.is_floating_point() else value), value.dtype
    if isinstance(value, (tuple, list)):
        pairs = [_cast(v, dtype) for v in value]
        return type(value)(p[0] for p in pairs), [p[1] for p in pairs]
    if isinstance(value, dict):
        pairs_by_key = {k: _cast(v, dtype) for k, v in value.items()}
        return {k: p[0] for k, p in pairs_by_key.items()}, {
            k: p[1] for k, p in pairs_by_key.items()
        }
    return value, None


def _restore(value: Any, dtypes: Any) -> Any:
    """``value`` with every tensor back in the dtype ``dtypes`` records for it."""
    if isinstance(value, torch.Tensor):
        return value.to(dtypes)
    if isinstance(value, (tuple, list)):
        return type(value)(_restore(v, d) for v, d in zip(value, dtypes))
    if isinstance(value, dict):
        return {k: _restore(v, dtypes[k]) for k, v in value.items()}
    return value


class LowPrecision(Technique):
    """Reuse and forecasts (Lagrange or fitted weights) from outputs kept in ``dtype``."""

    forecast = True  # every answer is computed (cast back), not a stored output as it is
    device_bound = True
    takes_weights = True

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def keep(self, output: Any) -> _Kept:
        """The output's floating tensors in the storage dtype."""
        return _Kept(*_cast(output, self.dtype))

    def constants(self, positions: tuple[int, ...], at: int) -> tuple[float, ...]:
        return lagrange_weights(positions, at)

    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        """Combine the kept values in float32 weights, then cast to the output's dtypes (read
        from the outputs at each call: one answer serves every branch of a device)."""
        tensor = first_tensor(newest.values)
        device = None if tensor is None else tensor.device
        weights = tuple(torch.full((), w, dtype=torch.float32, device=device) for w in constants)

        def forecast(read: list[_Kept]) -> Any:
            return _restore(combine([r.values for r in read], weights), read[-1].dtypes)

        return forecast


BFLOAT16 = register_technique(LowPrecision("forecast-bf16", torch.bfloat16))
FLOAT16 = register_technique(LowPrecision("forecast-fp16", torch.float16))


def low_precision(schedule: Schedule, dtype: torch.dtype = torch.bfloat16) -> Schedule:
    """``schedule`` with every key answered from outputs kept in ``dtype`` (bfloat16 or
    float16): the same rows, orders and fitted weights, half the stored bytes of a float32
    model."""
    found = {torch.bfloat16: BFLOAT16, torch.float16: FLOAT16}.get(dtype)
    if found is None:
        raise ArgumentError(
            f"low_precision keeps outputs in torch.bfloat16 or torch.float16, found {dtype!r}; "
            "pass one of those"
        )
    return dataclasses.replace(schedule, techniques=dict.fromkeys(schedule.rows, found.name))
