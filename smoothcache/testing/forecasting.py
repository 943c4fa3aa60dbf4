"""The forecast check: skipped steps answered by extrapolation, verified by hand.

Forward hooks record every output a branch gives during a forecasting run; each skipped step's
output must then be the Lagrange extrapolation of the outputs computed before it in the same
run, to within rounding of the engine's dtype; and, with weights the schedule gives (fitted
forecasts, :mod:`smoothcache.fitting`), the combination with those weights. Plain reuse and the
fast path serve as the references the forecast must differ from and agree with.
"""

from __future__ import annotations

import torch

from smoothcache.engine.lowprecision import low_precision
from smoothcache.engine.outputs import identical
from smoothcache.forecast import first_tensor, lagrange_weights
from smoothcache.schedule import Schedule, StepWeights
from smoothcache.testing.harness import (
    Subject,
    as_failure,
    counting_calls,
    forecast_row,
    recording_warnings,
    relative_change,
    step_invariant,
)
from smoothcache.testing.results import ConformanceError


def forecast(subject: Subject) -> None:
    """The ``forecast`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "forecast"
    if subject.num_steps < 4:
        raise ConformanceError(check, "a forecast of order 1 needs num_steps >= 4")
    row = forecast_row(subject.num_steps)
    pairs = subject.branches(check)
    kinds = subject.kinds(check)
    for kind in kinds:
        lagrange = Schedule({kind: row}).forecasting(1)
        _forecast_kind(subject, check, kind, pairs, lagrange)
        _forecast_kind(subject, check, kind, pairs, _with_weights(lagrange, kind))
    _half_anchors(subject, check, Schedule({kind: row for kind in kinds}).forecasting(1))


def _half_anchors(subject: Subject, check: str, schedule: Schedule) -> None:
    """Every kind forecast at once from outputs kept in bfloat16: the same skips, half the
    stored bytes of a float32 model, and an output within the rounding of the kept values."""
    runs = []
    for chosen in (schedule, low_precision(schedule)):
        with as_failure(check), subject.enabled(chosen, fast_path=False) as session:
            runs.append((subject.run(check), session.stats))
    (out, stats), (half, halved) = runs
    held, full = halved.peak_cache_bytes, stats.peak_cache_bytes
    tensor = first_tensor(out)
    wide = tensor is not None and tensor.dtype == torch.float32
    if halved.reused != stats.reused or (held * 2 != full if wide else held > full):
        raise ConformanceError(
            check,
            f"bfloat16 anchors: reused {halved.reused} and {held} bytes held, against "
            f"{stats.reused} and {full} in float32",
        )
    change = relative_change(half, out)
    if not change <= 0.05:
        raise ConformanceError(
            check,
            f"bfloat16 anchors changed the output by {change:.3g} relative; the answers do not "
            "come from the kept outputs",
        )


def _with_weights(schedule: Schedule, kind: str) -> Schedule:
    """``schedule`` (order 1 at most) with weights of its own at every forecast, neither
    Lagrange's nor summing to one and changing with the step, as a fitted schedule carries."""
    orders = schedule.orders[kind]
    weights: StepWeights = tuple(
        (-0.7 - 0.01 * step, 1.6 + 0.02 * step) if k == 1 else None for step, k in enumerate(orders)
    )
    return Schedule(schedule.rows, schedule.metadata, schedule.orders, weights={kind: weights})


def _forecast_kind(
    subject: Subject, check: str, kind: str, pairs: list, schedule: Schedule
) -> None:
    """One kind forecast under ``schedule``: skipped, answered by hand, unlike reuse, and the
    fast path identical to the wrappers."""
    row = list(schedule.rows[kind])
    fitted = schedule.weights.get(kind)
    chosen = [(b, m) for b, m in pairs if b.kind == kind]
    recorded: list[list[torch.Tensor]] = [[] for _ in chosen]
    handles = [
        module.register_forward_hook(
            lambda _m, _a, out, _r=record: _r.append(first_tensor(out).detach().clone())
        )
        for (_, module), record in zip(chosen, recorded)
    ]
    try:
        with counting_calls([m for _, m in chosen]) as originals:
            with as_failure(check), subject.enabled(schedule, fast_path=False) as session:
                out = subject.run(check)
    finally:
        for handle in handles:
            handle.remove()
    stats = session.stats
    passes = stats.passes
    for (branch, _), calls, outputs in zip(chosen, originals, recorded):
        if branch.leader is not None:  # a group member stands in, never forecasts
            if calls != stats.computed[branch.path] or stats.forecast[branch.path]:
                raise ConformanceError(
                    check,
                    f"group member {branch.path!r} ran {calls} times for "
                    f"{stats.computed[branch.path]} computed steps",
                )
            continue
        if stats.forecast[branch.path] == 0 or calls != stats.computed[branch.path]:
            raise ConformanceError(
                check,
                f"branch {branch.path!r}: {stats.forecast[branch.path]} forecast steps, its "
                f"original forward ran {calls} times for {stats.computed[branch.path]} "
                "computed steps; a forecast must skip the branch",
            )
        if len(outputs) != subject.num_steps * passes:
            raise ConformanceError(
                check,
                f"branch {branch.path!r} answered {len(outputs)} calls, expected "
                f"{subject.num_steps} steps x {passes} passes",
            )
        _check_forecasts(check, branch.path, outputs, row, passes, fitted)
    with as_failure(check), subject.enabled({kind: row}):
        reused = subject.run(check)
    invariant = relative_change(out, reused) == 0 and step_invariant(
        subject, check, [m for _, m in chosen]
    )  # a branch with the same input at every step: its forecast is its reuse, rightly
    if not invariant and not relative_change(out, reused) > subject.min_change:
        raise ConformanceError(
            check,
            f"forecasting kind {kind!r} gave the output of plain reuse (relative change "
            f"{relative_change(out, reused):.3g}); the forecast is not applied",
        )
    if subject.adapter.fast_forwards(subject.root):
        with recording_warnings(check), as_failure(check):
            with subject.enabled(schedule, fast_path=True):
                fast = subject.run(check)
        if not identical(fast, out):
            raise ConformanceError(
                check,
                f"forecasting kind {kind!r} with the fast path differs from the plain "
                f"wrappers by {relative_change(fast, out):.3g} relative",
            )


def _check_forecasts(
    check: str,
    path: str,
    outputs: list[torch.Tensor],
    row: list[int],
    passes: int,
    fitted: StepWeights | None,
) -> None:
    """Every skipped step's output is the line through the outputs of the two computes before
    (or their combination with the ``fitted`` weights of the step)."""
    for step, flag in enumerate(row):
        if flag:
            continue
        before = [s for s in range(step) if row[s]][-2:]
        weights = (fitted and fitted[step]) or lagrange_weights(before, step)
        for p in range(passes):
            got = outputs[step * passes + p].double()
            want = sum(w * outputs[s * passes + p].double() for w, s in zip(weights, before))
            scale = float(want.abs().max()) or 1.0
            error = float((got - want).abs().max()) / scale
            tolerance = 32 * torch.finfo(outputs[0].dtype).eps  # the engine works in the dtype
            if not error <= tolerance:
                raise ConformanceError(
                    check,
                    f"branch {path!r} at step {step}, pass {p}: the output differs from the "
                    f"extrapolation of steps {before} by {error:.3g} relative",
                )
