"""``smoothcache.tune``: from a model or pipeline and a compute budget to a schedule, in one call.

What it runs, in sampler runs of one batch each, within ``budget`` (12 by default):

1. one run of the *calibration* seed under :func:`~smoothcache.calibrating` (lookahead 7, more
   below 20% of the compute (:func:`~smoothcache.racing.tune_lookahead`),
   forecast errors of every order), which gives the curves;
2. one more run of the calibration seed with gradients, which estimates how much one step of
   reuse moves the final output (:func:`~smoothcache.estimate_sensitivity`: one replayed model
   evaluation per step and three reverse passes, instead of the ``2 + (kinds + 1) * (steps - 2)``
   runs of :func:`~smoothcache.measure_sensitivity`);
3. the candidates (:func:`~smoothcache.racing.tune_candidates`): the forecast family of those
   curves at the budget (:meth:`~smoothcache.ErrorCurves.forecast_candidates`, the plain forecast
   search first, the others placing their computes by
   the sensitivity) and the safe references a user would
   otherwise pick, the best uniform schedule of the same compute with reuse (FORA) and with
   order-2 forecasts (TaylorSeer's idea);
4. the held-out race (:mod:`smoothcache.racing`): the *held-out* seed without caching, twice
   (the second must be bit-identical: ``run`` is deterministic), then once under every candidate
   that fits the budget (the safe references and the family's first members); runs left over
   buy rounds on the next seeds (``held_out_seed + 1``, ..., never ``calibration_seed``) for the
   better half of the forecast candidates, until the budget is spent.

The choice guards the tail (:func:`~smoothcache.racing.choose`): a candidate wins on its held-out
batch error only if its worst samples are not much worse than the safe references' and its lead
is larger than the spread of the per-sample errors can explain; otherwise the safer candidate
wins.

The result (:class:`Tuned`) keeps the schedule and a report: what ran, its cost in denoiser
evaluations (model calls times batch elements, counted), seconds, and every candidate's held-out
errors.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from smoothcache.adapter import Adapter
from smoothcache.binding import bind
from smoothcache.calibration import calibrating
from smoothcache.curves import ErrorCurves
from smoothcache.engine import enabled
from smoothcache.errors import ArgumentError, CalibrationError
from smoothcache.racing import (
    TUNE_FITTED,
    Candidate,
    choose,
    later_rounds,
    plan,
    round_runs,
    scored,
    survivors,
    tune_candidates,
    tune_lookahead,
)
from smoothcache.response import SensitivityUnavailable, estimate_sensitivity
from smoothcache.schedule import Schedule
from smoothcache.searches.base import check_fraction
from smoothcache.tuning import (
    EvaluationCounter,
    check_same_output,
    deterministic_reference,
    final_output,
    output_tensor,
)

#: ``run(seed)`` samples one batch from ``seed`` and returns the final output as a tensor.
SeededRun = Callable[[int], Any]

#: tune's default budget, in sampler runs of one batch (the sensitivity's run counts as one)
BUDGET = 12


@dataclass(frozen=True)
class Tuned:
    """What :func:`tune` returns: the ``schedule`` and the report of how it was chosen."""

    schedule: Schedule
    compute_fraction: float
    candidates: list[Candidate]
    chosen: int
    reason: str
    runs: int
    evaluations: int
    seconds: float
    sensitivity: str  #: how the final output's sensitivity was found, or why it was not
    curves: ErrorCurves = field(repr=False)  #: the calibration's (with the sensitivity)
    signal: float = field(repr=False)  #: mean square of the uncached held-out output

    @property
    def expected_snr_db(self) -> float:
        """The chosen schedule's held-out signal-to-error ratio, ``10 log10(signal / mse)``."""
        return _decibels(self.signal, self.candidates[self.chosen].mse)

    def report(self) -> str:
        """The report as text: cost, the candidates' held-out errors and the choice."""
        lines = [
            f"tuned for compute <= {self.compute_fraction:g}: {self.runs} sampler runs, "
            f"{self.evaluations:,} denoiser evaluations (model calls x batch elements), "
            f"{self.seconds:.1f} s",
            f"sensitivity: {self.sensitivity}",
            "held-out signal-to-error ratio (dB) of every candidate, batch and worst samples, "
            "on the held-out samples it ran:",
        ]
        for index, c in enumerate(self.candidates):
            mark = "*" if index == self.chosen else " "
            lines.append(
                f" {mark} {c.label:<34} {c.compute_fraction:6.1%}  "
                f"{_decibels(self.signal, c.mse):6.2f}  {_decibels(self.signal, c.tail):6.2f}  "
                f"{c.samples:4d}"
            )
        lines.append(f"chosen: {self.candidates[self.chosen].label} ({self.reason})")
        return "\n".join(lines)


def _decibels(signal: float, error: float) -> float:
    return math.inf if error == 0 else 10 * math.log10(signal / error)


