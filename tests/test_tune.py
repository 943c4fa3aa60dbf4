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
from smoothcache.reference import load_reference_model, sample
from smoothcache.tuner import Candidate, choose
from tests.conftest import (
    assert_same_state,
    count_original_calls,
    module_state,
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
    transformer = pipe.transformer
    gen = torch.Generator().manual_seed(0)
    dim = transformer.config.joint_attention_dim
    pooled_dim = transformer.config.pooled_projection_dim
    call = {
        "prompt_embeds": torch.randn(2, 8, dim, generator=gen),
        "pooled_prompt_embeds": torch.randn(2, pooled_dim, generator=gen),
        "negative_prompt_embeds": torch.zeros(2, 8, dim),
        "negative_pooled_prompt_embeds": torch.zeros(2, pooled_dim),
        "true_cfg_scale": 2.0,
        "num_inference_steps": 8,
        "height": 32,
        "width": 32,
    }
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
    options = ["--compute", "0.4", "--steps", "10", "--class-labels", "1", "7"]
    status = main(["tune", "--reference", *options, "-o", str(out), "--plot", str(plot)])
    captured = capsys.readouterr()
    assert status == 0
    schedule = smoothcache.Schedule.load(out)
    assert schedule.num_steps == 10 and schedule.metadata["tuned"]["chosen"]
    report = out.with_suffix(".txt").read_text()
    assert "sampler runs" in report and "chosen:" in report
    assert "sampler runs in all; 3 done in" in captured.err
    # the paper's rule beside it, on the same held-out batch: the tuned schedule's figure there
    # is the one tune measured for it
    lines = report.splitlines()
    paper = next(line for line in lines if line.startswith("the paper's rule at the same budget"))
    chosen = next(line for line in lines if line.startswith(" * "))
    assert f"the tuned schedule {chosen.split()[-2]} dB" in paper
    assert plot.stat().st_size > 0
    assert f"wrote {out}" in captured.out
    status = main(["tune", "--reference", "--compute", "0.4", "--prompts", "a digit"])
    assert status == 2 and "--class-labels, not --prompts" in capsys.readouterr().err
