"""A session: one application of a schedule to one model, from installation to exact restore.

The session installs the per-call wrappers (:mod:`smoothcache.engine.hotpath`) and the adapter's
fast paths (:mod:`smoothcache.engine.fastpath`), then, once per model evaluation (the timestep
source's pre-hook), folds the evaluation that ended into the counts and bytes and loads each
branch's action, answer and stored outputs for the step and pass about to run. That keeps the
per-call path short in eager mode and free of Python counters under ``torch.compile``, where
recompilations are then bounded by the number of distinct step patterns of the schedule.
"""

from __future__ import annotations

import logging
import sys
import types

from torch import nn

from smoothcache.binding import Bound, scheduled_branches
from smoothcache.clock import StepClock
from smoothcache.engine.actions import DROP, SKIP
from smoothcache.engine.fastpath import install_fast_paths
from smoothcache.engine.hotpath import branch_forward
from smoothcache.engine.plans import DEVICE_BOUND, DeviceAnswers, StepPlans
from smoothcache.engine.remapping import RunMapper
from smoothcache.engine.state import initial_branch_state
from smoothcache.engine.stats import CacheStats, Tally
from smoothcache.engine.store import PassStore
from smoothcache.errors import StepCountError
from smoothcache.lifecycle import Attachment
from smoothcache.patching import Patches
from smoothcache.schedule import Schedule

logger = logging.getLogger(__name__)