def tune(
    model: Any,
    run: SeededRun | None = None,
    *,
    compute_fraction: float,
    call: Mapping[str, Any] | None = None,
    calibration_seed: int = 1000,
    held_out_seed: int = 2000,
    adapter: str | Adapter | None = None,
    sensitivity: bool | None = None,
    budget: int = BUDGET,
    on_run: Callable[[int, int], None] | None = None,
) -> Tuned:
    """The best schedule within ``compute_fraction`` of the branch-steps, chosen on held-out
    samples with a guard on their tail (see the module's text for what it runs and why).

    ``run(seed)`` samples one batch from ``seed`` and returns the final output (images or
    latents) as a tensor; for a diffusers pipeline, give ``call`` instead: the pipeline's own
    call arguments (prompt embeddings or class labels, ``num_inference_steps``, guidance, size),
    and each run is ``model(**call, generator=..., output_type="latent")`` unless ``call`` names
    its own ``output_type``. The calibration batch comes from ``calibration_seed``, the held-out
    one from ``held_out_seed``: samples you will not judge the result on. ``on_run(done, total)``
    is called after every sampler run.

    ``sensitivity``: the final output's sensitivity to each step is estimated from the
    calibration batch in one run with gradients (:func:`~smoothcache.estimate_sensitivity`), so
    that the forecast family places its computes where an error is amplified; ``None`` (the
    default) goes on without it, with a warning, when ``run`` keeps no gradients; ``True``
    makes that an error; ``False`` skips it.

    ``budget``: the sampler runs tune may make in all (the sensitivity's run counts as one; it
    costs about five in time). The default 12 runs the safe references and the first six members
    of the forecast family once; more runs more members, then more held-out rounds for the best
    of them; fewer than the calibration and one held-out round need is an ArgumentError.
    """
    fraction = check_fraction(compute_fraction)
    least = (1 if sensitivity is False else 2) + 3  # calibration, two uncached, one candidate
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < least:
        raise ArgumentError(
            f"budget must be a number of sampler runs >= {least} (calibration, the sensitivity, "
            f"two uncached held-out runs and one candidate), found {budget!r}"
        )
    if calibration_seed == held_out_seed:
        raise ArgumentError(
            f"calibration_seed and held_out_seed are both {held_out_seed}: the choice must be "
            "made on samples the calibration did not see; choose another held_out_seed"
        )
    sampler, graph_run = _sampler(model, run, call)
    runs = _Runs(sampler, model, adapter, on_run)
    started = time.perf_counter()
    with calibrating(model, tune_lookahead(fraction), adapter) as recorder:
        runs.sample(calibration_seed, report=False)  # reported once the total is known
    curves = recorder.curves()
    note = "not estimated (sensitivity=False)"
    if sensitivity is not False:
        with runs.counter:
            curves, note = _sensitivity(
                model, graph_run, calibration_seed, curves, adapter, bool(sensitivity)
            )
        runs.done += 1
    schedules = tune_candidates(curves, fraction, TUNE_FITTED)
    family = [s for s in schedules if not s[2]]
    safe = [s for s in schedules if s[2]]
    rounds = plan(len(family), len(safe), budget - runs.done)
    runs.total = runs.done + round_runs(rounds, len(safe)) + 1  # round 1's second uncached run
    runs.report()
    entered = [*family[: rounds[0]], *safe]
    seeds = (seed for seed in itertools.count(held_out_seed) if seed != calibration_seed)
    candidates, alive, signal = _race(runs, entered, seeds, budget)
    picked, reason = choose([candidates[i] for i in alive])
    chosen = alive[picked]
    label, schedule, _ = entered[chosen]
    seconds = time.perf_counter() - started
    how = {
        "chosen": label,
        "reason": reason,
        "runs": runs.done,
        "held_out_samples": candidates[chosen].samples,
        "evaluations": runs.counter.evaluations,
        "seconds": round(seconds, 3),
        "sensitivity": note,
    }
    schedule = dataclasses.replace(schedule, metadata={**schedule.metadata, "tuned": how})
    return Tuned(
        schedule,
        fraction,
        candidates,
        chosen,
        reason,
        runs.done,
        runs.counter.evaluations,
        seconds,
        note,
        curves,
        signal,
    )


class _Runs:
    """tune's sampler runs: counted (evaluations and runs), without gradients, reported."""

    def __init__(
        self,
        sampler: SeededRun,
        model: Any,
        adapter: str | Adapter | None,
        on_run: Callable[[int, int], None] | None,
    ) -> None:
        self.sampler, self.model, self.adapter, self.on_run = sampler, model, adapter, on_run
        self.counter = EvaluationCounter([root for _, root in bind(model, adapter).roots])
        self.done = self.total = 0  # the total is known once the candidates are

    def report(self) -> None:
        if self.on_run is not None:
            self.on_run(self.done, self.total)

    def sample(
        self, seed: int, schedule: Schedule | None = None, report: bool = True
    ) -> torch.Tensor:
        """One run of ``seed``, uncached (its output must be finite) or under ``schedule``."""
        with self.counter, torch.no_grad():  # only the sensitivity's run keeps gradients
            if schedule is None:
                output = final_output(self.sampler(seed))
            else:
                with enabled(self.model, schedule, self.adapter):
                    output = output_tensor(self.sampler(seed))
        self.done += 1
        if report:
            self.report()
        return output


