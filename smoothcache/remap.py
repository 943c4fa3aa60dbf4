"""Mapping a schedule to another step count, or to the steps a run actually takes.

A schedule is calibrated for one sampler at one step count; users change ``num_inference_steps``,
and image-to-image or inpainting at ``strength < 1`` runs only the last part of the steps. A
row of flags describes *where along the sampling path* a branch computes, so it carries over:
every step of the source schedule is a cell of the path holding its flag, every step of the new
run a cell too, and the new run's row computes the same share of its cells, spread where the
source computed densely (the cumulative computed mass, rounded once per new step). The first
step of a run always computes. Forecast orders follow the nearest skipped source step, capped
by how many steps of the new row computed before (as :meth:`~smoothcache.Schedule.forecasting`
caps them), and at 1 when the new steps are sparser than the source's (fewer steps over the same
path: longer spans, over which higher orders overshoot); the engine derives the forecast weights
from the new run's own step indices.

Where along the path a step lies is its *fraction*: its index in the source schedule, possibly
between two of them. :func:`step_fractions` places a run of another step count by index (the
samplers' spacing is then assumed alike, as it is for DDIM or a flow-matching sampler with the
same shift); :func:`position_fractions` places it by the sampler's own timesteps when the
schedule records the ones it was made for (curves do, and the schedules searched from them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from smoothcache.errors import ScheduleError

if TYPE_CHECKING:
    from smoothcache.schedule import Schedule


def remap_schedule(
    schedule: Schedule,
    num_steps: int | None,
    positions: Sequence[float] | None,
    start: int,
) -> Schedule:
    """What :meth:`Schedule.remapped <smoothcache.Schedule.remapped>` returns."""
    if (num_steps is None) == (positions is None):
        raise ScheduleError(
            "remapped() takes exactly one of num_steps= (a run of that many steps along the "
            "same path) or positions= (the run's own timesteps, for a schedule that records "
            "its own)"
        )
    if positions is not None:
        source = schedule.positions
        if source is None:
            raise ScheduleError(
                "this schedule records no timesteps (metadata 'timesteps', one per step), so it "
                "cannot be mapped by position; map it by step count with "
                "remapped(num_steps=N), or make it from curves calibrated with this version"
            )
        if start:
            raise ScheduleError("start= goes with num_steps=; positions= already says where")
        fractions = position_fractions(source, positions)
        how, recorded = "timesteps", [float(p) for p in positions]
    else:
        assert num_steps is not None
        fractions = step_fractions(schedule.num_steps, num_steps, start)
        how, recorded = "step index", None  # the new run's timesteps are not known
    if len(fractions) == schedule.num_steps and np.allclose(fractions, range(len(fractions))):
        return schedule
    rows = {key: _remap_flags(row, fractions) for key, row in schedule.rows.items()}
    orders = {
        key: _remap_orders(schedule.rows[key], row_orders, rows[key], fractions)
        for key, row_orders in schedule.orders.items()
    }
    meta = {k: v for k, v in schedule.metadata.items() if k not in ("timesteps", "num_steps")}
    meta["remapped_from"] = {"num_steps": schedule.num_steps, "by": how}
    if schedule.weights:  # fitted at the source's steps: the new steps forecast by Lagrange
        meta["remapped_from"]["fitted_weights_dropped"] = sorted(schedule.weights)
    if recorded is not None:
        meta["timesteps"] = recorded
    meta["num_steps"] = len(fractions)
    return type(schedule)(rows, meta, orders, schedule.techniques)


def step_fractions(source_steps: int, num_steps: int, start: int = 0) -> np.ndarray:
    """Fractional source indices of steps ``start..num_steps - 1`` of a ``num_steps`` run.

    Both runs span the same path, each step the same share of it: step ``j`` of the new run
    begins ``j / num_steps`` of the way along, where the source's step ``j * source_steps /
    num_steps`` begins. That is exact for flow-matching samplers (sigmas ``1 - j / N``, shifted
    alike) and within a step of DDIM's spacing. ``start`` > 0 keeps only the steps from there on
    (``strength < 1``).
    """
    for name, value, least in (("num_steps", num_steps, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ScheduleError(
                f"{name} must be an integer >= {least} (the steps of the run to map the schedule "
                f"to), found {value!r}"
            )
    if start >= num_steps:
        raise ScheduleError(
            f"start={start} leaves no step of a {num_steps}-step run; it must be below num_steps"
        )
    return np.arange(start, num_steps) * (source_steps / num_steps)


def position_fractions(source: Sequence[float], positions: Sequence[float]) -> np.ndarray:
    """Fractional source indices of a run's ``positions`` (timesteps or sigmas), by
    interpolating them in the ``source`` positions the schedule was made for.

    Both must move one way (down for every diffusers sampler); positions beyond the source's
    range take its first or last step.
    """
    src = _monotone(source, "the schedule's timesteps (metadata 'timesteps')")
    new = _monotone(positions, "positions")
    if len(src) > 1 and len(new) > 1 and (src[1] - src[0]) * (new[1] - new[0]) < 0:
        raise ScheduleError(
            "positions move the other way than the schedule's timesteps (one rises, the "
            "other falls); pass the run's timesteps in the order the sampler takes them"
        )
    index = np.arange(len(src), dtype=np.float64)
    if len(src) > 1 and src[1] < src[0]:
        src, index = src[::-1], index[::-1]
    return np.interp(new, src, index)


def _monotone(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` as a float array, refusing anything but finite numbers moving strictly one way."""
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScheduleError(f"{what} must be a list of numbers, found {values!r:.80}") from exc
    if array.size == 0 or not np.isfinite(array).all():
        raise ScheduleError(f"{what} must be a non-empty list of finite numbers, found {array}")
    steps = np.diff(array)
    if array.size > 1 and not ((steps > 0).all() or (steps < 0).all()):
        raise ScheduleError(
            f"{what} must move strictly one way, one value per step, found {array.tolist()}"
        )
    return array


