"""Watching a model's evaluations: one clock tick each, failed evaluations, pipeline runs.

Caching and calibration both need to know, for every model evaluation, its step and pass
(:class:`~smoothcache.clock.StepClock`), and to notice what would otherwise leave them in a
wrong state without a word:

- an adapter whose timestep source fires twice in one evaluation (an adapter bug);
- an evaluation that raised (a bad class label, an out-of-memory error, a ``KeyboardInterrupt``):
  the clock has counted it, the cache may hold part of it, and the next call must not be taken
  as its continuation;
- a new pipeline run whose timesteps happen to continue the previous run's.

The first two come from hooks on the model's root module (a pre-hook opens an evaluation, a
forward hook closes it; an evaluation still open when the next one starts did not finish) and
on the timestep source. When the root is not called through ``__call__`` (the original DiT's
``forward_with_cfg`` calls ``self.forward``), its hooks do not fire; double firing is then
recognised by the source firing twice with no branch call in between. The third comes from
wrapping ``set_timesteps`` of the pipeline's scheduler, which every diffusers pipeline calls
once at the start of a run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import TimestepSource
from smoothcache.clock import StepClock
from smoothcache.errors import AdapterError
from smoothcache.patching import Patches

logger = logging.getLogger(__name__)


class EvaluationWatch:
    """Ticks ``clock`` once per model evaluation, from a pre-hook on the timestep source.

    ``branch_calls`` returns a number that changes whenever branches ran. ``before_tick`` and
    ``after_tick`` run around each tick; ``after_call`` runs when a call of the root returns
    (not when the root's ``forward`` is called directly); ``on_failure`` runs when an
    evaluation is found to have raised (at the start of the next one, or of the next pipeline
    run), before anything else. The hooks are excluded from ``torch.compile`` tracing: they
    update Python state.
    """

    def __init__(
        self,
        patches: Patches,
        root: nn.Module,
        source: TimestepSource,
        clock: StepClock,
        branch_calls: Callable[[], int],
        adapter_name: str,
        *,
        before_tick: Callable[[], None] | None = None,
        after_tick: Callable[[], None] | None = None,
        after_call: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._branch_calls = branch_calls
        self._adapter_name = adapter_name
        self._source_path = source.path
        self._read = source.read
        self._before_tick = before_tick
        self._after_tick = after_tick
        self._after_call = after_call
        self._on_failure = on_failure
        self._ticks_in_call: int | None = None  # None outside a root call seen by the hooks
        self._last_calls = 0
        module = root.get_submodule(source.path)
        patches.add_hook(
            module, module.register_forward_pre_hook(self._on_source, with_kwargs=True)
        )
        # Registered after the source's hook but put first: when the root is the source, the
        # evaluation opens before it ticks.
        patches.add_hook(root, root.register_forward_pre_hook(self._on_root_call, prepend=True))
        patches.add_hook(root, root.register_forward_hook(self._on_root_return))

    def forget(self) -> None:
        """Start afresh (a reset): no evaluation is open, no double firing is suspected."""
        self._ticks_in_call = None
        self._last_calls = -1  # branch_calls() counts from 0: the next tick is not suspect

    def check_failed(self) -> None:
        """Run ``on_failure`` if the last evaluation started through the root never returned."""
        if self._ticks_in_call is not None:
            self._ticks_in_call = None
            logger.info("smoothcache: a model call raised; the generation in progress is dropped")
            if self._on_failure is not None:
                self._on_failure()

    @torch.compiler.disable
    def _on_root_call(self, _module: nn.Module, _args: tuple[Any, ...]) -> None:
        self.check_failed()
        self._ticks_in_call = 0

    @torch.compiler.disable
    def _on_root_return(self, _module: nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        self._ticks_in_call = None
        if self._after_call is not None:
            self._after_call()

    @torch.compiler.disable
    def _on_source(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls = self._branch_calls()
        if self._ticks_in_call is not None:
            twice = self._ticks_in_call > 0
            self._ticks_in_call += 1
        else:
            twice = self._clock.ticks > 0 and calls == self._last_calls
        if twice:
            self._clock.reset()
            raise AdapterError(
                f"adapter {self._adapter_name!r}: its timestep source "
                f"{self._source_path or '<root>'!r} fired twice with no branch call in between, "
                "so it is called more than once per model evaluation; the adapter must name a "
                "module that receives the timestep exactly once per evaluation. (If instead the "
                "previous model call raised before any branch ran, call session.reset() first: "
                "this model is called through its forward, so the failure was not seen.)"
            )
        self._last_calls = calls
        if self._before_tick is not None:
            self._before_tick()
        try:
            timestep = self._read(args, kwargs)
        except Exception as exc:
            raise AdapterError(
                f"adapter {self._adapter_name!r}: reading the timestep from the arguments of "
                f"{self._source_path or '<root>'!r} raised {exc!r}; the adapter's timestep "
                "source does not fit how this model is called"
            ) from exc
        self._clock.tick(timestep)
        if self._after_tick is not None:
            self._after_tick()


def watch_runs(patches: Patches, holder: Any, root: nn.Module, on_run: Callable[[], None]) -> bool:
    """Call ``on_run`` at the start of every run of the pipeline ``holder``, if it has one.

    A diffusers pipeline calls ``scheduler.set_timesteps`` once at the start of each run; an
    instance attribute wrapping it marks the run boundary, so a run whose timesteps continue
    the previous run's is still a new generation. Returns whether a scheduler was found
    (``holder`` is the denoiser itself, or holds no scheduler with ``set_timesteps``: then runs
    are told apart by their timesteps alone).
    """
    if holder is root:
        return False
    scheduler = getattr(holder, "scheduler", None)
    original = getattr(scheduler, "set_timesteps", None)
    if not callable(original) or not hasattr(scheduler, "__dict__"):
        return False

    @functools.wraps(original)  # pipelines inspect its signature (retrieve_timesteps)
    def set_timesteps(*args: Any, **kwargs: Any) -> Any:
        on_run()
        return original(*args, **kwargs)

    patches.set_attributes(scheduler, set_timesteps=set_timesteps)
    return True
