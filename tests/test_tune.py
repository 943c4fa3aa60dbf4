"""``smoothcache.tune``: one call from a model or pipeline and a budget to a schedule.

The report must be true (the chosen schedule reproduces the held-out error it reports, the
counted evaluations are the sampler's), the schedule must fit the budget and really skip, the
model must be left as it was, and the choice must guard the tail as documented.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smoothcache
from smoothcache import ArgumentError, CalibrationError
from smoothcache.racing import Candidate, choose, later_rounds, plan, round_runs, survivors
from smoothcache.reference import load_reference_model, sample
from tests.conftest import (
    assert_same_state,
    count_original_calls,
    module_state,
    tiny_flux_call,
    tiny_flux_pipeline,
)

STEPS = 12
LABELS = [0, 3, 5, 8]


@pytest.fixture(scope="module")
def digits():
    return load_reference_model()


def _run(model):
    return lambda seed: sample(model, LABELS, num_steps=STEPS, seed=seed)


def test_tune_on_the_shipped_model_reports_what_it_ran(digits):
    before = module_state(digits)
    progress = []
    tuned = smoothcache.tune(
        digits, _run(digits), compute_fraction=0.4, on_run=lambda d, t: progress.append((d, t))
    )
    assert_same_state(before, module_state(digits))
    # calibration, the sensitivity's run, the held-out batch twice, then every candidate once
    assert tuned.runs == 4 + len(tuned.candidates) == progress[-1][0] == progress[-1][1]
    # guidance doubles the batch: every step is one call on 2 x 4 samples; the sensitivity's
    # run replays the steps between the first and the last once more
    assert tuned.evaluations == (tuned.runs * STEPS + STEPS - 2) * 2 * len(LABELS)
    assert tuned.sensitivity.startswith("estimated in one run with gradients")
    schedule = tuned.schedule
    assert schedule.compute_fraction <= 0.4 + 1e-12
    assert schedule.metadata["tuned"]["chosen"] == tuned.candidates[tuned.chosen].label
    assert any(c.safe for c in tuned.candidates) and any(not c.safe for c in tuned.candidates)
    # the reported held-out error is the schedule's own
    plain = sample(digits, LABELS, num_steps=STEPS, seed=2000).double()
    path = "transformer_blocks.0.attn1"
    with count_original_calls(digits, [path]) as calls:
        with smoothcache.enabled(digits, schedule) as session:
            cached = sample(digits, LABELS, num_steps=STEPS, seed=2000).double()
    assert float(((cached - plain) ** 2).mean()) == pytest.approx(
        tuned.candidates[tuned.chosen].mse, rel=1e-12
    )
    assert calls[path] < STEPS and session.stats.reused[path] > 0
    assert not torch.equal(cached, plain)
    text = tuned.report()
    assert f"{tuned.runs} sampler runs" in text and "chosen:" in text
    assert np.isfinite(tuned.expected_snr_db)


def test_tune_builds_the_runs_of_a_pipeline_from_its_call_arguments():
    pipe = tiny_flux_pipeline()
    call = tiny_flux_call(pipe)
    tuned = smoothcache.tune(pipe, call=call, compute_fraction=0.5)
    assert set(tuned.schedule.rows) == {"attn", "ff", "ff_context", "single"}
    # true CFG: two calls of 2 samples per step, and the sensitivity's replays
    assert tuned.evaluations == (tuned.runs * 8 + 8 - 2) * 2 * 2
    # the pipeline's __call__ turns gradients off; tune ran its undecorated function
    assert tuned.sensitivity.startswith("estimated in one run with gradients")
    assert tuned.candidates[tuned.chosen].compute_fraction <= 0.5 + 1e-12
    with smoothcache.enabled(pipe, tuned.schedule) as session:
        pipe(**call, output_type="latent", generator=torch.Generator().manual_seed(5))
    assert session.stats.reuse_fraction > 0


def _candidate(label, mse, tail, safe, errors):
    return Candidate(label, 0.3, mse, tail, safe, np.asarray(errors, dtype=float))


def test_the_choice_guards_the_tail_and_the_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, 200)
    safe = _candidate("safe", base.mean(), 2.0, True, base)
    # clearly better everywhere: chosen
    better = _candidate("better", 0.5 * base.mean(), 1.0, False, 0.5 * base)
    assert choose([better, safe])[0] == 0
    # better on average, but its worst samples are 10x the reference's: out
    broken = _candidate("broken", 0.4 * base.mean(), 20.0, False, 0.4 * base)
    index, reason = choose([broken, better, safe])
    assert index == 1 and "worst samples" in reason
    # a lead within the noise and a worse tail: the safe reference
    noisy = base + rng.normal(0, 0.5, 200)
    close = _candidate("close", noisy.mean() - 0.01, 3.0, False, noisy - 0.01)
    assert choose([close, safe])[0] == 1
    # a broken output is never chosen; nothing usable is an error
    nan = _candidate("nan", float("inf"), float("inf"), False, [np.nan] * 200)
    assert choose([nan, safe])[0] == 1
    with pytest.raises(CalibrationError, match="every candidate"):
        choose([nan])


def test_the_race_plans_its_rounds_within_the_budget():
    # round 1: the uncached batch twice, the safe references and the family members that fit
    assert plan(10, 2, 10) == [6]
    # later rounds: the uncached batch once, the references and half the round before
    rounds = plan(10, 2, 30)
    assert rounds == [10, 5, 3]
    assert round_runs(rounds, 2) + 1 == 13 + 8 + 6 + 1 <= 30
    assert later_rounds(1, 2, 9) == [1, 1] and later_rounds(3, 2, 5) == []
    assert plan(0, 2, 5) == [0]  # no forecast family at this budget: the references only
    with pytest.raises(ArgumentError, match=r"budget too small.*at least 5"):
        plan(10, 2, 4)
    # the next round: every safe reference, the better half of those whose tail passes
    errors = np.ones(20)
    safe = _candidate("safe", 1.0, 1.0, True, errors)
    ranked = [_candidate(f"m{i}", 0.5 + 0.1 * i, 1.5, False, errors) for i in range(4)]
    broken = _candidate("broken", 0.1, 5.0, False, errors)
    assert survivors([ranked[3], safe, broken, ranked[1], ranked[0], ranked[2]]) == [1, 3, 4]


def test_a_larger_budget_buys_held_out_rounds_and_a_smaller_one_fewer_candidates(digits):
    run = _run(digits)
    progress = []
    tuned = smoothcache.tune(
        digits, run, compute_fraction=0.4, budget=30, on_run=lambda d, t: progress.append(t)
    )
    assert tuned.runs <= 30 and progress[-1] == tuned.runs
    assert tuned.evaluations == (tuned.runs * STEPS + STEPS - 2) * 2 * len(LABELS)
    chosen = tuned.candidates[tuned.chosen]
    rounds = chosen.samples // len(LABELS)
    assert rounds > 1 and min(c.samples for c in tuned.candidates) == len(LABELS)
    assert tuned.schedule.metadata["tuned"]["held_out_samples"] == chosen.samples
    # the reported error is the schedule's own over every held-out seed it ran on
    errors, squares = [], []
    for seed in range(2000, 2000 + rounds):
        plain = sample(digits, LABELS, num_steps=STEPS, seed=seed).double()
        with smoothcache.enabled(digits, tuned.schedule):
            cached = sample(digits, LABELS, num_steps=STEPS, seed=seed).double()
        errors.append(((cached - plain) ** 2).flatten(1).mean(1))
        squares.append(float((plain**2).mean()))
    assert float(torch.cat(errors).mean()) == pytest.approx(chosen.mse, rel=1e-12)
    assert tuned.signal == pytest.approx(np.mean(squares), rel=1e-12)

    small = smoothcache.tune(digits, run, compute_fraction=0.4, budget=7)
    assert small.runs == 7
    assert small.candidates[0].label == "forecast search"
    assert [c.safe for c in small.candidates] == [False, True, True]
    # the held-out rounds never sample the calibration seed
    seen = []
    skipping = smoothcache.tune(
        digits,
        lambda seed: seen.append(seed) or run(seed),
        compute_fraction=0.4,
        budget=30,
        calibration_seed=2001,
    )
    rounds = skipping.candidates[skipping.chosen].samples // len(LABELS)
    assert rounds > 1 and seen[:2] == [2001, 2001]  # calibration and the sensitivity's run
    assert 2001 not in seen[2:]
    assert sorted(set(seen[2:])) == [2000, *range(2002, 2002 + rounds - 1)]
    # bad budgets and seeds are refused before anything runs
    seen.clear()
    for budget in (0, 4, True, 12.0):
        with pytest.raises(ArgumentError, match="budget must be a number of sampler runs >= 5"):
            smoothcache.tune(digits, seen.append, compute_fraction=0.4, budget=budget)
    with pytest.raises(ArgumentError, match="held_out_seed are both 7"):
        smoothcache.tune(
            digits, seen.append, compute_fraction=0.4, calibration_seed=7, held_out_seed=7
        )
    assert not seen


def test_bad_calls_are_refused_before_anything_runs(digits):
    run = _run(digits)
    with pytest.raises(ArgumentError, match="exactly one of run"):
        smoothcache.tune(digits, compute_fraction=0.3)
    with pytest.raises(ArgumentError, match="exactly one of run"):
        smoothcache.tune(digits, run, call={}, compute_fraction=0.3)
    with pytest.raises(ArgumentError, match="call= runs a diffusers pipeline"):
        smoothcache.tune(digits, call={"num_inference_steps": 4}, compute_fraction=0.3)
    with pytest.raises(ArgumentError, match="run must be a function"):
        smoothcache.tune(digits, 3, compute_fraction=0.3)
    with pytest.raises(smoothcache.ScheduleError, match="compute_fraction"):
        smoothcache.tune(digits, run, compute_fraction=1.5)


def test_a_run_that_is_not_deterministic_is_an_error(digits):
    calls = iter(range(1000))

    def drifting(seed):
        return sample(digits, LABELS, num_steps=4, seed=seed + next(calls))

    with pytest.raises(CalibrationError, match="deterministic"):
        smoothcache.tune(digits, drifting, compute_fraction=0.5)


def test_the_command_tunes_the_shipped_model_and_writes_what_it_says(tmp_path, capsys):
    from smoothcache.cli import main

    out = tmp_path / "tuned.json"
    plot = tmp_path / "tuned.png"
    options = ["--compute", "0.4", "--steps", "10", "--class-labels", "1", "7", "--budget", "9"]
    status = main(["tune", "--reference", *options, "-o", str(out), "--plot", str(plot)])
    captured = capsys.readouterr()
    assert status == 0
    schedule = smoothcache.Schedule.load(out)
    assert schedule.num_steps == 10 and schedule.metadata["tuned"]["chosen"]
    assert schedule.metadata["tuned"]["runs"] <= 9 and "at most 9 runs" in captured.err
    report = out.with_suffix(".txt").read_text()
    assert "sampler runs" in report and "chosen:" in report
    assert "sampler runs in all; 3 done in" in captured.err
    # the paper's rule beside it, on the first held-out batch: the tuned schedule's figure there
    # is the one tune measured for it (its candidates ran one round: 2 samples)
    lines = report.splitlines()
    paper = next(line for line in lines if line.startswith("the paper's rule at the same budget"))
    chosen = next(line for line in lines if line.startswith(" * ")).split()
    assert chosen[-1] == "2"
    assert f"the tuned schedule {chosen[-3]} dB" in paper
    assert plot.stat().st_size > 0
    assert f"wrote {out}" in captured.out
    status = main(["tune", "--reference", "--compute", "0.4", "--prompts", "a digit"])
    assert status == 2 and "--class-labels, not --prompts" in capsys.readouterr().err


def test_tune_calibrates_with_runs_long_enough_for_its_budget():
    """Below 20% of the compute a schedule's runs are longer than 7 skipped steps: tune's
    calibration measures them (10% computes every tenth step or so: runs of up to 12)."""
    from smoothcache.racing import tune_lookahead

    assert [tune_lookahead(f) for f in (0.5, 0.3, 0.2, 0.15, 0.1)] == [7, 7, 7, 9, 12]
