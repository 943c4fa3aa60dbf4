"""The held-out race of :func:`smoothcache.tune`: which candidate schedule to keep, and how many
sampler runs each round of held-out samples costs.

One held-out batch of 8 to 16 samples ranks candidates less reliably than the 200 samples of
:func:`~smoothcache.select_schedule` (a batch mean does not see a tail of one sample in a few
hundred). Runs a user can spend beyond the first round buy more held-out batches, for the
candidates still worth a look: successive halving. Round 1 runs every candidate that fits the
budget on the batch of ``held_out_seed``; each later round runs, on the next seed's batch, the
better half (by their batch error so far) of the forecast candidates whose worst samples passed
the bar, with the safe references beside them. Every round adds its samples to every survivor's
errors, so the final choice (:func:`choose`) sees all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smoothcache.errors import ArgumentError, CalibrationError, ScheduleError
from smoothcache.schedule import Schedule
from smoothcache.searches.forecast import within_spans

#: tune's forecast family (:meth:`~smoothcache.ErrorCurves.forecast_candidates`): smaller than the
#: full recipe's, which also has reuse only (cap 0; never the best on development seeds) and a
#: prior of 1.5 (between 1 and 2; on 16 held-out samples its members won more often than they
#: were best, and more candidates make the winner's lead more often luck). With the plain search
#: it is 6 or 7 distinct schedules on the digits DiT (up to 10 in principle); 12 runs try the
#: first 6 and the two uniform references.
TUNE_CAPS = (1, 2, 3)
TUNE_PRIORS = (1.0, 2.0, 3.0)
#: whether every family member is followed by its fitted twin (:mod:`smoothcache.fitting`).
#: Off: on development seeds (3 models x 30% and 20%, 64 evaluation samples) the twins changed
#: tune's result by -1.84, 0.00, +1.42, +2.09, -0.41 and -1.85 dB: the held-out race chose
#: fitted twins that lost on other samples as often as ones that won (docs/forecast.md).
TUNE_FITTED = False


def tune_lookahead(fraction: float) -> int:
    """The calibration's lookahead for a budget: 7 (runs of up to 7 skipped steps), longer below
    20% of the compute, where a schedule's runs are longer (12 at 10%)."""
    return max(7, math.ceil(1 / fraction) + 2)


#: A candidate's worst samples may be at most this many times worse (in squared error) than the
#: safe references' best (3 dB), or it is not chosen.
TAIL_FACTOR = 2.0

#: The share of held-out samples whose mean error is a candidate's tail (at least one sample).
TAIL_SHARE = 0.05


@dataclass(frozen=True)
class Candidate:
    """One schedule ``tune`` tried: its label, the share of branch-steps it computes, its
    held-out batch mean squared error, the mean of its worst samples' errors (``tail``), and
    whether it is a safe reference (uniform) rather than a member of the forecast family."""

    label: str
    compute_fraction: float
    mse: float
    tail: float
    safe: bool
    errors: np.ndarray = field(repr=False, compare=False)  #: per held-out sample, every round

    @property
    def samples(self) -> int:
        """How many held-out samples its errors come from (every round it ran)."""
        return len(self.errors)


def scored(label: str, share: float, safe: bool, errors: np.ndarray) -> Candidate:
    """A candidate from its per-sample held-out errors (a broken output is never chosen)."""
    if not np.isfinite(errors).all():
        return Candidate(label, share, math.inf, math.inf, safe, errors)
    worst = max(1, round(TAIL_SHARE * len(errors)))
    tail = float(np.sort(errors)[-worst:].mean())
    return Candidate(label, share, float(errors.mean()), tail, safe, errors)


def _bar(candidates: Sequence[Candidate], safe: Sequence[int]) -> float:
    """The tail a candidate must not exceed: :data:`TAIL_FACTOR` times the safe references'
    best."""
    return min((candidates[i].tail for i in safe), default=math.inf) * TAIL_FACTOR


def _by_error(candidates: Sequence[Candidate]) -> Callable[[int], tuple[float, int]]:
    return lambda i: (candidates[i].mse, i)


