"""Closed-loop fitted forecasts (issue #28): weights fitted to the final output through the
sampler. The fit must move the weights the way that lowers the error (its gradients are
right), keep them summing to one, leave the model and the technique registry as they were, and
refuse what it cannot fit."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

import smoothcache
from smoothcache import ArgumentError, CalibrationError, Schedule, ScheduleError
from smoothcache.engine.technique import TECHNIQUES
from smoothcache.forecast import lagrange_weights, plan_reads
from smoothcache.racing import choose
from smoothcache.reference import load_reference_model, sample
from tests.conftest import (
    assert_same_state,
    count_original_calls,
    module_state,
    tiny_flux_call,
    tiny_flux_pipeline,
)
from tests.test_tune import LABELS, STEPS, _run


@pytest.fixture(scope="module")
def digits():
    return load_reference_model()


def _schedule(model) -> Schedule:
    kinds = sorted({b.kind for b in smoothcache.detect(model).branches(model)})
    return Schedule.uniform(STEPS, 4, kinds, order=2)


def _error(model, schedule: Schedule, seed: int) -> float:
    with torch.no_grad():
        plain = sample(model, LABELS, num_steps=STEPS, seed=seed).double()
        with smoothcache.enabled(model, schedule):
            cached = sample(model, LABELS, num_steps=STEPS, seed=seed).double()
    return float(((cached - plain) ** 2).mean())


def test_the_fit_lowers_the_error_of_held_out_batches_and_keeps_the_weights_exact(digits):
    schedule = _schedule(digits)
    before = module_state(digits)
    techniques = set(TECHNIQUES)
    fitted = smoothcache.fit_closed_loop(
        digits, schedule, _run(digits), seeds=range(10), learning_rate=0.05, held_out_seed=50
    )
    assert_same_state(before, module_state(digits))
    assert all(p.grad is None for p in digits.parameters())
    assert set(TECHNIQUES) == techniques  # the fit's techniques are gone
    how = fitted.metadata["closed_loop"]
    assert how["seeds"] == list(range(10)) and how["held_out_gain_db"] > 0
    moved = 0
    for key, orders in schedule.orders.items():
        for step, (skip, read, _) in enumerate(plan_reads(schedule.rows[key], orders)):
            weights = fitted.weights[key][step]
            if not skip or len(read) < 2:
                assert weights is None  # reuse stays reuse
                continue
            assert sum(weights) == pytest.approx(1.0, abs=1e-9)  # a constant stays exact
            moved += not np.allclose(weights, lagrange_weights(read, step))
    assert moved > 0
    # batches the fit never saw: lower error than the Lagrange weights
    for seed in (60, 61):
        assert _error(digits, fitted, seed) < _error(digits, schedule, seed)
    # and the fitted schedule really skips (the original forward is not called there)
    path = "transformer_blocks.0.attn1"
    with count_original_calls(digits, [path]) as calls, torch.no_grad():
        with smoothcache.enabled(digits, fitted) as session:
            sample(digits, LABELS, num_steps=STEPS, seed=60)
    assert calls[path] == sum(schedule.rows["attn1"]) and session.stats.forecast[path] > 0


def test_one_small_step_lowers_the_error_of_its_own_batch(digits):
    """The gradient reaches every weight through the whole sampler (the anchors included): a
    small step along it lowers the batch's error, a step against it would raise it."""
    schedule = _schedule(digits)
    stepped = smoothcache.fit_closed_loop(
        digits, schedule, _run(digits), seeds=[7], learning_rate=1e-4
    )
    assert _error(digits, stepped, 7) < _error(digits, schedule, 7)


def test_what_cannot_be_fitted_is_refused_and_the_model_left_as_it_was(digits):
    schedule = _schedule(digits)
    before = module_state(digits)
    techniques = set(TECHNIQUES)
    reuse = Schedule.uniform(STEPS, 4, list(schedule.rows))
    with pytest.raises(ScheduleError, match="nothing to fit"):
        smoothcache.fit_closed_loop(digits, reuse, _run(digits))
    # a key answered by a technique that takes no weights has nothing to fit either
    reusing = dataclasses.replace(schedule, techniques=dict.fromkeys(schedule.rows, "reuse"))
    with pytest.raises(ScheduleError, match="nothing to fit"):
        smoothcache.fit_closed_loop(digits, reusing, _run(digits))

    def no_gradients(seed):
        with torch.no_grad():
            return sample(digits, LABELS, num_steps=STEPS, seed=seed)

    with pytest.raises(CalibrationError, match="keeps gradients"):
        smoothcache.fit_closed_loop(digits, schedule, no_gradients, seeds=[1])
    for bad, match in (
        ({"seeds": []}, "seeds"),
        ({"seeds": [1.5]}, "seeds"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"seeds": [1, 2], "held_out_seed": 2}, "held_out_seed"),
    ):
        with pytest.raises(ArgumentError, match=match):
            smoothcache.fit_closed_loop(digits, schedule, _run(digits), **bad)
    assert_same_state(before, module_state(digits))
    assert set(TECHNIQUES) == techniques
    assert all(p.grad is None for p in digits.parameters())


