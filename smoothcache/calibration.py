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

:func:`measure_sensitivity` adds what the schedule search (``method="sensitivity"``) needs: how
much one step of reuse changes the final output, measured by rerunning the sampler once per step
with that step reused.
"""

from __future__ import annotations

import bisect
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothcache.adapter import Adapter
from smoothcache.binding import denoisers, measured_branches, resolve, timestep_source
from smoothcache.clock import StepClock
from smoothcache.curves import ALL_BRANCHES, ErrorCurves, Sensitivity, all_but
from smoothcache.engine import enabled
from smoothcache.errors import AdapterError, ArgumentError, CalibrationError, StepCountError
from smoothcache.forecast_search import ForecastErrors, combo_weights, forecast_combos, reach
from smoothcache.patching import Patches
from smoothcache.schedule import MAX_ORDER, Schedule
from smoothcache.watch import EvaluationWatch, watch_runs

# Floor of the denominator ||O_t||_1, so an all-zero output gives a large, finite error.
_TINY = 1e-12
# Initial per-slot step capacity; slots grow by doubling if a run is longer.
_CAPACITY = 64

#: Called at the first model call of every step with (run index, step index).
StepCallback = Callable[[int, int], None]
#: Called after every sampler run of :func:`measure_sensitivity` with (runs done, runs in all).
RunCallback = Callable[[int, int], None]


class _ForecastSums:
    """Running forecast-error statistics of one branch in one pass, on the outputs' device.

    ``weights`` is :func:`~smoothcache.forecast_search.combo_weights`' matrix (combos sorted by
    how far back they read, ``reaches``); at a step where the last ``d`` outputs are known, the
    combos with ``reach <= d`` are measured with one matrix product over those outputs.
    ``stats[0]``, ``stats[1]`` and ``stats[2]`` hold, per combo and step, the sum, the sum of
    squares and the largest of the per-sample errors; ``counts`` (host) the samples.
    """

    def __init__(self, weights: np.ndarray, reaches: list[int], device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.weights = torch.from_numpy(weights).to(device=device, dtype=torch.float32)
        self.reaches = reaches
        self.depth = weights.shape[1] - 1  # outputs back; column 0 is the current one
        self.stats = torch.zeros(3, len(reaches), _CAPACITY, dtype=dtype, device=device)
        self.counts = np.zeros((len(reaches), _CAPACITY), dtype=np.int64)

    def fit(self, capacity: int) -> None:
        """Grow the per-step statistics to ``capacity`` steps."""
        old = self.counts.shape[1]
        if capacity <= old:
            return
        stats = self.stats.new_zeros(3, len(self.reaches), capacity)
        stats[..., :old] = self.stats
        counts = np.zeros((len(self.reaches), capacity), dtype=np.int64)
        counts[:, :old] = self.counts
        self.stats, self.counts = stats, counts

    def record(
        self, step: int, values: torch.Tensor, norm: torch.Tensor, back: list[torch.Tensor]
    ) -> None:
        """Add the errors at ``step`` of every combo readable from ``back`` (newest first)."""
        usable = bisect.bisect_right(self.reaches, len(back))
        if not usable:
            return
        depth = self.reaches[usable - 1]
        history = torch.stack([values, *(b.float() for b in back[:depth])])  # (1 + depth, ...)
        residuals = torch.einsum("cd,dbf->cbf", self.weights[:usable, : depth + 1], history)
        errors = torch.linalg.vector_norm(residuals, ord=1, dim=2)
        errors = errors / norm.clamp_min(_TINY)  # (combos, batch)
        dtype = self.stats.dtype
        self.stats[0, :usable, step].add_(errors.sum(1, dtype=dtype))
        self.stats[1, :usable, step].add_(errors.square().sum(1, dtype=dtype))
        worst = self.stats[2, :usable, step]
        torch.maximum(worst, errors.amax(1).to(dtype), out=worst)
        self.counts[:usable, step] += values.shape[0]


class _Slot:
    """Running error sums of one branch in one pass, on the device of the branch's outputs.

    ``sums[0, j - 1, t]`` and ``sums[1, j - 1, t]`` hold the sum and the sum of squares of the
    per-sample lag-``j`` errors at step ``t``; ``counts`` (host, plain numbers: batch sizes are
    known without reading the device) the number of samples behind them. ``mass[t]`` adds up
    ``||O_t||_1`` over samples: NaN or inf anywhere in an output makes it non-finite, which is how
    :meth:`Recorder.curves` finds bad outputs without a check per call. ``ring`` keeps
    ``(step, output)`` for the last ``lookahead`` outputs.
    """

    def __init__(
        self, lookahead: int, device: torch.device, forecast: _ForecastSums | None = None
    ) -> None:
        self.lookahead = lookahead
        dtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        self.sums = torch.zeros(2, lookahead, _CAPACITY, dtype=dtype, device=device)
        self.mass = torch.zeros(_CAPACITY, dtype=dtype, device=device)
        self.counts = np.zeros((lookahead, _CAPACITY), dtype=np.int64)
        self.forecast = forecast
        depth = max(lookahead, forecast.depth if forecast is not None else 0)
        self.ring: deque[tuple[int, torch.Tensor]] = deque(maxlen=depth)

    def _fit(self, step: int) -> None:
        capacity = self.counts.shape[1]
        if step < capacity:
            return
        size = max(2 * capacity, step + 1)
        sums = self.sums.new_zeros(2, self.lookahead, size)
        sums[..., :capacity] = self.sums
        mass = self.mass.new_zeros(size)
        mass[:capacity] = self.mass
        counts = np.zeros((self.lookahead, size), dtype=np.int64)
        counts[:, :capacity] = self.counts
        self.sums, self.mass, self.counts = sums, mass, counts
        if self.forecast is not None:
            self.forecast.fit(size)

    def record(self, step: int, output: torch.Tensor) -> None:
        """Add the errors of ``output`` (batch first) against the buffered earlier outputs.

        About fifteen small kernels per call (two more per lag) and no host read: the lags are
        stacked, reduced together and added to the running sums with one in-place add.
        """
        self._fit(step)
        with torch.no_grad():
            current = output.detach().reshape(output.shape[0], -1)
            values = current.float()
            norm = torch.linalg.vector_norm(values, ord=1, dim=1)  # ||O_t||_1 per sample
            self.mass[step].add_(norm.sum(dtype=self.mass.dtype))
            # Newest first, so lags ascend. Samplers may change the batch between steps: a pair
            # of outputs of different shapes is not comparable and is skipped.
            pairs = [
                (step - before, previous)
                for before, previous in reversed(self.ring)
                if 1 <= step - before <= self.lookahead and previous.shape == current.shape
            ]
            if pairs:
                diffs = [
                    torch.linalg.vector_norm(torch.sub(values, previous), ord=1, dim=1)
                    for _, previous in pairs
                ]
                errors = torch.stack(diffs) / norm.clamp_min(_TINY)  # (lags, batch)
                dtype = self.sums.dtype
                stats = torch.stack(
                    (errors.sum(1, dtype=dtype), errors.square().sum(1, dtype=dtype))
                )
                lags = [lag for lag, _ in pairs]
                if lags[-1] - lags[0] == len(lags) - 1:  # consecutive: one add
                    self.sums[:, lags[0] - 1 : lags[-1], step].add_(stats)
                else:
                    for i, lag in enumerate(lags):
                        self.sums[:, lag - 1, step].add_(stats[:, i])
                for lag in lags:
                    self.counts[lag - 1, step] += current.shape[0]
            if self.forecast is not None:
                back = []  # the outputs 1, 2, ... steps back, as long as none is missing
                for before, previous in reversed(self.ring):
                    if before != step - len(back) - 1 or previous.shape != current.shape:
                        break
                    back.append(previous)
                self.forecast.record(step, values, norm, back)
            self.ring.append((step, current.clone()))  # a copy: callers may modify outputs


class Recorder:
    """Records calibration errors of one model until :meth:`close`; see :func:`calibrating`.

    ``model`` is a denoiser or an object holding one (a pipeline); ``adapter`` forces an adapter
    by name or instance; ``on_step`` is called with ``(run, step)`` at the first model call of
    every step (the CLI drives its progress bar with it); ``metadata`` is added to the curves'
    metadata (e.g. the solver); the keys the recorder sets itself (model, adapter, steps ...) win.
    ``orders`` is the highest forecast order whose errors are measured besides reuse's (0 to
    :data:`~smoothcache.schedule.MAX_ORDER`; 0 measures none): for every order, lag ``j`` and
    spacing ``g <= lookahead + 1`` (:mod:`smoothcache.forecast_search`). That keeps the last
    ``lookahead + orders * (lookahead + 1)`` outputs of every branch and pass instead of the last
    ``lookahead``.
    """

    def __init__(
        self,
        model: Any,
        lookahead: int = 3,
        adapter: str | Adapter | None = None,
        *,
        on_step: StepCallback | None = None,
        metadata: Mapping[str, Any] | None = None,
        orders: int = MAX_ORDER,
    ) -> None:
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
            raise CalibrationError(
                f"lookahead must be a positive integer (the longest reuse run to measure, e.g. "
                f"3), found {lookahead!r}"
            )
        if isinstance(orders, bool) or not isinstance(orders, int) or not 0 <= orders <= MAX_ORDER:
            raise CalibrationError(
                f"orders must be an integer 0..{MAX_ORDER} (the highest forecast order to "
                f"measure; 0 measures reuse only), found {orders!r}"
            )
        self._combos = forecast_combos(lookahead, orders) if orders else []
        self._combo_weights = combo_weights(self._combos) if orders else None
        self._reaches = [reach(c) for c in self._combos]
        root, chosen = resolve(model, adapter)
        # Every denoiser of the pipeline (Wan 2.2's second expert takes over partway), one clock;
        # group members follow their leader's schedule and are not measured.
        roots = denoisers(model, root, chosen)
        pairs = measured_branches(roots, chosen)
        sources = [(denoiser, timestep_source(denoiser, chosen)) for _, denoiser in roots]
        self.model = root
        self.adapter = chosen
        self.branches = [b for b, _ in pairs]
        self.lookahead = lookahead
        self.num_steps: int | None = None
        self.runs = 0
        self._metadata = dict(metadata or {})
        self._on_step = on_step
        self._slots: list[list[_Slot]] = [[] for _ in pairs]
        self._calls = 0
        self._samples = 0
        self._open = False
        self._timesteps: list[float] | None = None
        self._run_timesteps: list[float] = []
        self._timesteps_differ = False
        self.clock = StepClock(None, on_generation=self._start_run, on_generation_end=self._end_run)
        self._patches = Patches(owner=f"calibration with adapter {chosen.name!r}")
        self.active = False
        try:
            self._patches.hold(
                [
                    *(denoiser for _, denoiser in roots),
                    *(denoiser.get_submodule(source.path) for denoiser, source in sources),
                    *(m for _, m in pairs),
                ]
            )
            self._watches = [
                EvaluationWatch(
                    self._patches,
                    denoiser,
                    source,
                    self.clock,
                    self._branch_calls,
                    chosen.name,
                    after_tick=self._after_tick,
                    on_failure=self._drop_run,
                )
                for denoiser, source in sources
            ]
            watch_runs(self._patches, model, root, self._new_run)
            for index, (_, module) in enumerate(pairs):
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
                    forecast = _ForecastSums(self._combo_weights, self._reaches, tensor.device)
                slots.append(_Slot(self.lookahead, tensor.device, forecast))
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
        shape = (len(self.branches), passes, lookahead, steps)
        first = np.zeros(shape)
        second = np.zeros(shape)
        count = np.zeros(shape, dtype=np.int64)
        bad = np.zeros((len(self.branches), steps), dtype=bool)
        for b, slots in enumerate(self._slots):
            for p, slot in enumerate(slots):
                sums = slot.sums[..., :steps].to("cpu", torch.float64).numpy()
                first[b, p], second[b, p] = sums[0], sums[1]
                count[b, p] = slot.counts[:, :steps]
                bad[b] |= ~np.isfinite(slot.mass[:steps].to("cpu", torch.float64).numpy())
        if bad.any():
            step = int(np.flatnonzero(bad.any(axis=0))[0])
            branch = self.branches[int(np.flatnonzero(bad[:, step])[0])]
            raise CalibrationError(
                f"branch {branch.path!r} produced NaN or inf at step {step} during calibration; "
                "the errors are meaningless. Check the model's dtype (float16 overflow?) and "
                "inputs, then calibrate again"
            )
        seen = count > 0
        mean = np.divide(first, count, out=np.full(shape, np.nan), where=seen)
        square = np.divide(second, count, out=np.full(shape, np.nan), where=seen)
        std = np.sqrt(np.maximum(square - mean * mean, 0.0))  # NaN where unseen stays NaN
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
        forecast = self._forecast_errors(passes, steps) if self._combos else None
        return ErrorCurves(self.branches, mean, std, count, metadata, forecast=forecast)

    def _forecast_errors(self, passes: int, steps: int) -> ForecastErrors:
        """The forecast statistics of every slot as :class:`ForecastErrors` (reads the device)."""
        shape = (len(self.branches), passes, len(self._combos), steps)
        stats = np.zeros((3, *shape))
        count = np.zeros(shape, dtype=np.int64)
        for b, slots in enumerate(self._slots):
            for p, slot in enumerate(slots):
                assert slot.forecast is not None
                stats[:, b, p] = slot.forecast.stats[..., :steps].to("cpu", torch.float64).numpy()
                count[b, p] = slot.forecast.counts[:, :steps]
        seen = count > 0
        nan = np.full(shape, np.nan)
        mean = np.divide(stats[0], count, out=nan.copy(), where=seen)
        square = np.divide(stats[1], count, out=nan.copy(), where=seen)
        worst = np.where(seen, stats[2], np.nan)
        return ForecastErrors(tuple(self._combos), mean, square, worst, count)

    def close(self) -> None:
        """Restore the model exactly, then check the last run's step count. Idempotent."""
        if not self.active:
            return
        self._restore()
        self._close_run()

    def _restore(self) -> None:
        try:
            self._patches.undo()  # completes, then re-raises an interrupt that arrived meanwhile
        finally:
            self.active = self._patches.pending
            if not self.active:  # no cycle through the recorder keeps the model alive
                self._watches = []
                self.clock.detach()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        elif self.active:
            self._restore()

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return (
            f"<smoothcache.Recorder {state} adapter={self.adapter.name!r} "
            f"branches={len(self.branches)} lookahead={self.lookahead} runs={self.runs}>"
        )