def choose(candidates: Sequence[Candidate]) -> tuple[int, str]:
    """The index of the candidate to keep, and why.

    Candidates whose tail (the mean error of their worst :data:`TAIL_SHARE` of samples) is more
    than :data:`TAIL_FACTOR` times the best tail of the safe references are out. Of the rest,
    the one of lowest held-out batch error wins, unless its lead over the best safe reference is
    within two standard errors of the per-sample differences: the evidence cannot tell them
    apart, and the one with the better tail wins. With no candidate left, the safe reference of
    lowest batch error. Every candidate must have been scored on the same samples.
    """
    usable = [i for i, c in enumerate(candidates) if math.isfinite(c.mse)]
    safe = [i for i in usable if candidates[i].safe]
    if not usable:
        raise CalibrationError("every candidate schedule broke the output (NaN or inf)")
    bar = _bar(candidates, safe)
    passing = sorted((i for i in usable if candidates[i].tail <= bar), key=_by_error(candidates))
    if not passing:
        return min(safe, key=_by_error(candidates)), "no candidate's worst samples passed the bar"
    best = passing[0]
    reference = min(safe, key=_by_error(candidates), default=None)
    if reference is None or reference == best:
        return best, "lowest held-out batch error"
    difference = candidates[best].errors - candidates[reference].errors
    if len(difference) < 2:
        return best, "lowest error on the one held-out sample (no spread to judge the noise by)"
    noise = 2 * float(difference.std(ddof=1)) / math.sqrt(len(difference))
    if -float(difference.mean()) <= noise and candidates[reference].tail < candidates[best].tail:
        return reference, "its lead was within the noise, and this one's worst samples are better"
    return best, "lowest held-out batch error, its worst samples within the bar"


def survivors(candidates: Sequence[Candidate]) -> list[int]:
    """The candidates of the next round: every safe reference, and the better half (at least
    one) of the forecast candidates whose worst samples pass the bar, by batch error."""
    usable = [i for i, c in enumerate(candidates) if math.isfinite(c.mse)]
    safe = [i for i in usable if candidates[i].safe]
    bar = _bar(candidates, safe)
    passing = sorted(
        (i for i in usable if not candidates[i].safe and candidates[i].tail <= bar),
        key=_by_error(candidates),
    )
    return sorted([*safe, *passing[: math.ceil(len(passing) / 2)]])


def later_rounds(family: int, safe: int, left: int) -> list[int]:
    """The forecast candidates of each round from the next one on, which runs ``family`` of
    them and ``safe`` references, within ``left`` sampler runs: each round runs the uncached
    batch once, its candidates, and at most half of the round before (at least one)."""
    rounds: list[int] = []
    while family > 0 and left >= 1 + safe + family:
        rounds.append(family)
        left -= 1 + safe + family
        family = math.ceil(family / 2)
    return rounds


def plan(family: int, safe: int, runs: int) -> list[int]:
    """The most forecast candidates each round can run, for ``family`` forecast candidates and
    ``safe`` references within ``runs`` sampler runs: round 1 runs the uncached batch twice (the
    sampler must be deterministic) and keeps the first forecast candidates that fit, later
    rounds follow :func:`later_rounds`. A round whose candidates fail the bar runs fewer: the
    plan is an upper bound."""
    first = min(family, runs - 2 - safe)
    if first < min(family, 1) or safe + first == 0:
        raise ArgumentError(
            f"budget too small: tune's held-out round needs at least {2 + safe + min(family, 1)} "
            f"sampler runs, {runs} were left after calibration; raise budget="
        )
    return [first, *later_rounds(math.ceil(first / 2), safe, runs - 2 - safe - first)]


def round_runs(rounds: Sequence[int], safe: int) -> int:
    """The sampler runs of ``rounds`` (:func:`plan`'s or :func:`later_rounds`'), each running
    the uncached batch once and ``safe`` references beside its forecast candidates."""
    return sum(1 + safe + n for n in rounds)


def tune_candidates(
    curves: Any, fraction: float, fitted: bool = False
) -> list[tuple[str, Schedule, bool]]:
    """``(label, schedule, safe)`` of tune's candidates at ``fraction``: the forecast family of
    ``curves`` (:data:`TUNE_CAPS` x :data:`TUNE_PRIORS`, each member followed by its fitted twin
    with ``fitted``) and the uniform references of the same compute (``safe``)."""
    found: list[tuple[str, Schedule, bool]] = []
    try:
        family = curves.forecast_candidates(
            fraction, caps=TUNE_CAPS, priors=TUNE_PRIORS, fitted=fitted
        )
    except ScheduleError:
        family = []  # a budget below what the curves' lookahead allows: uniform only
    member = -1  # a fitted twin takes the name of the member before it
    for schedule in family:
        member += not schedule.weights
        label = "forecast search" if member == 0 else f"forecast family {member}"
        found.append((label + (", fitted" if schedule.weights else ""), schedule, False))
    steps = curves.num_steps
    every = next(
        (
            k
            for k in range(2, steps + 1)
            if Schedule.uniform(steps, k, ["x"]).compute_fraction <= fraction + 1e-12
        ),
        None,
    )
    if every is not None:
        for order, name in ((0, "FORA"), (2, "uniform + order-2 forecast")):
            schedule = within_spans(Schedule.uniform(steps, every, curves.kinds, order), curves)
            found.append((f"{name}, every {every}", schedule, True))
    if not found:
        raise ScheduleError(
            f"no schedule computes at most {fraction:g} of the {steps} steps; raise "
            "compute_fraction"
        )
    return found
