"""Forecasting a skipped branch: polynomial extrapolation from its last computed outputs.

Reuse (order 0) answers a skipped step with the branch's last computed output. A forecast of
order ``k`` answers it with the value at the skipped step of the polynomial of degree ``k``
through the branch's last ``k + 1`` computed outputs (Lagrange extrapolation, elementwise).

The positions of those outputs are their **step indices**, not their timestep values:

- a static schedule fixes which steps compute, so the weights of every forecast are known when
  the schedule is applied: no timestep has to be read from the device (no host sync), every
  rank of a distributed run computes the same numbers, and the weights depend only on the gaps
  between the computed steps, so a schedule's distinct step patterns bound the distinct weights;
- calibration measures the error of exactly these forecasts (same positions, same weights), so
  the schedule search chooses an order from the errors the engine will make, whatever the
  sampler's timestep spacing; for the uniform spacings of DDIM and flow-matching samplers
  without a shift, step indices and timesteps are proportional and give the same weights.
  Under a shifted flow-matching schedule (FLUX, SD3), where they differ, step indices forecast
  the branch outputs better than sigmas do (measured: docs/forecast.md, "Positions under a
  shifted sigma schedule").

Gaps need not be equal: the weights are exact for any distinct positions, so a polynomial of
degree at most ``k`` sampled at the computed steps is reproduced exactly at the skipped step.

The weights of one forecast are fixed per (branch, step); the engine keeps them as 0-dim tensors
on the outputs' device, so under ``torch.compile`` they are graph inputs, never guards: a new
weight never recompiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

from smoothcache.errors import AdapterError


def lagrange_weights(positions: Sequence[int], at: int) -> tuple[float, ...]:
    """Weights ``w`` with ``p(at) = sum_i w[i] * p(positions[i])`` for every polynomial ``p``
    of degree ``< len(positions)``: the Lagrange basis at ``at``, computed exactly.

    ``positions`` must be distinct. One position gives ``(1.0,)``: reuse.
    """
    if len(set(positions)) != len(positions):
        raise ValueError(f"forecast positions must be distinct, found {list(positions)}")
    weights = []
    for i, xi in enumerate(positions):
        weight = Fraction(1)
        for j, xj in enumerate(positions):
            if j != i:
                weight *= Fraction(at - xj, xi - xj)
        weights.append(float(weight))
    return tuple(weights)


def combine(values: Sequence[Any], weights: Sequence[torch.Tensor]) -> Any:
    """``sum_i weights[i] * values[i]`` for branch outputs: tensors, or tuples/lists/dicts of them.

    ``k + 1`` elementwise kernels for ``k + 1`` values (one multiply, then fused multiply-adds
    in place on the fresh result). Items that are not tensors (``None`` in a tuple) are taken
    from the newest value, as reuse would.
    """
    first = values[0]
    if isinstance(first, torch.Tensor):
        out = first * weights[0]
        for value, weight in zip(values[1:], weights[1:]):
            out.addcmul_(value, weight)
        return out
    if isinstance(first, (tuple, list)):
        items = [combine([v[i] for v in values], weights) for i in range(len(first))]
        return type(first)(items) if isinstance(first, list) else tuple(items)
    if isinstance(first, dict):
        return {key: combine([v[key] for v in values], weights) for key in first}
    if first is None or isinstance(first, (bool, int, float, str)):
        return values[-1]
    raise AdapterError(
        f"cannot forecast a branch output of type {type(first).__name__}: forecasts combine "
        "tensors (or tuples, lists and dicts of them); use order 0 (reuse) for this branch"
    )


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor inside a branch output (its device and dtype carry the weights)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def plan_reads(
    row: Sequence[int], orders: Sequence[int] | None
) -> list[tuple[bool, tuple[int, ...], int]]:
    """What one branch reads and keeps at every step: ``(skip, positions, hold)``.

    ``skip``: the step does not compute. ``positions``: the steps whose computed outputs the
    answer of a skipped step reads, oldest first (the latest ``k + 1`` for order ``k``; empty
    when computing). ``hold``: how many of the latest computed outputs must be kept after the
    step, because a later skipped step reads them: the engine stores an output only when a
    later step needs it and drops it after its last use, so a branch never holds more than its
    largest read.
    """
    n = len(row)
    orders = orders or (0,) * n
    needs = [0 if flag else order + 1 for flag, order in zip(row, orders)]
    computed_before = list(itertools.accumulate(row, initial=0))  # computes in steps [0, s)
    positions: list[tuple[int, ...]] = []
    computed: list[int] = []
    for step, need in enumerate(needs):
        positions.append(tuple(computed[-need:]) if need else ())
        if row[step]:
            computed.append(step)
    # hold after step s: over later skipped steps t, how many of the `need` latest outputs
    # before t were computed at or before s
    holds = [0] * n
    for t in range(n):
        for s in range(t if needs[t] else 0):
            later = computed_before[t] - computed_before[s + 1]  # computed in (s, t)
            holds[s] = max(holds[s], needs[t] - later)
    return [(not row[s], positions[s], holds[s]) for s in range(n)]
