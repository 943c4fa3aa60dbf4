"""Closed-loop tuning: sampler runs with caching on, compared with the run without it.

Calibration (:func:`smoothcache.calibrating`) only watches the model compute every step; the
two functions here run the whole sampler again under trial schedules and look at its final
output. :func:`measure_sensitivity` reruns it once per step and group of branches with that
step reused, and keeps how the final output moves (what ``method="sensitivity"`` and the
weighted forecast candidates need); :func:`select_schedule` runs each candidate schedule once on
held-out samples and keeps the one whose output is closest to the uncached one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from smoothcache.adapter import Adapter
from smoothcache.calibration import calibrating
from smoothcache.curves import ErrorCurves
from smoothcache.engine import enabled
from smoothcache.errors import ArgumentError, CalibrationError
from smoothcache.measurements import ALL_BRANCHES, Sensitivity, all_but
from smoothcache.schedule import Schedule

#: Called after every sampler run with (runs done, runs in all).
RunCallback = Callable[[int, int], None]


def output_tensor(output: Any) -> torch.Tensor:
    """The tensor a sampler run returned (a NumPy array is taken too); anything else is a
    :class:`CalibrationError`."""
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(output)
    if not isinstance(output, torch.Tensor) or output.numel() == 0:
        raise CalibrationError(
            f"run() must return the final output as a non-empty tensor, found "
            f"{type(output).__name__}; for a diffusers pipeline return "
            "pipe(..., output_type='pt').images (or output_type='latent')"
        )
    return output.detach()


def final_output(output: Any) -> torch.Tensor:
    """The tensor an uncached run returned, which must be finite (what caching is compared to)."""
    output = output_tensor(output)
    if not torch.isfinite(output).all():
        raise CalibrationError(
            "run() returned NaN or inf without any caching; fix the sampler before measuring"
        )
    return output


def deterministic_reference(sample: Callable[[], Any]) -> torch.Tensor:
    """The uncached output of ``sample()``, sampled twice: the two must be bit-identical (the
    run seeds its noise inside), or every comparison with it would be noise."""
    reference = final_output(sample())
    if not torch.equal(final_output(sample()), reference):
        raise CalibrationError(NOT_DETERMINISTIC)
    return reference


def check_same_output(output: Any, reference: torch.Tensor) -> None:
    """A cached run must return a tensor shaped like the uncached one."""
    if not isinstance(output, torch.Tensor) or output.shape != reference.shape:
        raise CalibrationError(
            f"run() returned {type(output).__name__} "
            f"{tuple(getattr(output, 'shape', ()))} under a schedule but a tensor "
            f"{tuple(reference.shape)} without one; it must return the same final output"
        )


NOT_DETERMINISTIC = (
    "run() returned a different output on a second call; it must be deterministic: seed its "
    "noise inside (e.g. generator=torch.Generator().manual_seed(0) per call)"
)


def measure_sensitivity(
    model: Any,
    run: Callable[[], Any],
    curves: ErrorCurves | None = None,
    *,
    per_block: bool = False,
    lookahead: int = 7,
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
            baseline = final_output(run())
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
            output = final_output(run())
        else:
            with enabled(model, rows, adapter):
                output = final_output(run())
        done += 1
        if on_run is not None:
            on_run(done, total)
        return output

    if baseline is None:
        baseline = sample(None)
    if not torch.equal(sample(everything), baseline):
        raise CalibrationError(NOT_DETERMINISTIC)
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

    reference = deterministic_reference(sample)
    reference = reference.to(torch.float32 if reference.device.type == "mps" else torch.float64)
    errors: list[float] = []
    applied: list[Schedule] = []  # as the sessions validated them
    for candidate in candidates:
        with enabled(model, candidate, adapter) as session:
            output = sample()
        applied.append(session.schedule)
        check_same_output(output, reference)
        error = float(((output.detach().to(reference.dtype) - reference) ** 2).mean())
        # a schedule whose output broke (NaN or inf) is never chosen
        errors.append(error if math.isfinite(error) else math.inf)
    best = errors.index(min(errors))  # the first of equals
    chosen = applied[best]
    metadata = {**chosen.metadata, "selection_mse": errors, "selected": best}
    return dataclasses.replace(chosen, metadata=metadata)


class EvaluationCounter:
    """Counts denoiser evaluations, model calls times batch elements, while entered: a
    forward pre-hook on every denoiser, removed on exit (the batch is the first tensor
    argument's leading dimension)."""

    def __init__(self, roots: list[torch.nn.Module]) -> None:
        self.roots = roots
        self.evaluations = 0
        self._handles: list[Any] = []

    def _count(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                self.evaluations += int(value.shape[0])
                return

    def __enter__(self) -> EvaluationCounter:
        self._handles = [
            root.register_forward_pre_hook(self._count, with_kwargs=True) for root in self.roots
        ]
        return self

    def __exit__(self, *_: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