@contextmanager
def calibrating(
    model: Any,
    lookahead: int = 3,
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


def _final_output(output: Any) -> torch.Tensor:
    """The tensor a sensitivity run returned; anything else is a :class:`CalibrationError`."""
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(output)
    if not isinstance(output, torch.Tensor) or output.numel() == 0:
        raise CalibrationError(
            f"run() must return the final output as a non-empty tensor, found "
            f"{type(output).__name__}; for a diffusers pipeline return "
            "pipe(..., output_type='pt').images (or output_type='latent')"
        )
    if not torch.isfinite(output).all():
        raise CalibrationError(
            "run() returned NaN or inf without any caching; fix the sampler before measuring"
        )
    return output.detach()


_NOT_DETERMINISTIC = (
    "run() returned a different output on a second call; it must be deterministic: seed its "
    "noise inside (e.g. generator=torch.Generator().manual_seed(0) per call)"
)


def measure_sensitivity(
    model: Any,
    run: Callable[[], Any],
    curves: ErrorCurves | None = None,
    *,
    per_block: bool = False,
    lookahead: int = 3,
    adapter: str | Adapter | None = None,
    on_run: RunCallback | None = None,
) -> ErrorCurves:
    """Measure how one step of reuse changes the final output; returns curves that carry it.

    ``run()`` samples the calibration batch and returns the final output as a tensor (images or
    latents). It must be deterministic: seed its noise inside, so every call starts from the
    same noise. ``curves`` are this model's error curves for the same sampler; without them,
    the first run is recorded with :func:`calibrating` (at ``lookahead``) to make them.

    For a group of branches and a step ``t`` of the ``N`` steps, one run reuses at step ``t``
    the group's outputs of step ``t - 1`` and computes everything else; the change of the final
    output against a run without caching is the response ``P[t]``. The groups are every branch
    at once, then every branch but one kind, for each kind (if the model has several), and with
    ``per_block=True`` every branch but one block, for each block. The result keeps the grams of
    the responses averaged over the output's elements (:class:`Sensitivity`), from which
    ``curves.schedule(compute_fraction=..., method="sensitivity")`` predicts the error of a
    schedule.

    Cost: ``2 + groups * (N - 2)`` runs of ``run()``: one without caching (the calibration run
    when ``curves`` is not given), one with a schedule that computes everything (it must be
    bit-identical: that checks that ``run()`` is deterministic), and one per group and step
    between the first and the last. ``on_run(done, total)`` is called after each.
    """
    started = time.perf_counter()
    baseline = None
    if curves is None:
        with calibrating(model, lookahead, adapter) as recorder:
            baseline = _final_output(run())
        curves = recorder.curves()
    else:
        curves.check_model(model, adapter)
    n = curves.num_steps
    everything = {kind: [1] * n for kind in curves.kinds}
    groups: list[tuple[str, tuple[str, ...]]] = [(ALL_BRANCHES, ())]  # (name, keys that compute)
    if len(curves.kinds) > 1:
        groups += [(all_but(kind), (kind,)) for kind in curves.kinds]
    blocks = dict.fromkeys(b.block for b in curves.branches)
    if per_block and len(blocks) > 1:
        for block in blocks:
            keys = tuple(b.key for b in curves.branches if b.block == block)
            groups.append((all_but(block=block), keys))
    total = 2 + len(groups) * (n - 2)
    done = 0 if baseline is None else 1
    if done and on_run is not None:
        on_run(done, total)

    def sample(rows: Mapping[str, list[int]] | None) -> torch.Tensor:
        nonlocal done
        if rows is None:
            output = _final_output(run())
        else:
            with enabled(model, rows, adapter):
                output = _final_output(run())
        done += 1
        if on_run is not None:
            on_run(done, total)
        return output

    if baseline is None:
        baseline = sample(None)
    if not torch.equal(sample(everything), baseline):
        raise CalibrationError(_NOT_DETERMINISTIC)
    reference = baseline.to(torch.float32 if baseline.device.type == "mps" else torch.float64)
    gram = np.zeros((len(groups), n, n))
    cross = np.zeros((len(groups), n, n))
    every: torch.Tensor | None = None  # responses of every branch reusing, (N - 2, elements)
    for index, (_, computing) in enumerate(groups):
        responses = []
        for step in range(1, n - 1):
            row = [1] * n
            row[step] = 0
            rows = {**dict.fromkeys(curves.kinds, row), **dict.fromkeys(computing, [1] * n)}
            responses.append((sample(rows).to(reference.dtype) - reference).reshape(-1))
        stacked = torch.stack(responses)
        if every is None:
            every = stacked
        size = stacked.shape[1]
        gram[index, 1:-1, 1:-1] = (stacked @ stacked.T / size).to("cpu", torch.float64).numpy()
        cross[index, 1:-1, 1:-1] = (every @ stacked.T / size).to("cpu", torch.float64).numpy()
    sensitivity = Sensitivity(
        tuple(name for name, _ in groups),
        gram,
        cross,
        {
            "runs": total,
            "seconds": round(time.perf_counter() - started, 3),
            "output_shape": list(baseline.shape),
        },
    )
    return curves.with_sensitivity(sensitivity)


def select_schedule(
    model: Any,
    run: Callable[[], Any],
    schedules: Sequence[Schedule | Mapping[str, Any] | str],
    *,
    adapter: str | Adapter | None = None,
    on_run: RunCallback | None = None,
) -> Schedule:
    """The schedule among ``schedules`` whose cached output is closest to the uncached one.

    ``run()`` samples a batch and returns the final output as a tensor, deterministically (seed
    its noise inside), as for :func:`measure_sensitivity`. Use samples that are *held out*: not
    the ones the curves were calibrated on, nor the ones you will judge the result on. Each
    schedule runs once; the distance is the mean squared error over all samples and elements
    (so one sample that breaks counts, as in a batch PSNR); ties go to the earlier schedule.
    The typical list is ``curves.forecast_candidates(compute_fraction=f)``: about ten
    schedules of one budget that differ in the forecast orders they allow (with their computes
    placed by the sensitivity when the curves carry one).

    Cost: ``2 + len(schedules)`` runs (the uncached output twice, to check that ``run()`` is
    deterministic). The returned schedule's metadata records every candidate's error
    (``selection_mse``, in the order given) and the index chosen (``selected``).
    """
    candidates = list(schedules)
    if not candidates:
        raise ArgumentError(
            "select_schedule needs at least one schedule to choose from, found none; pass e.g. "
            "curves.forecast_candidates(compute_fraction=0.3)"
        )
    total = 2 + len(candidates)
    done = 0

    def sample() -> Any:
        nonlocal done
        output = run()
        done += 1
        if on_run is not None:
            on_run(done, total)
        return output

    reference = _final_output(sample())
    if not torch.equal(_final_output(sample()), reference):
        raise CalibrationError(_NOT_DETERMINISTIC)
    reference = reference.to(torch.float32 if reference.device.type == "mps" else torch.float64)
    errors: list[float] = []
    applied: list[Schedule] = []  # as the sessions validated them
    for candidate in candidates:
        with enabled(model, candidate, adapter) as session:
            output = sample()
        applied.append(session.schedule)
        if not isinstance(output, torch.Tensor) or output.shape != reference.shape:
            raise CalibrationError(
                f"run() returned {type(output).__name__} "
                f"{tuple(getattr(output, 'shape', ()))} under a schedule but a tensor "
                f"{tuple(reference.shape)} without one; it must return the same final output"
            )
        error = float(((output.detach().to(reference.dtype) - reference) ** 2).mean())
        # a schedule whose output broke (NaN or inf) is never chosen
        errors.append(error if math.isfinite(error) else math.inf)
    best = errors.index(min(errors))  # the first of equals
    chosen = applied[best]
    metadata = {**chosen.metadata, "selection_mse": errors, "selected": best}
    return Schedule(rows=chosen.rows, metadata=metadata, orders=chosen.orders)
