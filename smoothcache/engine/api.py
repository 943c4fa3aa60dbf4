"""The public way in: :func:`enable` and :func:`enabled` apply a schedule to a model.

Every check (arguments, schedule, adapter, keys, techniques) happens before the model is
touched: on any error the model is exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smoothcache.adapter import Adapter
from smoothcache.binding import bind
from smoothcache.clock import check_count
from smoothcache.engine.session import Session
from smoothcache.errors import ArgumentError
from smoothcache.schedule import Schedule, as_schedule

ScheduleLike = Schedule | Mapping[str, Any] | str | Path


def enable(
    model: Any,
    schedule: ScheduleLike,
    adapter: str | Adapter | None = None,
    *,
    calls_per_step: int | None = None,
    fast_path: bool = True,
    max_calls_per_step: int | None = None,
    remap: bool = False,
) -> Session:
    """Apply ``schedule`` to ``model`` until :meth:`Session.disable` is called.

    ``model`` is a denoiser module or an object holding one (a diffusers pipeline). ``schedule``
    is a :class:`Schedule`, a dict, a JSON path or a shipped name. ``adapter`` forces an adapter
    by name. ``calls_per_step`` fixes how many model calls make one denoising step, which
    avoids reading the timestep's value (a host sync when it lives on a GPU) on every call.
    ``fast_path=False`` turns off the adapter's block forwards that skip a reused branch's input
    preparation (the module-level wrappers alone give the same outputs, a little slower); they
    are installed only on blocks with a branch that the schedule reuses at some step.
    ``max_calls_per_step`` bounds the model calls of one step (each keeps its own cache; by
    default 8). ``remap=True`` maps the schedule to the steps of each pipeline run whose step
    count differs (another ``num_inference_steps``, or ``strength < 1``), read from the
    pipeline's scheduler (:meth:`Schedule.remapped`); without it such a run raises
    :class:`~smoothcache.StepCountError`.

    Every check (arguments, schedule, adapter, keys) happens before the model is touched: on
    any error the model is exactly as it was.
    """
    check_arguments(calls_per_step=calls_per_step, max_calls_per_step=max_calls_per_step)
    for name, flag in (("fast_path", fast_path), ("remap", remap)):
        if not isinstance(flag, bool):
            raise ArgumentError(f"{name} must be True or False, found {flag!r}")
    if remap and calls_per_step is not None:
        raise ArgumentError(
            "remap=True needs the timesteps read at every call to tell runs apart; leave "
            "calls_per_step unset, or map the schedule yourself: schedule.remapped(num_steps=N)"
        )
    schedule = as_schedule(schedule)
    return Session(
        bind(model, adapter),
        schedule,
        calls_per_step,
        fast_path,
        max_calls_per_step=max_calls_per_step,
        remap=remap,
    )


def check_arguments(**counts: Any) -> None:
    """Refuse count arguments that are neither ``None`` nor a positive int."""
    for name, value in counts.items():
        if value is not None:
            check_count(name, value, "model calls per denoising step, e.g. 2 for guidance")


@contextmanager
def enabled(
    model: Any,
    schedule: ScheduleLike,
    adapter: str | Adapter | None = None,
    *,
    calls_per_step: int | None = None,
    fast_path: bool = True,
    max_calls_per_step: int | None = None,
    remap: bool = False,
) -> Iterator[Session]:
    """Context manager form of :func:`enable`: the model is restored exactly on exit.

    On a normal exit, a sampler run that stopped before the schedule's last step is an error
    (raised after the model is restored); on an exception the model is restored and the
    exception propagates unchanged.
    """
    session = enable(
        model,
        schedule,
        adapter,
        calls_per_step=calls_per_step,
        fast_path=fast_path,
        max_calls_per_step=max_calls_per_step,
        remap=remap,
    )
    with session:
        yield session
