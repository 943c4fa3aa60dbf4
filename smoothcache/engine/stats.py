"""What a session did: the counts per branch, folded once per model evaluation.

A branch that did not run in an evaluation (a block skipped by skip-layer guidance, another
denoiser's branch) is not counted; a skipped step that had to compute (a fallback) counts as
computed, not reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from smoothcache.clock import StepClock
from smoothcache.engine.actions import SKIP, Action
from smoothcache.engine.plans import StepPlans
from smoothcache.engine.store import PassStore


@dataclass(frozen=True)
class CacheStats:
    """What a session did: per-branch counts, steps and passes seen, cache memory.

    ``reused`` counts every skipped branch call answered from the cache, ``forecast`` those of
    them answered by a forecast (order above 0). ``fallbacks`` counts skipped steps that
    computed instead because the stored outputs were missing or their input shape differed
    (e.g. the batch size changed between steps). ``peak_cache_bytes`` bounds from above the
    bytes the stored outputs ever held (checked once per model evaluation).
    """

    computed: dict[str, int]
    reused: dict[str, int]
    fallbacks: dict[str, int]
    steps: int
    passes: int
    generations: int
    cache_bytes: int
    peak_cache_bytes: int
    forecast: dict[str, int] = field(default_factory=dict)

    @property
    def total_computed(self) -> int:
        """Branch calls that ran the branch."""
        return sum(self.computed.values())

    @property
    def total_reused(self) -> int:
        """Branch calls answered from the cache."""
        return sum(self.reused.values())

    @property
    def reuse_fraction(self) -> float:
        """Fraction of branch calls answered from the cache (0 when nothing ran)."""
        total = self.total_computed + self.total_reused
        return self.total_reused / total if total else 0.0


def _forecasts(action: Action) -> bool:
    return action[3] is not None and action[3][0].forecast


class Tally:
    """Per-branch counts of calls that computed, skipped and forecast, and of fallbacks.

    ``ran_by[i]`` is the branch whose call says whether branch ``i`` ran: its own, or its
    group's leader's (a member runs when its leader does).
    """

    def __init__(self, modules: Sequence[nn.Module], ran_by: Sequence[int]) -> None:
        self.modules = modules
        self.ran_by = ran_by
        n = len(modules)
        self.done = [[0, 0, 0] for _ in range(n)]
        self.fallbacks = [0] * n
        self.forecast_fallbacks = [0] * n  # of the fallbacks, those at forecast steps

    def fell_back(self, skipping: Sequence[int]) -> list[int]:
        """The branches of ``skipping`` that computed in the evaluation in progress."""
        modules = self.modules
        return [i for i in skipping if modules[i].__dict__["_sc_fell_back"]]

    def fold(self, plan: Sequence[Action], skipping: Sequence[int]) -> None:
        """Add the evaluation that just ended under ``plan``."""
        for i in self.fell_back(skipping):
            self.fallbacks[i] += 1
            if _forecasts(plan[i]):
                self.forecast_fallbacks[i] += 1
            self.modules[i].__dict__["_sc_fell_back"] = False
        self.add(plan, self.done)

    def add(self, plan: Sequence[Action], done: list[list[int]]) -> None:
        """Add an evaluation of ``plan`` to ``done``: each branch that ran as computed or
        skipped (and forecast) by its plan."""
        modules = self.modules
        for i, leader in enumerate(self.ran_by):
            if modules[leader].__dict__["_sc_ran"]:
                action = plan[i]
                if action[0] & SKIP:
                    done[i][1] += 1
                    if action[3][0].forecast:
                        done[i][2] += 1
                else:
                    done[i][0] += 1

    def counts(
        self, plan: Sequence[Action] | None, skipping: Sequence[int]
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        """Computed, reused, forecast and fallback counts per branch, including the evaluation
        in progress under ``plan`` (``None`` between evaluations)."""
        done = [list(counts) for counts in self.done]
        fallbacks = list(self.fallbacks)
        forecast_fallbacks = list(self.forecast_fallbacks)
        if plan is not None:
            self.add(plan, done)
            for i in self.fell_back(skipping):
                fallbacks[i] += 1
                forecast_fallbacks[i] += 1 if _forecasts(plan[i]) else 0
        computed, reused, forecast = (list(column) for column in zip(*done))
        for i, extra in enumerate(fallbacks):
            computed[i] += extra
            reused[i] -= extra
            forecast[i] -= forecast_fallbacks[i]
        return computed, reused, forecast, fallbacks

    def snapshot(
        self,
        plans: StepPlans,
        current: int,
        store: PassStore,
        clock: StepClock,
        shown: Sequence[tuple[int, str]],
    ) -> CacheStats:
        """The counts so far, with the evaluation in progress (plan ``current``, -1 between
        evaluations), of the branches ``shown`` (index, path)."""
        plan = plans.plans[current] if current >= 0 else None
        skipping = plans.skipping[current] if current >= 0 else []
        computed, reused, forecast, fallbacks = self.counts(plan, skipping)
        held, dropped = store.pending(plans.touched[current] if current >= 0 else [])

        def by_path(values: list[int]) -> dict[str, int]:
            return {path: values[i] for i, path in shown}

        return CacheStats(
            computed=by_path(computed),
            reused=by_path(reused),
            forecast=by_path(forecast),
            fallbacks=by_path(fallbacks),
            steps=clock.steps_seen,
            passes=clock.max_passes,
            generations=clock.generations,
            cache_bytes=held,
            peak_cache_bytes=max(store.peak_cache_bytes, held + dropped),
        )