class Session(Attachment):
    """One application of a schedule to one model; undone by :meth:`disable`.

    Create it with :func:`~smoothcache.enable` or :func:`~smoothcache.enabled`. ``model`` is the
    denoiser module the adapter unwrapped, ``branches`` the scheduled branches in execution
    order, ``schedule`` the schedule applied (keys named after another adapter's kinds read as
    this model's).
    """

    def __init__(
        self,
        bound: Bound,
        schedule: Schedule,
        calls_per_step: int | None = None,
        fast_path: bool = True,
        *,
        max_calls_per_step: int | None = None,
        remap: bool = False,
    ) -> None:
        self.model, self.adapter, self.fast_path = bound.model, bound.adapter, fast_path
        #: the denoisers this session caches, by attribute name in the pipeline ("" for the
        #: first): one step clock for all (Wan 2.2's second transformer takes over partway)
        self.roots = bound.roots
        self.schedule, self._branches, self._modules = scheduled_branches(bound, schedule)
        self._plans = StepPlans(self.schedule, self._branches)  # the last check: a technique
        self._mapper = (
            RunMapper(self.schedule, self._plans, self._branches, bound) if remap else None
        )
        #: the scheduled branches, in execution order (unscheduled ones are wrapped to compute)
        self.branches = [b for b in self._branches if self.schedule.row_for(b.kind, b.block)]
        paths = {b.path: i for i, b in enumerate(self._branches)}
        ran_by = [paths.get(b.leader, i) for i, b in enumerate(self._branches)]
        self._tally = Tally(self._modules, ran_by)
        self._store = PassStore(self._modules)
        self._answers = DeviceAnswers()
        self._current = -1  # plan index of the evaluation in progress; -1 between evaluations
        self._loaded = -1  # plan index whose actions the modules hold
        self._call_marks = 0
        self.source_path = bound.sources[0][1].path  #: the first denoiser's timestep source
        self.clock = StepClock(
            self.schedule.num_steps,
            calls_per_step,
            on_generation=self._new_generation,
            max_calls_per_step=max_calls_per_step,
        )
        self._patches = Patches(owner=f"session with adapter {self.adapter.name!r}")
        try:
            self._install(bound)
        except BaseException:
            self._patches.undo()
            raise
        self.active = True
        logger.debug("smoothcache enabled: %d branches, %s", len(self._modules), self.adapter.name)

    def _install(self, bound: Bound) -> None:
        self._watches = bound.attach(
            self._patches,
            self._modules,
            self.clock,
            self._branch_calls,
            self._new_run,
            before_tick=self._account,
            after_tick=self._select,
            after_call=self._after_call,
            on_failure=self._drop_failed,
        )
        for module, keep in zip(self._modules, self._plans.keeps):
            state = initial_branch_state(self, module.forward, keep)
            self._patches.set_attributes(module, **state)
            forward = types.MethodType(branch_forward, module)
            self._patches.replace_forward(module, forward)
        if self.fast_path:
            skipping = {i for plan in self._plans.skipping for i in plan}
            install_fast_paths(self, self._patches, self._branches, self._modules, skipping)

    # -- once per model evaluation -----------------------------------------------------------

    def _branch_calls(self) -> int:
        """A number that changes when a branch ran since the last evaluation started."""
        for module in self._modules:
            if module.__dict__["_sc_ran"]:
                self._call_marks += 1
                break
        return self._call_marks

    def _select(self) -> None:
        """After a tick: give each branch its action for this step and its pass's outputs."""
        clock, store, plans = self.clock, self._store, self._plans
        index = plans.of_step[clock.step]
        if clock.pass_idx != store.pass_idx:
            store.swap(clock.pass_idx)
        if 0 <= store.last_step[store.pass_idx] < clock.step - 1:
            store.forget()  # this pass missed steps: what it stored is stale
        store.last_step[store.pass_idx] = clock.step
        plan, modules = plans.plans[index], self._modules
        if clock.pass_idx == 0 and len(store.values) > 1:
            store.trim_parked(plan, plans.touched[index], clock.step)
        if index != self._loaded:
            for i, module in enumerate(modules):  # DROP is done here, the wrapper never sees it
                module.__dict__["_sc_action"] = plan[i][0] & ~DROP
            self._loaded = index
        answers = plans.answers[index]
        for i in plans.touched[index]:
            state = modules[i].__dict__
            flags, need, keep, answering = plan[i]
            stored = state["_sc_stored"]
            if len(stored) > keep:
                stored = state["_sc_stored"] = stored[len(stored) - keep :] if keep else []
            if flags & SKIP:
                enough = len(stored) >= need
                read = state["_sc_read"] = stored[len(stored) - need :] if enough else []
                answer = answers[i]
                if answer is DEVICE_BOUND:
                    answer = self._answers(answering, read[-1]) if read else None
                state["_sc_answer"] = answer
            elif state["_sc_read"]:  # the step after a skipped one: let go of what it read
                state["_sc_read"] = []
        for module in modules:
            module.__dict__["_sc_ran"] = False
        self._current = index

    def _after_call(self) -> None:
        """A model call returned: at the schedule's last step, the outputs this pass read
        have had their last use (no later step reads them), so they go now rather than when
        the next generation starts."""
        if self._current < 0 or self.clock.step != self.clock.num_steps - 1:
            return
        for i in self._plans.skipping[self._current]:
            self._modules[i].__dict__.update(_sc_stored=[], _sc_read=[])

    def _account(self) -> None:
        """Fold the evaluation that just ended into the counts; runs once per evaluation."""
        index = self._current
        if index < 0:
            return
        self._tally.fold(self._plans.plans[index], self._plans.skipping[index])
        self._store.account(self._plans.touched[index])
        self._current = -1

    def _drop_failed(self) -> None:
        """An evaluation raised: forget it and the generation it belonged to.

        Its counts are not folded in, and the next model call starts a new generation (the
        exception already told the caller that this run is over).
        """
        self._current = -1
        for module in self._modules:
            module.__dict__["_sc_fell_back"] = False
        self.clock.reset()
        self._clear()

    def _new_run(self) -> None:
        """A pipeline run starts (its scheduler's ``set_timesteps`` was called)."""
        for watch in self._watches:
            watch.check_failed()
        self._account()
        self.clock.finish()  # the previous run stopped partway: a StepCountError
        self.clock.reset()
        self._clear()
        for watch in self._watches:
            watch.forget()

    def _new_generation(self) -> None:
        """A generation starts: drop the stored outputs; with ``remap=True`` take the schedule
        and plans mapped to this run's steps (:mod:`smoothcache.engine.remapping`)."""
        self._clear()
        if self._mapper is not None:
            self.schedule, self._plans = self._mapper.for_run()
            self.clock.num_steps, self._loaded = self.schedule.num_steps, -1

    def _clear(self) -> None:
        """Drop every stored output (a new generation starts, or the session resets)."""
        self._store.clear()
        self._loaded = -1

    def path_of(self, module: nn.Module) -> str:
        """The branch path of a wrapped module (for the per-call path's errors)."""
        return self._branches[self._modules.index(module)].path

    # -- public ----------------------------------------------------------------------------

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counts since the session started (including the last evaluation)."""
        scheduled = {b.path for b in self.branches}
        shown = [(i, b.path) for i, b in enumerate(self._branches) if b.path in scheduled]
        return self._tally.snapshot(self._plans, self._current, self._store, self.clock, shown)

    @property
    def cache_bytes(self) -> int:
        """Bytes the stored outputs held when the last evaluation was counted."""
        return self._store.cache_bytes

    @property
    def peak_cache_bytes(self) -> int:
        """The most bytes the stored outputs held, checked once per evaluation."""
        return self._store.peak_cache_bytes

    def reset(self) -> None:
        """Drop the cache and start over: the next model call is step 0 of a new generation.

        Call it between runs of a custom sampling loop whose timesteps could continue the
        previous run's (pipeline runs are told apart on their own). After the session ended
        there is nothing to reset and it does nothing.
        """
        if not self.active:
            return
        self._account()
        self.clock.reset()
        self._clear()
        for watch in self._watches:
            watch.forget()

    def disable(self) -> None:
        """Restore the model exactly, then raise if the last generation stopped partway.

        Calling it again is a no-op, and it completes a restore that something interrupted.
        Called while an exception propagates (in a ``finally:`` or ``except`` block), it
        restores the model and lets that exception win: a run cut short by it is not a second
        error (the step-count problem is added to the exception as a note).
        """
        self.end()

    def _before_restore(self) -> None:
        self._account()
        self._clear()

    def _check_end(self) -> None:
        in_flight = sys.exc_info()[1]
        if in_flight is None:
            self.clock.finish()
            return
        try:
            self.clock.finish()
        except StepCountError as exc:
            note = f"smoothcache: on disable(), {exc}"
            if hasattr(in_flight, "add_note"):
                in_flight.add_note(note)
            else:
                logger.warning(note)

    def __repr__(self) -> str:
        state = "active" if self.active else "disabled"
        return (
            f"<smoothcache.Session {state} adapter={self.adapter.name!r} "
            f"branches={len(self.branches)} steps={self.schedule.num_steps}>"
        )
