"""Calibration: record how much each residual branch's output changes between denoising steps.

Inside ``with smoothcache.calibrating(model) as recorder:`` the sampler runs as usual, any number
of times, with any batch (several classes or prompts, guidance as one batch or as separate
calls). A forward hook on every branch the adapter declares compares each output with the
branch's last ``lookahead`` outputs of the same pass, per sample, on the output's own device,
and adds the relative L1 errors ``||O_t - O_{t-j}||_1 / ||O_t||_1`` to running sums. Steps and
passes come from the engine's step clock, so they mean exactly what they mean when caching.

Nothing is copied to the host until :meth:`Recorder.curves`, and the only outputs kept are the
last ``lookahead`` per branch and pass (a ring buffer), so memory does not grow with the number of
steps or runs. The reference implementation, by contrast, pooled each batch into one ratio,
read every error back to the host as it came, kept every error in Python lists and counted
steps across passes and pipeline calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothcache.adapter import Adapter
from smoothcache.binding import bind, measured_branches
from smoothcache.clock import StepClock
from smoothcache.curves import ErrorCurves
from smoothcache.errors import AdapterError, CalibrationError, StepCountError
from smoothcache.lifecycle import Attachment
from smoothcache.measurements import combo_weights, forecast_combos, reach
from smoothcache.patching import Patches
from smoothcache.recording import ForecastSums, Slot, error_arrays, forecast_errors
from smoothcache.schedule import MAX_ORDER

#: Called at the first model call of every step with (run index, step index).
StepCallback = Callable[[int, int], None]


def _check_depths(lookahead: Any, orders: Any) -> None:
    """Refuse a lookahead or forecast order a recorder cannot measure."""
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise CalibrationError(
            f"lookahead must be a positive integer (the longest reuse run to measure, e.g. "
            f"7), found {lookahead!r}"
        )
    if isinstance(orders, bool) or not isinstance(orders, int) or not 0 <= orders <= MAX_ORDER:
        raise CalibrationError(
            f"orders must be an integer 0..{MAX_ORDER} (the highest forecast order to "
            f"measure; 0 measures reuse only), found {orders!r}"
        )


class Recorder(Attachment):
    """Records calibration errors of one model until :meth:`close`; see :func:`calibrating`.

    ``model`` is a denoiser or an object holding one (a pipeline); ``adapter`` forces an adapter
    by name or instance; ``on_step`` is called with ``(run, step)`` at the first model call of
    every step (the CLI drives its progress bar with it); ``metadata`` is added to the curves'
    metadata (e.g. the solver); the keys the recorder sets itself (model, adapter, steps ...) win.
    ``orders`` is the highest forecast order whose errors are measured besides reuse's (0 to
    :data:`~smoothcache.schedule.MAX_ORDER`; 0 measures none): for every order, lag ``j`` and
    spacing ``g <= lookahead + 1`` (:mod:`smoothcache.measurements`). That keeps the last
    ``lookahead + orders * (lookahead + 1)`` outputs of every branch and pass instead of the last
    ``lookahead``. The default lookahead, 7, lets the forecast search skip runs of up to 7
    steps: schedules down to an eighth of the steps (lookahead 3 stops at a quarter).
    """

    def __init__(
        self,
        model: Any,
        lookahead: int = 7,
        adapter: str | Adapter | None = None,
        *,
        on_step: StepCallback | None = None,
        metadata: Mapping[str, Any] | None = None,
        orders: int = MAX_ORDER,
    ) -> None:
        _check_depths(lookahead, orders)
        self._combos = forecast_combos(lookahead, orders) if orders else []
        self._combo_weights = combo_weights(self._combos) if orders else None
        self._reaches = [reach(c) for c in self._combos]
        bound = bind(model, adapter)
        # Every denoiser of the pipeline (Wan 2.2's second expert takes over partway), one clock;
        # group members follow their leader's schedule and are not measured.
        pairs = measured_branches(bound.roots, bound.adapter)
        self.model = bound.model
        self.adapter = bound.adapter
        self.branches = [b for b, _ in pairs]
        self.lookahead = lookahead
        self.num_steps: int | None = None
        self.runs = 0
        self._metadata = dict(metadata or {})
        self._on_step = on_step
        self._slots: list[list[Slot]] = [[] for _ in pairs]
        self._calls = 0
        self._samples = 0
        self._open = False
        self._timesteps: list[float] | None = None
        self._run_timesteps: list[float] = []
        self._timesteps_differ = False
        self.clock = StepClock(None, on_generation=self._start_run, on_generation_end=self._end_run)
        self._patches = Patches(owner=f"calibration with adapter {self.adapter.name!r}")
        self.active = False
        try:
            modules = [m for _, m in pairs]
            self._watches = bound.attach(
                self._patches,
                modules,
                self.clock,
                self._branch_calls,
                self._new_run,
                after_tick=self._after_tick,
                on_failure=self._drop_run,
            )
            for index, module in enumerate(modules):
                self._patches.add_hook(module, module.register_forward_hook(self._hook(index)))
        except BaseException:
            self._patches.undo()
            raise
        self.active = True

    # -- hooks -------------------------------------------------------------------------------

    def _branch_calls(self) -> int:
        return self._calls

    def _after_tick(self) -> None:
        """Keep the timestep of each new step and report the step (the clock has just ticked)."""
        if self.clock.pass_idx == 0:
            timestep = self.clock.timestep
            assert timestep is not None  # the clock reads values in open-ended mode
            self._run_timesteps.append(timestep)
            if self._on_step is not None:
                self._on_step(self.runs, self.clock.step)

    def _hook(self, index: int) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        """The forward hook of branch ``index``: feeds its output to the slot of this pass."""
        slots = self._slots[index]
        clock = self.clock
        path = self.branches[index].path

        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
            step = clock.step
            if step < 0:
                raise AdapterError(
                    f"adapter {self.adapter.name!r}: branch {path!r} ran before the timestep "
                    "source was called, so the step is unknown; the adapter must name a module "
                    "that is called through __call__ once per evaluation"
                )
            self._calls += 1
            tensor = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
                raise AdapterError(
                    f"branch {path!r} returned {type(output).__name__}; calibration needs a "
                    "tensor with a batch dimension (or a tuple whose first item is one)"
                )
            while len(slots) <= clock.pass_idx:
                forecast = None
                if self._combo_weights is not None:
                    forecast = ForecastSums(self._combo_weights, self._reaches, tensor.device)
                slots.append(Slot(self.lookahead, tensor.device, forecast))
            if index == 0 and step == 0:
                self._samples += tensor.shape[0]
            slots[clock.pass_idx].record(step, tensor)

        # Like the engine's hooks: Python state, kept out of torch.compile tracing.
        return torch.compiler.disable(hook)

    # -- runs --------------------------------------------------------------------------------

    def _start_run(self) -> None:
        for slots in self._slots:
            for slot in slots:
                slot.ring.clear()
        self._run_timesteps = []
        self._open = True

    def _end_run(self, num_steps: int) -> None:
        self._open = False
        run = self.runs + 1
        if num_steps < 2:
            raise CalibrationError(
                f"calibration run {run} had {num_steps} step; calibration needs at least 2 steps "
                "per run"
            )
        if self.num_steps is None:
            self.num_steps = num_steps
        elif num_steps != self.num_steps:
            raise StepCountError(
                f"every run of one calibration must have the same number of steps: run 1 had "
                f"{self.num_steps} steps but run {run} had {num_steps}; calibrate each step count "
                "separately"
            )
        if self._timesteps is None:
            self._timesteps = list(self._run_timesteps)
        elif self._run_timesteps != self._timesteps and not self._timesteps_differ:
            self._timesteps_differ = True
            warnings.warn(
                f"calibration run {run} used other timesteps than run 1; the curves mix two "
                "samplers' steps (the metadata keeps run 1's timesteps)",
                UserWarning,
                stacklevel=2,
            )
        self.runs = run

    def _drop_run(self) -> None:
        """A model call raised: the run in progress ends there and is not counted.

        The errors it measured between outputs that were computed stay in the sums.
        """
        self._open = False
        self.clock.reset()

    def _new_run(self) -> None:
        """A pipeline run starts: end the one in progress (its step count is checked)."""
        for watch in self._watches:
            watch.check_failed()
        self._close_run()

    def _close_run(self) -> None:
        """End the run in progress, if any: the next model call starts a new one."""
        if self._open:
            steps = self.clock.step + 1
            self.clock.reset()
            self._end_run(steps)

    # -- public ------------------------------------------------------------------------------

    def curves(self) -> ErrorCurves:
        """The recorded errors as :class:`ErrorCurves`; the only point that reads the device.

        Called inside the ``with`` block, it ends the run in progress (the next model call
        starts a new run). Raises :class:`CalibrationError` when no run was recorded or a
        branch output held NaN or inf (naming the first such branch and step). The metadata's
        ``num_samples`` counts batch rows at step 0 of every run and pass: a guided batch of
        ``n`` labels counts ``2n``, whether guidance runs as one batch or as two calls.
        """
        self._close_run()
        passes = max(len(slots) for slots in self._slots)
        if self.runs == 0 or self.num_steps is None or passes == 0:
            raise CalibrationError(
                "no calibration run was recorded: run the sampler at least once inside "
                "`with smoothcache.calibrating(model) as recorder:` before calling curves()"
            )
        steps, lookahead = self.num_steps, self.lookahead
        bad, mean, std, count = error_arrays(self._slots, passes, lookahead, steps)
        if bad.any():
            step = int(np.flatnonzero(bad.any(axis=0))[0])
            branch = self.branches[int(np.flatnonzero(bad[:, step])[0])]
            raise CalibrationError(
                f"branch {branch.path!r} produced NaN or inf at step {step} during calibration; "
                "the errors are meaningless. Check the model's dtype (float16 overflow?) and "
                "inputs, then calibrate again"
            )
        metadata = {
            **self._metadata,
            "model": type(self.model).__qualname__,
            "adapter": self.adapter.name,
            "num_steps": steps,
            "lookahead": lookahead,
            "timesteps": self._timesteps,
            "num_samples": self._samples,
            "runs": self.runs,
            "passes": passes,
        }
        forecast = None
        if self._combos:
            forecast = forecast_errors(self._slots, self._combos, passes, steps)
        return ErrorCurves(self.branches, mean, std, count, metadata, forecast=forecast)

    def close(self) -> None:
        """Restore the model exactly, then check the last run's step count. Idempotent."""
        self.end()

    def _check_end(self) -> None:
        self._close_run()

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return (
            f"<smoothcache.Recorder {state} adapter={self.adapter.name!r} "
            f"branches={len(self.branches)} lookahead={self.lookahead} runs={self.runs}>"
        )


@contextmanager
def calibrating(
    model: Any,
    lookahead: int = 7,
    adapter: str | Adapter | None = None,
    *,
    on_step: StepCallback | None = None,
    metadata: Mapping[str, Any] | None = None,
    orders: int = MAX_ORDER,
) -> Iterator[Recorder]:
    """Record calibration errors of ``model`` while the block runs; the model is restored on exit.

    Run the sampler any number of times inside; every run must have the same number of steps
    (at least 2). ``recorder.curves()`` (inside or after the block) returns the
    :class:`ErrorCurves`. Calibrating and caching one model at once is an
    :class:`~smoothcache.AlreadyEnabledError`. See :class:`Recorder` for the arguments.
    """
    recorder = Recorder(
        model, lookahead, adapter, on_step=on_step, metadata=metadata, orders=orders
    )
    with recorder:
        yield recorder
