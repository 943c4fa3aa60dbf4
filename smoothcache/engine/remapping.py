"""``remap=True``: the session's schedule mapped to the steps of each pipeline run.

A diffusers pipeline sets its scheduler's timesteps at the start of every run, so when the
first model call of a run comes, the scheduler says how many steps the run has in all
(``len(scheduler.timesteps)``) and, for image-to-image or inpainting at ``strength < 1``, from
which of them it starts (``scheduler.begin_index``, which those pipelines set). The schedule is
mapped to exactly those steps (:meth:`~smoothcache.Schedule.remapped`, by step index along the
same path), once per distinct run shape. Without ``remap=True`` a run of another step count is
a :class:`~smoothcache.StepCountError`: the library never remaps silently.
"""

from __future__ import annotations

from collections.abc import Sequence

from smoothcache.adapter import Branch
from smoothcache.binding import Bound
from smoothcache.engine.plans import StepPlans
from smoothcache.errors import ArgumentError
from smoothcache.schedule import Schedule


class RunMapper:
    """The schedule and step plans for each run of the pipeline ``bound`` holds, mapped from
    ``schedule`` (whose ``plans`` the session already made)."""

    def __init__(
        self, schedule: Schedule, plans: StepPlans, branches: Sequence[Branch], bound: Bound
    ) -> None:
        holder = bound.holder
        scheduler = None if holder is bound.model else getattr(holder, "scheduler", None)
        if scheduler is None or not hasattr(scheduler, "set_timesteps"):
            raise ArgumentError(
                "remap=True maps the schedule to each run's steps, which it reads from a "
                f"pipeline's scheduler, but {type(holder).__name__} has no scheduler with "
                "set_timesteps. Pass the pipeline instead of its denoiser, or map the schedule "
                "yourself: schedule.remapped(num_steps=N)"
            )
        self.base, self._plans, self._branches = schedule, plans, branches
        self._scheduler = scheduler
        self._made: dict[tuple[int, int], tuple[Schedule, StepPlans]] = {}

    def run_steps(self) -> tuple[int, int]:
        """``(steps of the whole run, index it starts from)`` as the scheduler has them now."""
        timesteps = getattr(self._scheduler, "timesteps", None)
        if timesteps is None:
            return self.base.num_steps, 0
        begin = getattr(self._scheduler, "begin_index", None)
        total = len(timesteps)
        return total, begin if isinstance(begin, int) and 0 <= begin < total else 0

    def for_run(self) -> tuple[Schedule, StepPlans]:
        """The schedule and plans for the run that is starting (the base ones when its steps
        are the schedule's), made once per run shape."""
        total, start = self.run_steps()
        if (total, start) == (self.base.num_steps, 0):
            return self.base, self._plans
        made = self._made.get((total, start))
        if made is None:
            schedule = self.base.remapped(num_steps=total, start=start)
            made = self._made[(total, start)] = (schedule, StepPlans(schedule, self._branches))
        return made