def _edges(fractions: np.ndarray, length: int) -> np.ndarray:
    """Where the new steps' cells begin on the source path, and where the last one ends: step
    ``j`` holds the path from its own fraction to the next step's."""
    spacing = fractions[-1] - fractions[-2] if len(fractions) > 1 else length - fractions[0]
    end = min(float(length), fractions[-1] + max(spacing, 0.0))
    return np.concatenate([fractions, [end]])


def _remap_flags(row: Sequence[int], fractions: np.ndarray) -> list[int]:
    """The row for the new steps: the source's computed share of the covered path, placed
    where the source computed densely.

    Each computed source step owns the path up to the next one, as one compute's worth: the
    computed mass rises by one between consecutive computes (and up to the end of the path
    after the last). Rounding that mass once per new step spreads the new computes the way the
    source spread its own, at the new resolution (every second step stays every second step
    at twice the steps, instead of doubling into pairs).
    """
    computed = np.flatnonzero(np.asarray(row))
    knots = np.concatenate([computed, [len(row)]]).astype(np.float64)
    edges = _edges(fractions, len(row))
    cell_mass = np.diff(np.interp(edges, knots, np.arange(len(knots), dtype=np.float64)))
    width = edges[-1] - edges[0]
    share = cell_mass.sum() / width if width > 0 else float(row[round(fractions[0])])
    count = min(len(fractions), max(1, round(share * len(fractions))))
    new = [1] + [0] * (len(fractions) - 1)
    rest = cell_mass[1:]
    if count > 1 and rest.sum() > 0:
        marks = np.floor((count - 1) * np.cumsum(rest) / rest.sum() + 0.5 - 1e-9).astype(int)
        for j in np.flatnonzero(np.diff(np.concatenate([[0], marks])) > 0):
            new[j + 1] = 1
        # A cell heavier than one compute's share can take two marks at once: give the
        # missing computes to the heaviest cells still skipped.
        missing = count - sum(new)
        for j in sorted(range(1, len(new)), key=lambda j: -rest[j - 1]):
            if missing <= 0:
                break
            if not new[j]:
                new[j], missing = 1, missing - 1
    return new


#: The highest forecast order a schedule mapped to fewer steps keeps: each of its steps spans
#: more of the path than the steps the orders were chosen for, and over the longer spans an
#: order-2 or order-3 extrapolation overshoots. On development seeds (the three models, tuned at
#: 50 steps, mapped to 20 and 28: 14 cases) capping at 1 was never worse and up to 3.3 dB
#: better; on test seeds it was mixed (docs/usage.md, "Another step count").
SPARSER_MAX_ORDER = 1


def _remap_orders(
    row: Sequence[int], orders: Sequence[int], new_row: Sequence[int], fractions: np.ndarray
) -> list[int]:
    """Orders of the new row: each skipped step takes the order of the nearest skipped source
    step, capped by the computed steps before it (reuse after the first), and by
    :data:`SPARSER_MAX_ORDER` when the new steps are sparser than the source's."""
    skipped = np.flatnonzero(np.asarray(row) == 0)
    sparser = len(fractions) > 1 and float(np.mean(np.diff(fractions))) > 1 + 1e-9
    top = SPARSER_MAX_ORDER if sparser else max(orders, default=0)
    result, done = [], 0
    for flag, where in zip(new_row, fractions):
        if flag:
            result.append(0)
            done += 1
            continue
        nearest = skipped[np.argmin(np.abs(skipped - where))] if skipped.size else 0
        result.append(min(int(orders[nearest]), done - 1, top))
    return result