def _race(
    runs: _Runs,
    entered: list[tuple[str, Schedule, bool]],
    seeds: Iterator[int],
    budget: int,
) -> tuple[list[Candidate], list[int], float]:
    """The held-out rounds (:mod:`smoothcache.racing`), one per seed of ``seeds``: every
    candidate scored on all the rounds it ran, the indices of the last round's, and the
    uncached outputs' mean square."""
    errors: list[list[np.ndarray]] = [[] for _ in entered]
    alive = list(range(len(entered)))
    squares = []
    while True:
        seed = next(seeds)
        if not squares:
            reference = deterministic_reference(lambda s=seed: runs.sample(s))
        else:
            reference = runs.sample(seed)
        reference = reference.to(torch.float64)
        squares.append(float((reference**2).mean()))
        for i in alive:
            _, schedule, _ = entered[i]
            errors[i].append(sample_errors(runs.sample(seed, schedule), reference))
        candidates = [
            scored(label, _share(schedule), safe, np.concatenate(e))
            for (label, schedule, safe), e in zip(entered, errors)
        ]
        following = [alive[j] for j in survivors([candidates[i] for i in alive])]
        safe = sum(entered[i][2] for i in following)
        planned = later_rounds(len(following) - safe, safe, budget - runs.done)
        runs.total = runs.done + round_runs(planned, safe)
        if not planned:
            runs.report()
            return candidates, alive, float(np.mean(squares))
        alive = following


def _share(schedule: Schedule) -> float:
    """The share of branch-steps ``schedule`` computes (as its search counted it)."""
    return schedule.metadata.get("compute_fraction", schedule.compute_fraction)


def held_out_snr_db(
    model: Any,
    schedules: Mapping[str, Schedule],
    run: SeededRun | None = None,
    *,
    call: Mapping[str, Any] | None = None,
    seed: int = 2000,
    adapter: str | Adapter | None = None,
) -> dict[str, float]:
    """Each schedule's signal-to-error ratio in dB (the uncached output's mean square over the
    mean squared error against it) on the batch of ``seed`` (``run`` or ``call`` as for
    :func:`tune`): ``1 + len(schedules)`` runs."""
    runs = _Runs(_sampler(model, run, call)[0], model, adapter, None)
    reference = runs.sample(seed).to(torch.float64)
    errors = {
        name: float(sample_errors(runs.sample(seed, schedule), reference).mean())
        for name, schedule in schedules.items()
    }
    signal = float((reference**2).mean())
    return {name: _decibels(signal, error) for name, error in errors.items()}


def sample_errors(output: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Each sample's mean squared error against the uncached ``reference`` (float64), after
    checking that ``output`` is shaped like it."""
    check_same_output(output, reference)
    errors = ((output.to(torch.float64) - reference) ** 2).reshape(len(output), -1).mean(1)
    return errors.cpu().numpy()


def _sensitivity(
    model: Any,
    run: SeededRun,
    seed: int,
    curves: Any,
    adapter: str | Adapter | None,
    required: bool,
) -> tuple[Any, str]:
    """``curves`` with the sensitivity estimated on the calibration batch, and a note; without
    it (and a warning) when ``run`` keeps no gradients, unless it is ``required``."""
    try:
        estimated = estimate_sensitivity(model, lambda: run(seed), curves, adapter=adapter)
    except SensitivityUnavailable as exc:
        if required:
            raise
        warnings.warn(f"tune goes on without the sensitivity: {exc}", stacklevel=3)
        return curves, f"not estimated: {exc}"
    meta = estimated.sensitivity.metadata
    return estimated, (
        f"estimated in one run with gradients and {meta['reverse_passes']} reverse passes, "
        f"{meta['seconds']:.1f} s"
    )


def _sampler(
    model: Any, run: SeededRun | None, call: Mapping[str, Any] | None
) -> tuple[SeededRun, SeededRun]:
    """``run``, or a run of the pipeline ``model`` with ``call`` and a seeded generator; and
    the same run keeping gradients (a pipeline's ``__call__`` turns them off: its undecorated
    function runs instead)."""
    if (run is None) == (call is None):
        raise ArgumentError(
            "tune needs exactly one of run (a function of a seed that samples a batch and returns "
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
                f"call= must not hold {reserved!r}: tune seeds every run itself "
                "(calibration_seed=, held_out_seed=)"
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
