"""Seeded sampler runs: the user's ``run(seed)``, or one built from a diffusers pipeline's own
call arguments, with and without gradients, and each sample's error against an uncached run.
:func:`~smoothcache.tune` and :func:`~smoothcache.fit_closed_loop` sample through them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from smoothcache.errors import ArgumentError, CalibrationError
from smoothcache.tuning import check_same_output

#: ``run(seed)`` samples one batch from ``seed`` and returns the final output as a tensor.
SeededRun = Callable[[int], Any]


def seeded_runs(
    model: Any, run: SeededRun | None, call: Mapping[str, Any] | None
) -> tuple[SeededRun, SeededRun]:
    """``run``, or a run of the pipeline ``model`` with ``call`` and a seeded generator; and
    the same run keeping gradients (a pipeline's ``__call__`` turns them off: its undecorated
    function runs instead)."""
    if (run is None) == (call is None):
        raise ArgumentError(
            "give exactly one of run (a function of a seed that samples a batch and returns "
            "the final output) or call= (a diffusers pipeline's own call arguments)"
        )
    if run is not None:
        if not callable(run):
            raise ArgumentError(f"run must be a function of a seed, found {type(run).__name__}")
        return run, run
    if not callable(model) or isinstance(model, torch.nn.Module):
        raise ArgumentError(
            f"call= runs a diffusers pipeline, but a {type(model).__name__} was given; pass "
            "the pipeline, or a run(seed) function for a model"
        )
    assert call is not None
    arguments = dict(call)
    for reserved in ("generator", "latents"):
        if reserved in arguments:
            raise ArgumentError(
                f"call= must not hold {reserved!r}: every run is seeded from the seeds "
                "arguments (tune's calibration_seed= and held_out_seed=, fit_closed_loop's seeds=)"
            )
    arguments.setdefault("output_type", "latent")

    undecorated = getattr(type(model).__call__, "__wrapped__", None)

    def pipeline_run(seed: int, graph: bool = False) -> Any:
        generator = torch.Generator().manual_seed(seed)
        if graph and undecorated is not None:
            output = undecorated(model, **arguments, generator=generator)
        else:
            output = model(**arguments, generator=generator)
        for name in ("images", "frames", "audios"):
            value = getattr(output, name, None)
            if isinstance(value, (torch.Tensor, np.ndarray)):
                return value  # some pipelines (DiT's) decode whatever output_type says
        raise CalibrationError(
            f"the pipeline returned {type(output).__name__} with no tensor images, frames or "
            "audios; pass output_type='latent' or 'pt' in call="
        )

    return pipeline_run, functools.partial(pipeline_run, graph=True)


def sample_errors(output: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Each sample's mean squared error against the uncached ``reference`` (float64), after
    checking that ``output`` is shaped like it."""
    check_same_output(output, reference)
    errors = ((output.to(torch.float64) - reference) ** 2).reshape(len(output), -1).mean(1)
    return errors.cpu().numpy()
