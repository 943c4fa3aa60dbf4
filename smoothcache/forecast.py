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

Gaps need not be equal: the weights are exact for any distinct positions, so a polynomial of
degree at most ``k`` sampled at the computed steps is reproduced exactly at the skipped step.

The weights of one forecast are fixed per (branch, step); the engine keeps them as 0-dim tensors
on the outputs' device, so under ``torch.compile`` they are graph inputs, never guards: a new
weight never recompiles.
"""

from __future__ import annotations

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
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, (tuple, list)) or isinstance(value, dict):
        for item in items:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def step_plan(
    row: Sequence[int], orders: Sequence[int] | None
) -> list[tuple[bool, int, tuple[float, ...], int]]:
    """What one branch does at every step: ``(skip, need, weights, hold)``.

    ``skip``: the step does not compute. ``need``: how many of the latest computed outputs the
    answer reads (1 for reuse, ``k + 1`` for order ``k``; 0 when computing). ``weights``: the
    Lagrange weights over those outputs, oldest first (empty for reuse). ``hold``: how many of
    the latest computed outputs must be kept after the step, because a later skipped step reads
    them: the engine stores an output only when a later step needs it and drops it after its
    last use, so a branch never holds more than its largest ``need``.
    """
    n = len(row)
    orders = orders or (0,) * n
    computed: list[int] = []
    plan: list[tuple[bool, int, tuple[float, ...], int]] = []
    needs = []
    for step in range(n):
        if row[step]:
            computed.append(step)
            plan.append((False, 0, (), 0))
            needs.append(0)
            continue
        need = orders[step] + 1
        weights = lagrange_weights(computed[-need:], step) if need > 1 else ()
        plan.append((True, need, weights, 0))
        needs.append(need)
    # hold after step s: max over later skipped steps t of the outputs computed at or before s
    # among the `need` latest before t.
    holds = [0] * n
    computes_before = [0] * (n + 1)
    for step in range(n):
        computes_before[step + 1] = computes_before[step] + row[step]
    for t in range(n):
        if needs[t]:
            for s in range(t):
                later = computes_before[t] - computes_before[s + 1]  # computed in (s, t)
                holds[s] = max(holds[s], needs[t] - later)
    return [
        (skip, need, weights, max(holds[s], 0)) for s, (skip, need, weights, _) in enumerate(plan)
    ]
