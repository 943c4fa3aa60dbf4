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
from smoothcache.closedloop import fit_closed_loop
from smoothcache.curves import ErrorCurves
from smoothcache.engine import enabled
from smoothcache.errors import ArgumentError
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
from smoothcache.sampling import SeededRun, sample_errors, seeded_runs
from smoothcache.schedule import Schedule
from smoothcache.searches.base import check_fraction
from smoothcache.tuning import (
    EvaluationCounter,
    deterministic_reference,
    final_output,
    output_tensor,
)

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
        width = max(34, *(len(c.label) for c in self.candidates))
        for index, c in enumerate(self.candidates):
            mark = "*" if index == self.chosen else " "
            lines.append(
                f" {mark} {c.label:<{width}} {c.compute_fraction:6.1%}  "
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
    fit_weights: int = 0,
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

    ``fit_weights``: with ``N > 0`` the chosen schedule's forecast weights are then fitted
    through the sampler (:func:`~smoothcache.fit_closed_loop`, ``N`` batches from seed
    ``held_out_seed + 10000`` on, ``2 N`` runs, half with gradients) and the fitted schedule is
    run on the held-out batches the choice saw (two runs per round): it replaces the choice only
    as :func:`~smoothcache.racing.choose` would let a candidate replace a safe reference (worst
    samples within the bar, a lead beyond the noise or a better tail). Off by default: it costs
    ``2 N`` runs beyond ``budget``.
    """
    fraction = check_fraction(compute_fraction)
    least = (1 if sensitivity is False else 2) + 3  # calibration, two uncached, one candidate
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < least:
        raise ArgumentError(
            f"budget must be a number of sampler runs >= {least} (calibration, the sensitivity, "
            f"two uncached held-out runs and one candidate), found {budget!r}"
        )
    if not isinstance(fit_weights, int) or isinstance(fit_weights, bool) or fit_weights < 0:
        raise ArgumentError(
            f"fit_weights must be a number of fitting batches >= 0 (0: off), found {fit_weights!r}"
        )
    if calibration_seed == held_out_seed:
        raise ArgumentError(
            f"calibration_seed and held_out_seed are both {held_out_seed}: the choice must be "
            "made on samples the calibration did not see; choose another held_out_seed"
        )
    sampler, graph_run = seeded_runs(model, run, call)
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
    candidates, alive, signal, held = _race(runs, entered, seeds, budget)
    picked, reason = choose([candidates[i] for i in alive])
    chosen = alive[picked]
    label, schedule, _ = entered[chosen]
    if fit_weights and not any(any(o) for o in schedule.orders.values()):
        reason += "; weights not fitted: the chosen schedule only reuses (no forecast step)"
    elif fit_weights:
        fresh = (s for s in itertools.count(held_out_seed + 10_000) if s != calibration_seed)
        fit_seeds = list(itertools.islice(fresh, fit_weights))
        fitted, candidate = _fitted(runs, graph_run, schedule, candidates[chosen], held, fit_seeds)
        picked, why = choose([dataclasses.replace(candidates[chosen], safe=True), candidate])
        candidates.append(candidate)
        if picked:
            chosen, label, schedule = len(candidates) - 1, candidate.label, fitted
            reason = f"{why}; fitted from the choice, whose reason was: {reason}"
    seconds = time.perf_counter() - started
    how = {
        "chosen": label,
        "reason": reason,
        "runs": runs.done,
        "held_out_samples": candidates[chosen].samples,
        "evaluations": runs.counter.evaluations,
        "seconds": round(seconds, 3),
        "sensitivity": note,
        "fit_weights": fit_weights,
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
) -> tuple[list[Candidate], list[int], float, list[int]]:
    """The held-out rounds (:mod:`smoothcache.racing`), one per seed of ``seeds``: every
    candidate scored on all the rounds it ran, the indices of the last round's, and the
    uncached outputs' mean square, and the seeds of the rounds."""
    errors: list[list[np.ndarray]] = [[] for _ in entered]
    alive = list(range(len(entered)))
    squares: list[float] = []
    held: list[int] = []
    while True:
        seed = next(seeds)
        held.append(seed)
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
            return candidates, alive, float(np.mean(squares)), held
        alive = following


def _fitted(
    runs: _Runs,
    graph_run: SeededRun,
    schedule: Schedule,
    chosen: Candidate,
    held: list[int],
    seeds: list[int],
) -> tuple[Schedule, Candidate]:
    """``schedule`` with its weights fitted through the sampler on ``seeds``, and its errors on
    the held-out batches ``held`` (every round the chosen candidate ran)."""
    runs.total = runs.done + 2 * len(seeds) + 2 * len(held)
    with runs.counter:
        fitted = fit_closed_loop(runs.model, schedule, graph_run, seeds=seeds, adapter=runs.adapter)
    runs.done += 2 * len(seeds)
    runs.report()
    errors = []
    for seed in held:
        reference = runs.sample(seed).to(torch.float64)
        errors.append(sample_errors(runs.sample(seed, fitted), reference))
    label = f"{chosen.label}, closed-loop fitted"
    return fitted, scored(label, chosen.compute_fraction, False, np.concatenate(errors))


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
    runs = _Runs(seeded_runs(model, run, call)[0], model, adapter, None)
    reference = runs.sample(seed).to(torch.float64)
    errors = {
        name: float(sample_errors(runs.sample(seed, schedule), reference).mean())
        for name, schedule in schedules.items()
    }
    signal = float((reference**2).mean())
    return {name: _decibels(signal, error) for name, error in errors.items()}


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
