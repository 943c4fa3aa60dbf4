"""Closed-loop fitted forecasts: weights fitted to the final output, through the sampler.

:func:`~smoothcache.fit_forecasts` fits every forecast's weights to the branch's own output at
that step (least squares on the calibration's inner products): cheap, and on most models no
better than Lagrange's weights once the sampler runs on the forecasts (docs/forecast.md: the
fitted weights lower every step's error and not the final one's, even when fitted to outputs
recorded under the schedule itself). :func:`fit_closed_loop` fits them to what matters: the
final output of a run under the schedule against the uncached run of the same seed. The
weights of every forecast step are parameters (the schedule's weights, or Lagrange's, plus a
correction that sums to zero, so constants stay exact); each iteration samples one fresh seeded
batch twice (uncached, then cached with gradients through the whole sampler) and takes one
Adam step on the batch's mean squared error. A fresh batch per iteration is what keeps the fit
from learning one batch's noise.

The weights are still constants of the schedule: the engine answers exactly as for
:func:`~smoothcache.fit_forecasts`'s (same counted work, order 0 stays reuse). Fitting needs a
``run`` that keeps gradients (a diffusers pipeline's ``__call__`` does not: pass ``call=`` and
its undecorated function runs), and costs per iteration one uncached run and one run with a
reverse pass through every step.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from smoothcache.adapter import Adapter
from smoothcache.engine import enabled
from smoothcache.engine.technique import (
    TECHNIQUES,
    Answer,
    Technique,
    register_technique,
    technique_named,
)
from smoothcache.errors import ArgumentError, CalibrationError, ScheduleError
from smoothcache.forecast import combine, first_tensor, lagrange_weights, plan_reads
from smoothcache.sampling import SeededRun, sample_errors, seeded_runs
from smoothcache.schedule import Schedule

#: Iterations (fresh batches) by default, and Adam's step on the weight corrections: chosen on
#: development seeds (docs/forecast.md, "Closed-loop fitted forecasts"; steps 0.01 to 0.1 tried).
ITERATIONS = 40
LEARNING_RATE = 0.03
#: The first seed of the fitting batches, by default (one per iteration, counting up).
FIRST_SEED = 3000


class _Trainable(Technique):
    """Forecasts of one schedule key whose weights are autograd leaves: ``base + delta -
    mean(delta)`` per step, read from the fit's table (the constants name the step and the
    anchors, so every step of the key has its own weights, shared by the passes)."""

    forecast = True
    device_bound = True

    def __init__(self, name: str, table: Mapping[tuple[float, ...], tuple[Any, Any]]) -> None:
        self.name = name  # type: ignore[misc]  # one registered instance per key and fit
        self.table = table

    def constants(self, positions: tuple[int, ...], at: int) -> tuple[float, ...]:
        return (float(at), *map(float, positions))

    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        entry = self.table.get(constants)
        if entry is None:  # reuse (one output read): nothing to fit
            return None
        base, delta = entry
        tensor = first_tensor(newest)
        device = None if tensor is None else tensor.device
        wide = tensor is not None and tensor.dtype == torch.float64
        dtype = torch.float64 if wide else torch.float32  # as the engine's forecasts

        def forecast(read: list[Any]) -> Any:
            weights = _current(base, delta).to(device=device, dtype=dtype)
            return combine(read, tuple(weights.unbind()))

        return forecast


def _current(base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """A step's weights during the fit: the start plus the correction, made to sum to zero."""
    return base + delta - delta.mean()


@contextmanager
def _registered(techniques: Sequence[Technique]) -> Iterator[None]:
    """Register the fit's techniques for its duration only."""
    try:
        for technique in techniques:
            register_technique(technique)
        yield
    finally:
        for technique in techniques:
            if TECHNIQUES.get(technique.name) is technique:
                del TECHNIQUES[technique.name]


def _tables(schedule: Schedule) -> dict[str, dict[tuple[float, ...], tuple[Any, Any]]]:
    """Per key whose skipped steps forecast (and take weights), its forecast steps' starting
    weights (the schedule's own, else Lagrange's) and a zero correction to fit."""
    tables: dict[str, dict[tuple[float, ...], tuple[Any, Any]]] = {}
    for key, orders in schedule.orders.items():
        named = schedule.techniques.get(key)
        if named is not None and not technique_named(named, key).takes_weights:
            continue
        own = (schedule.weights or {}).get(key)
        table = {}
        for step, (skip, read, _) in enumerate(plan_reads(schedule.rows[key], orders)):
            if not skip or len(read) < 2:
                continue
            start = own[step] if own is not None and own[step] is not None else None
            base = torch.tensor(start or lagrange_weights(read, step), dtype=torch.float64)
            delta = torch.zeros(len(read), dtype=torch.float64, requires_grad=True)
            table[(float(step), *map(float, read))] = (base, delta)
        if table:
            tables[key] = table
    return tables


def _weights(schedule: Schedule, tables: Mapping[str, Mapping[tuple[float, ...], Any]]) -> Any:
    """The schedule's weights with the fitted ones in place of the tables' steps."""
    weights = {k: list(v) for k, v in (schedule.weights or {}).items()}
    for key, table in tables.items():
        row = weights.setdefault(key, [None] * schedule.num_steps)
        for (step, *_), (base, delta) in table.items():
            row[int(step)] = tuple(float(w) for w in _current(base, delta).detach())
    return {k: tuple(v) for k, v in weights.items()}


