"""``smoothcache.estimate_sensitivity``: the sensitivity from one run with reverse passes.

It must agree with the measured one (``measure_sensitivity``, one perturbed run per step), find
which rows of the model's output belong to which sample, leave the model exactly as it was
(also when the run fails), and refuse a run without gradients with a message that says so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smoothcache
from smoothcache import CalibrationError
from smoothcache.reference import load_reference_model, sample
from smoothcache.response import SensitivityUnavailable, _sample_rows
from tests.conftest import assert_same_state, module_state

STEPS = 12
LABELS = [0, 3, 5, 8, 1, 9]


@pytest.fixture(scope="module")
def digits():
    return load_reference_model()


@pytest.fixture(scope="module")
def curves(digits):
    run = lambda: sample(digits, LABELS, num_steps=STEPS, seed=7)  # noqa: E731
    return smoothcache.measure_sensitivity(digits, run)


def _run(model, steps=STEPS):
    return lambda: sample(model, LABELS, num_steps=steps, seed=7)


def test_the_estimate_agrees_with_the_measured_sensitivity(digits, curves):
    before = module_state(digits)
    estimated = smoothcache.estimate_sensitivity(digits, _run(digits), curves, projections=4)
    assert_same_state(before, module_state(digits))
    measured, found = curves.sensitivity.gram[0], estimated.sensitivity.gram[0]
    assert estimated.sensitivity.groups == ("all",)
    assert estimated.sensitivity.metadata["per_sample"] is True  # [cond, uncond] rows mapped
    assert found.shape == (STEPS, STEPS)
    assert not found[0].any() and not found[-1].any()  # the first and last step always compute
    inner = (slice(1, -1), slice(1, -1))
    correlation = np.corrcoef(measured[inner].ravel(), found[inner].ravel())[0, 1]
    assert correlation > 0.9
    ratio = np.diag(found)[1:-1] / np.diag(measured)[1:-1]
    assert 0.3 < np.median(ratio) < 3  # the same quantity, not only the same shape
    # the weighted forecast family reads it like the measured one
    weighted = estimated.forecast_candidates(compute_fraction=0.4)
    assert any(s.metadata["weighted"] for s in weighted)


def test_the_estimate_is_deterministic(digits, curves):
    first = smoothcache.estimate_sensitivity(digits, _run(digits), curves, seed=3)
    second = smoothcache.estimate_sensitivity(digits, _run(digits), curves, seed=3)
    assert np.array_equal(first.sensitivity.gram, second.sensitivity.gram)


def test_the_rows_of_each_sample_are_found():
    probe = torch.zeros(6, 4, requires_grad=True)
    weights = torch.arange(1.0, 25.0).reshape(6, 4)
    guided = (probe * weights)[:3] + 2 * (probe * weights)[3:]  # rows i and i + 3: sample i
    (rows,) = _sample_rows(guided, [probe])
    assert rows.tolist() == [0, 1, 2, 0, 1, 2]
    major = (probe * weights).reshape(3, 2, 4).sum(1)  # rows 2i and 2i + 1: sample i
    (rows,) = _sample_rows(major, [probe])
    assert rows.tolist() == [0, 0, 1, 1, 2, 2]
    mixed = (probe * weights)[:3] + (probe * weights).sum(0)  # every sample sees every row
    assert _sample_rows(mixed, [probe]) is None


def test_a_run_without_gradients_is_refused_and_the_model_kept(digits, curves):
    before = module_state(digits)

    def no_grad_run():
        with torch.no_grad():
            return _run(digits)()

    with pytest.raises(SensitivityUnavailable, match="ran without gradients"):
        smoothcache.estimate_sensitivity(digits, no_grad_run, curves)
    assert_same_state(before, module_state(digits))


def test_a_failing_run_leaves_the_model_as_it_was(digits, curves):
    before = module_state(digits)
    calls = []

    def failing():
        calls.append(1)
        raise RuntimeError("out of memory (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        smoothcache.estimate_sensitivity(digits, failing, curves)
    assert calls and not any(m._forward_hooks or m._forward_pre_hooks for m in digits.modules())
    assert_same_state(before, module_state(digits))
    # the model is free: a session can enable it at once
    with smoothcache.enabled(digits, smoothcache.Schedule.uniform(STEPS, 2, model=digits)):
        pass


def test_another_step_count_and_bad_projections_are_errors(digits, curves):
    with pytest.raises(
        CalibrationError, match="made 10 steps but the curves were calibrated for 12"
    ):
        smoothcache.estimate_sensitivity(digits, _run(digits, 10), curves)
    with pytest.raises(CalibrationError, match="projections must be an integer >= 1"):
        smoothcache.estimate_sensitivity(digits, _run(digits), curves, projections=0)


def test_tune_goes_on_without_it_for_a_run_without_gradients_and_says_so(digits):
    def no_grad_run(seed):
        with torch.no_grad():
            return sample(digits, LABELS[:2], num_steps=STEPS, seed=seed)

    with pytest.warns(UserWarning, match="tune goes on without the sensitivity"):
        tuned = smoothcache.tune(digits, no_grad_run, compute_fraction=0.4)
    assert tuned.sensitivity.startswith("not estimated: run() returned")
    assert f"sensitivity: {tuned.sensitivity}" in tuned.report()
    with pytest.raises(SensitivityUnavailable, match="ran without gradients"):
        smoothcache.tune(digits, no_grad_run, compute_fraction=0.4, sensitivity=True)
