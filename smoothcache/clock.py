"""The step clock: turns the model calls of a sampler into (generation, step, pass).

A forward pre-hook on the adapter's timestep source calls :meth:`StepClock.tick` once per model
evaluation. In the default mode the clock reads the timestep's value: a new value is the next
step, the same value another pass of the same step (classifier-free guidance run as separate
calls). That read is the only host synchronisation per evaluation, and only when the timestep
lives on an accelerator. With ``calls_per_step`` the caller fixes how many calls make one step
and the clock only counts; it keeps the timesteps it was given and checks them in one batched
read when the generation ends, so a wrong count is an error instead of a silent misalignment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from smoothcache.errors import ArgumentError, StepCountError

#: Model calls allowed per step when ``max_calls_per_step`` is not given (guidance as two calls
#: needs 2, skip-layer guidance 3; no sampler known here makes more than 4).
DEFAULT_MAX_CALLS = 8

#: The opt-in a step-count error names: the library never maps a schedule silently.
REMAP_HINT = (
    "To run a schedule at another step count, map it: enabled(pipe, schedule, remap=True) "
    "follows each pipeline run's steps, schedule.remapped(num_steps=N) makes one for N steps"
)


def timestep_value(t: Any) -> float:
    """The scalar value of a timestep given as a number or a tensor (first element)."""
    if isinstance(t, torch.Tensor):
        return float(t.reshape(-1)[0])
    return float(t)


class StepClock:
    """Tracks the denoising step and pass of each model call.

    ``num_steps`` is the schedule's length; ``None`` means open-ended (calibration), where a
    generation ends when the timestep moves back against the direction of sampling.
    ``on_generation`` runs when a new generation starts (the engine clears its cache there);
    ``on_generation_end`` runs with the number of steps of a finished open-ended generation.

    Each call at a step opens a pass with its own cache, so the number of calls per step is
    bounded: at most ``max_calls_per_step`` (default :data:`DEFAULT_MAX_CALLS`) at every step. A
    call past the bound is a :class:`StepCountError` at that call, not a cache that grows
    unseen. A step may make more calls than step 0 (skip-layer guidance and guidance intervals
    add calls after the first steps): the new pass computes until it has stored outputs.
    """

    def __init__(
        self,
        num_steps: int | None,
        calls_per_step: int | None = None,
        on_generation: Callable[[], None] | None = None,
        on_generation_end: Callable[[int], None] | None = None,
        max_calls_per_step: int | None = None,
    ) -> None:
        if calls_per_step is not None:
            check_count("calls_per_step", calls_per_step, "e.g. 2 for guidance run as two calls")
            if num_steps is None:
                raise ArgumentError("calls_per_step needs a known number of steps")
        if max_calls_per_step is not None:
            check_count("max_calls_per_step", max_calls_per_step, "e.g. 3 for skip-layer guidance")
        self.num_steps = num_steps
        self.calls_per_step = calls_per_step
        self.max_calls_per_step = max_calls_per_step
        self._on_generation = on_generation
        self._on_generation_end = on_generation_end
        self.generations = 0
        self.steps_seen = 0
        self.max_passes = 0
        self.ticks = 0
        self.reset()

    def detach(self) -> None:
        """Drop the callbacks: their owner has ended and keeps only the clock's counts (a
        callback bound to the owner would otherwise make a cycle that only the garbage
        collector frees, and with it the model the owner holds)."""
        self._on_generation = self._on_generation_end = None

    def reset(self) -> None:
        """Forget the current generation: the next call is step 0 of a new one."""
        self.step = -1
        self.pass_idx = 0
        self._prev: float | None = None
        self._direction = 0
        self._stamps: list[Any] = []

    @property
    def timestep(self) -> float | None:
        """The timestep value of the current step; ``None`` before a tick or when counting calls."""
        return self._prev

    @property
    def in_progress(self) -> bool:
        """True while a bounded generation has started but not reached its last step."""
        return self.num_steps is not None and 0 <= self.step < self.num_steps - 1

    def tick(self, timestep: Any) -> None:
        """Advance the clock for one model evaluation with the given timestep."""
        self.ticks += 1
        if self.calls_per_step is None:
            self._tick_value(timestep_value(timestep))
        else:
            self._tick_count(timestep)
        if self.pass_idx + 1 > self.max_passes:
            self.max_passes = self.pass_idx + 1

    def _start(self, value: float | None) -> None:
        self.step, self.pass_idx, self._prev, self._direction = 0, 0, value, 0
        self.generations += 1
        self.steps_seen += 1
        if self._on_generation is not None:
            self._on_generation()

    def _next_step(self, value: float | None) -> None:
        self.step += 1
        self.pass_idx = 0
        self._prev = value
        self.steps_seen += 1

    def _tick_value(self, value: float) -> None:
        prev = self._prev
        if prev is None:
            self._start(value)
            return
        if value == prev:
            self._check_calls(self.pass_idx + 2, value)
            self.pass_idx += 1
            return
        move = 1 if value > prev else -1
        against = self._direction != 0 and move != self._direction
        if self.num_steps is not None and self.step + 1 == self.num_steps:
            if self._direction != 0 and not against:
                self._fail(
                    f"the sampler ran more steps than the schedule: the schedule has "
                    f"{self.num_steps} steps and the sampler went on to step {self.num_steps + 1} "
                    f"(timestep {value:g} after {prev:g}). {REMAP_HINT}"
                )
            self._start(value)
            return
        if against:
            if self.num_steps is None:
                if self._on_generation_end is not None:
                    self._on_generation_end(self.step + 1)
                self._start(value)
                return
            self._fail(
                f"the sampler ran fewer steps than the schedule: a run ended after "
                f"{self.step + 1} steps but the schedule has {self.num_steps} steps (the timestep "
                f"jumped back from {prev:g} to {value:g}, which starts a new run). {REMAP_HINT}"
            )
        self._direction = move
        self._next_step(value)

    def _check_calls(self, calls: int, value: float) -> None:
        """Refuse call number ``calls`` of the current step if it is past the bound."""
        given = self.max_calls_per_step is not None
        limit = self.max_calls_per_step if given else DEFAULT_MAX_CALLS
        if calls > limit:
            why = f"max_calls_per_step={limit}" if given else f"the default bound is {limit}"
            self._fail(
                f"step {self.step} made {calls} model calls with timestep {value:g}, but {why}: "
                "each call of a step keeps its own cache, so the calls per step are bounded. If "
                "your sampler really makes that many calls per step, pass max_calls_per_step=N; "
                "if these calls belong to separate runs, call session.reset() between them"
            )

    def _tick_count(self, timestep: Any) -> None:
        assert self.calls_per_step is not None and self.num_steps is not None
        if self.step == -1 or (
            self.step + 1 == self.num_steps and self.pass_idx + 1 == self.calls_per_step
        ):
            if self.step != -1:
                self.verify_stamps()
            self._start(None)
        elif self.pass_idx + 1 == self.calls_per_step:
            self._next_step(None)
        else:
            self.pass_idx += 1
        self._stamps.append(timestep)

    def verify_stamps(self) -> None:
        """Check, in one read, that the counted calls had one timestep per step (count mode)."""
        stamps, self._stamps = self._stamps, []
        if not stamps or self.calls_per_step is None:
            return
        if all(isinstance(s, torch.Tensor) for s in stamps):
            values = torch.stack([s.reshape(-1)[0].float() for s in stamps]).tolist()
        else:
            values = [timestep_value(s) for s in stamps]
        per = self.calls_per_step
        steps = [values[i : i + per] for i in range(0, len(values), per)]
        firsts = [group[0] for group in steps]
        direction = 1 if len(firsts) > 1 and firsts[1] > firsts[0] else -1
        for index, group in enumerate(steps):
            moved = index == 0 or (group[0] - firsts[index - 1]) * direction > 0
            if any(v != group[0] for v in group) or not moved:
                self._fail(
                    f"calls_per_step={per} does not fit this sampler: step {index} saw timesteps "
                    f"{group} (expected {per} calls with one timestep, moving on from the "
                    "step before); the cached outputs of that run were misaligned. Pass the right "
                    "calls_per_step, or leave it unset to read timesteps"
                )

    def _fail(self, message: str) -> None:
        self.reset()
        raise StepCountError(message)

    def finish(self) -> None:
        """Check the state at the end of a session: a started, unfinished generation is an error."""
        if self.calls_per_step is not None and self.step + 1 == self.num_steps:
            self.verify_stamps()
        if self.in_progress:
            self._fail(
                f"the sampler ran fewer steps than the schedule: the last run stopped after "
                f"{self.step + 1} steps but the schedule has {self.num_steps} steps. {REMAP_HINT}"
            )


def check_count(name: str, value: Any, example: str) -> None:
    """Refuse anything but a positive int (``bool`` included) for a count argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(
            f"{name} must be a positive integer ({example}), found {value!r} "
            f"({type(value).__name__})"
        )