def fit_closed_loop(
    model: Any,
    schedule: Schedule,
    run: SeededRun | None = None,
    *,
    call: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    learning_rate: float = LEARNING_RATE,
    held_out_seed: int | None = None,
    adapter: str | Adapter | None = None,
) -> Schedule:
    """``schedule`` with every forecast's weights fitted to the final output of runs under it.

    ``run(seed)`` samples one batch from ``seed`` and returns the final output with gradients
    kept (for a diffusers pipeline give ``call=`` instead, its own call arguments, as for
    :func:`~smoothcache.tune`). ``seeds``: one fitting batch per seed, one Adam step each
    (default :data:`ITERATIONS` seeds from :data:`FIRST_SEED`); use seeds you will not judge the
    result on. Forecast steps start from the schedule's weights (or Lagrange's); order-0 steps
    stay reuse. The metadata's ``closed_loop`` records the seeds, the step and the batch errors
    (signal-to-error ratio in dB of the first and last batch). With ``held_out_seed`` (a seed
    of none of the fitting batches) one more batch is sampled uncached, under the schedule as it
    came and as fitted: ``held_out_gain_db`` in the metadata, and a warning when fitting made
    it worse. The model is left as it was: its parameters get no gradients.
    """
    tables = _tables(schedule)
    if not tables:
        raise ScheduleError(
            "the schedule forecasts at no step with weights (every skipped step reuses, order "
            "0, or its key names a technique that takes none): nothing to fit; make a forecast "
            "schedule (curves.schedule(compute_fraction=f, method='forecast') or "
            "smoothcache.tune)"
        )
    chosen = list(range(FIRST_SEED, FIRST_SEED + ITERATIONS)) if seeds is None else list(seeds)
    if not chosen or not all(isinstance(s, int) and not isinstance(s, bool) for s in chosen):
        raise ArgumentError(f"seeds must be a non-empty list of integers, found {seeds!r}")
    number = isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool)
    if not number or not 0 < learning_rate < math.inf:
        raise ArgumentError(f"learning_rate must be a number > 0, found {learning_rate!r}")
    if held_out_seed is not None and (
        not isinstance(held_out_seed, int)
        or isinstance(held_out_seed, bool)
        or held_out_seed in chosen
    ):
        raise ArgumentError(
            f"held_out_seed must be an integer that is not one of the fitting seeds, found "
            f"{held_out_seed!r}"
        )
    plain, graph_run = seeded_runs(model, run, call)
    tag = f"closed-loop-fit-{id(tables)}"
    trainables = [_Trainable(f"{tag}-{key}", table) for key, table in tables.items()]
    training = dataclasses.replace(
        schedule,
        techniques={**schedule.techniques, **{k: t.name for k, t in zip(tables, trainables)}},
        weights=None,
    )
    deltas = [delta for table in tables.values() for _, delta in table.values()]
    optimiser = torch.optim.Adam(deltas, lr=learning_rate)
    batches: list[float] = []
    started = time.perf_counter()
    with _registered(trainables):
        for seed in chosen:
            with torch.no_grad():
                reference = plain(seed)
            with enabled(model, training, adapter=adapter), torch.enable_grad():
                output = graph_run(seed)
                loss = _loss(output, reference)
                gradients = torch.autograd.grad(loss, deltas, allow_unused=True)
            for delta, gradient in zip(deltas, gradients):
                delta.grad = torch.zeros_like(delta) if gradient is None else gradient
            optimiser.step()
            signal = float(reference.detach().double().pow(2).mean())
            batches.append(10 * math.log10(signal / max(float(loss.detach()), 1e-300)))
    how = {
        "seeds": chosen,
        "learning_rate": learning_rate,
        "first_batch_snr_db": round(batches[0], 3),
        "last_batch_snr_db": round(batches[-1], 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    fitted = dataclasses.replace(schedule, weights=_weights(schedule, tables))
    if held_out_seed is not None:
        gain = _held_out_gain(model, plain, held_out_seed, schedule, fitted, adapter)
        how["held_out_gain_db"] = round(gain, 3)
        if gain < 0:
            warnings.warn(
                f"fitting made the held-out batch (seed {held_out_seed}) {-gain:.2f} dB worse "
                "than the schedule's own weights: keep those, or fit on more seeds",
                stacklevel=2,
            )
    return dataclasses.replace(fitted, metadata={**schedule.metadata, "closed_loop": how})


def _held_out_gain(
    model: Any,
    run: SeededRun,
    seed: int,
    before: Schedule,
    after: Schedule,
    adapter: str | Adapter | None,
) -> float:
    """How much lower (in dB) the batch error of ``seed`` is under ``after`` than ``before``."""
    errors = []
    with torch.no_grad():
        reference = torch.as_tensor(run(seed)).to(torch.float64)
        for schedule in (before, after):
            with enabled(model, schedule, adapter=adapter):
                output = torch.as_tensor(run(seed))
            errors.append(float(sample_errors(output, reference).mean()))
    return 10 * math.log10(max(errors[0], 1e-300) / max(errors[1], 1e-300))


def _loss(output: Any, reference: Any) -> torch.Tensor:
    """The batch's mean squared error, which must reach the weights through autograd."""
    if not isinstance(output, torch.Tensor) or output.grad_fn is None:
        raise CalibrationError(
            "run() returned an output that does not depend on the forecast weights through "
            "autograd: it ran without gradients (torch.no_grad or inference_mode, a diffusers "
            "pipeline's __call__, or a NumPy output); fit_closed_loop needs a run() that keeps "
            "gradients on, or call= for a pipeline"
        )
    loss = (output.double() - torch.as_tensor(reference).to(output).double()).pow(2).mean()
    if not torch.isfinite(loss):
        raise CalibrationError(
            "a fitting batch's error is not finite: the schedule breaks the output at these "
            "weights; lower learning_rate, or fit a schedule that computes more"
        )
    return loss