@pytest.mark.parametrize(("fraction", "batches", "kept"), [(0.4, 4, True), (0.5, 8, False)])
def test_tune_fits_the_weights_of_its_choice_and_keeps_them_only_if_held_out_batches_agree(
    digits, fraction, batches, kept
):
    before = module_state(digits)
    plain = smoothcache.tune(digits, _run(digits), compute_fraction=fraction)
    tuned = smoothcache.tune(digits, _run(digits), compute_fraction=fraction, fit_weights=batches)
    assert_same_state(before, module_state(digits))
    # the same race, then the fitting batches (uncached and with gradients) and the held-out
    # batches again, uncached and under the fitted schedule
    rounds = plain.candidates[plain.chosen].samples // len(LABELS)
    assert tuned.runs == plain.runs + 2 * batches + 2 * rounds
    assert tuned.candidates[:-1] == plain.candidates
    fitted = tuned.candidates[-1]
    base = plain.candidates[plain.chosen]
    assert fitted.label == f"{base.label}, closed-loop fitted" and fitted.samples == base.samples
    # kept as the race's choice rule would let a candidate replace a safe reference: at 50%
    # the fitted schedule's lead is within the noise and its worst samples are not better
    picked, _ = choose([dataclasses.replace(base, safe=True), fitted])
    assert bool(picked) == kept
    assert tuned.chosen == (len(tuned.candidates) - 1 if kept else plain.chosen)
    assert bool(tuned.schedule.weights) == kept
    assert tuned.schedule.metadata["tuned"]["fit_weights"] == batches
    if kept:  # the reported held-out error is the fitted schedule's own
        assert tuned.schedule.metadata["closed_loop"]["seeds"] == list(range(12000, 12004))
        reference = sample(digits, LABELS, num_steps=STEPS, seed=2000).double()
        with torch.no_grad(), smoothcache.enabled(digits, tuned.schedule):
            cached = sample(digits, LABELS, num_steps=STEPS, seed=2000).double()
        errors = ((cached - reference) ** 2).flatten(1).mean(1).numpy()
        np.testing.assert_allclose(errors, fitted.errors[: len(LABELS)], rtol=1e-9)
    with pytest.raises(ArgumentError, match="fit_weights"):
        smoothcache.tune(digits, _run(digits), compute_fraction=0.3, fit_weights=-1)


def test_a_pipeline_is_fitted_from_its_call_arguments():
    """FLUX: tuple outputs (attention's image and text streams), two streams, and true guidance
    as two calls per step, with the pipeline's undecorated ``__call__``."""
    pipe = tiny_flux_pipeline()
    transformer = pipe.transformer
    call = {**tiny_flux_call(pipe), "output_type": "latent"}
    # the text stream's ff_context matters only through the single-stream blocks of the same
    # step: they compute at every step, so its forecasts reach the output
    double = Schedule.uniform(8, 3, ["attn", "ff", "ff_context"], order=2)
    schedule = Schedule(
        {**double.rows, "single": [1] * 8}, orders={**double.orders, "single": [0] * 8}
    )
    pipe(**call)  # the pipeline's own first call adds diffusers' hook registry to the model
    before = module_state(transformer)
    fitted = smoothcache.fit_closed_loop(pipe, schedule, call=call, seeds=[0, 1, 2])
    assert_same_state(before, module_state(transformer))
    moved = {
        key
        for key, orders in schedule.orders.items()
        for step, (skip, read, _) in enumerate(plan_reads(schedule.rows[key], orders))
        if skip
        and len(read) > 1
        and not np.allclose(fitted.weights[key][step], lagrange_weights(read, step))
    }
    assert moved == {"attn", "ff", "ff_context"}

    def error(s: Schedule) -> float:
        outputs = []
        for cached in (False, True):
            with smoothcache.enabled(pipe, s) if cached else contextlib.nullcontext():
                outputs.append(pipe(**call, generator=torch.Generator().manual_seed(9)).images)
        return float((outputs[1] - outputs[0]).pow(2).mean())

    assert error(fitted) != error(schedule)


def test_the_command_fits_the_weights_when_asked_and_says_when_there_is_nothing_to_fit(
    tmp_path, capsys
):
    from smoothcache.cli import main

    out = tmp_path / "tuned.json"
    options = ["--steps", "10", "--class-labels", "1", "7", "--budget", "9", "-o", str(out)]
    fit = ["--fit-weights", "2"]
    assert main(["tune", "--reference", "--compute", "0.5", *options, *fit]) == 0
    assert "then 4 runs fitting the weights" in capsys.readouterr().err
    schedule = smoothcache.Schedule.load(out)
    assert schedule.metadata["tuned"]["fit_weights"] == 2 and schedule.weights
    assert "chosen: forecast search, closed-loop fitted (" in out.with_suffix(".txt").read_text()
    # at 40% the race chooses a schedule that only reuses: the report says nothing was fitted
    assert main(["tune", "--reference", "--compute", "0.4", *options, *fit]) == 0
    report = out.with_suffix(".txt").read_text()
    assert "weights not fitted: the chosen schedule only reuses" in report
    assert not smoothcache.Schedule.load(out).weights
    assert main(["tune", "--reference", "--compute", "0.4", *options, "--fit-weights", "-1"]) == 2
