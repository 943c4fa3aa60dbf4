"""Forecast calibration (errors per order, lag and spacing) and ``method="forecast"``."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import smoothcache
from smoothcache import CurvesFileError, ErrorCurves, Schedule, ScheduleError
from smoothcache.adapter import Branch
from smoothcache.forecast import lagrange_weights
from smoothcache.measurements import (
    ALL_BRANCHES,
    ForecastErrors,
    Sensitivity,
    combo_weights,
    forecast_combos,
    reach,
)
from smoothcache.schedule import MAX_ORDER
from smoothcache.searches.forecast import (
    CANDIDATE_CAPS,
    CANDIDATE_PRIORS,
    forecast_schedule,
)
from smoothcache.testing.models.original_dit import sample_original_dit
from tests.test_calibration import ToyAdapter, run_toy, store_outputs, toy

STEPS = 16


PATHS = ["blocks.0.attn", "blocks.1.mlp"]


def _calibrated(model, lookahead: int = 2, orders: int = 2) -> tuple[ErrorCurves, dict]:
    """Two runs of the tiny original DiT (guided batches of 4 rows, other seeds)."""
    stored, handles = store_outputs(model, PATHS)
    with smoothcache.calibrating(model, lookahead=lookahead, orders=orders) as recorder:
        sample_original_dit(model, num_steps=STEPS, seed=0)
        sample_original_dit(model, num_steps=STEPS, seed=1)
    for handle in handles:
        handle.remove()
    return recorder.curves(), stored


def test_combos_and_their_weights():
    combos = forecast_combos(lookahead=2, max_order=1)
    steps = {(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 1, 2), (1, 1, 3), (1, 2, 3)}
    runs = {(0, 0, 2), (0, 0, 3), (1, 0, 2), (1, 0, 3)}
    assert set(combos) == steps | runs
    assert [reach(c) for c in combos] == sorted(reach(c) for c in combos)
    matrix = combo_weights(combos)  # columns: outputs 0 (current), 1, 2, ... steps back
    row = matrix[combos.index((1, 2, 3))]  # line through 2 and 5 steps back, minus the truth
    assert row[0] == -1 and row[2] == pytest.approx(5 / 3) and row[5] == pytest.approx(-2 / 3)
    run = matrix[combos.index((1, 0, 3))]  # both skipped steps of a run computing every 3rd
    assert run[:6] == pytest.approx([-1, -1, 3, 0, 0, -1])
    assert np.allclose(matrix.sum(axis=1), 0)  # constants are forecast exactly


def test_forecast_errors_equal_a_direct_computation_per_sample(original_dit):
    """Mean, mean square and worst of ||F_t - O_t||_1 / ||O_t||_1 over every sample of 2 runs."""
    curves, stored = _calibrated(original_dit)
    forecast = curves.forecast
    assert forecast is not None and forecast.max_order == 2 and forecast.lookahead == 2
    paths = [b.path for b in curves.branches]
    for path in PATHS:
        branch_index = paths.index(path)
        outputs = [o.flatten(1) for o in stored[path]]
        runs = [outputs[:STEPS], outputs[STEPS:]]
        for combo in [(1, 1, 2), (2, 2, 3), (0, 2, 3), (2, 1, 3)]:
            k, j, g = combo
            c = forecast.index(*combo)
            for t in (reach(combo), 9, STEPS - 1):
                errors = []
                for run in runs:
                    back = [t - j - i * g for i in range(k + 1)]
                    weights = lagrange_weights(back, t)
                    guess = sum(w * run[s].double() for w, s in zip(weights, back))
                    truth = run[t].double()
                    errors += ((guess - truth).abs().sum(1) / truth.abs().sum(1)).tolist()
                errors = np.array(errors)
                got = forecast.mean[branch_index, 0, c, t]
                assert got == pytest.approx(errors.mean(), rel=1e-4)
                square = forecast.square[branch_index, 0, c, t]
                assert square == pytest.approx((errors**2).mean(), rel=1e-4)
                assert forecast.worst[branch_index, 0, c, t] == pytest.approx(
                    errors.max(), rel=1e-4
                )
                assert forecast.count[branch_index, 0, c, t] == 4  # 2 runs x 2 samples
                assert errors.max() > errors.mean() * 1.01  # samples differ: worst is not the mean
            assert forecast.count[branch_index, 0, c, reach(combo) - 1] == 0  # not readable yet


def test_orders_zero_records_no_forecast_and_the_method_says_so():
    model = toy()
    with smoothcache.calibrating(model, lookahead=2, adapter=ToyAdapter(), orders=0) as recorder:
        run_toy(model, torch.randn(2, 4), steps=STEPS)
    curves = recorder.curves()
    assert curves.forecast is None
    with pytest.raises(ScheduleError, match="needs forecast errors"):
        curves.schedule(compute_fraction=0.5, method="forecast")
    with pytest.raises(ScheduleError, match="give compute_fraction"):
        curves.schedule(alpha=0.1, method="forecast")
    with pytest.raises(ScheduleError, match="needs forecast errors"):
        curves.forecast_candidates(compute_fraction=0.5)
    with pytest.raises(smoothcache.CalibrationError, match="orders must be an integer"):
        smoothcache.calibrating(model, adapter=ToyAdapter(), orders=4).__enter__()


def test_save_load_keeps_forecast_errors_and_rejects_bad_tensors(tmp_path: Path, original_dit):
    curves, _ = _calibrated(original_dit)
    path = tmp_path / "c.safetensors"
    curves.save(path)
    loaded = ErrorCurves.load(path)
    assert loaded.forecast is not None and loaded.forecast.combos == curves.forecast.combos
    for name in ("mean", "square", "worst", "count"):
        a, b = getattr(loaded.forecast, name), getattr(curves.forecast, name)
        assert np.array_equal(a, b, equal_nan=True), name
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for bad in (
        {"forecast_count": tensors["forecast_count"].float()},
        {"forecast_mean": tensors["forecast_mean"].half()},
        {"forecast_worst": -tensors["forecast_worst"].nan_to_num(1.0) - 1},
        {"forecast_square": tensors["forecast_square"].nan_to_num(float("inf")) * float("inf")},
    ):
        broken = tmp_path / "broken.safetensors"
        save_file({**tensors, **bad}, str(broken), metadata=header)
        with pytest.raises(CurvesFileError, match="is corrupt"):
            ErrorCurves.load(broken)


def _synthetic(
    square: np.ndarray, combos: list[tuple[int, int, int]], sensitivity: Sensitivity | None = None
) -> ErrorCurves:
    """Curves with the given forecast mean squares (combos, steps) for one branch of kind 'a'."""
    n = square.shape[1]
    mean = np.full((1, 1, 3, n), 0.1)
    count = np.ones((1, 1, 3, n), dtype=np.int64)
    shape = (1, 1, len(combos), n)
    errors = ForecastErrors(
        tuple(combos),
        np.sqrt(square).reshape(shape),
        square.reshape(shape),
        np.sqrt(square).reshape(shape),
        np.isfinite(square).reshape(shape).astype(np.int64),  # unmeasured where NaN
    )
    return ErrorCurves(
        [Branch("a", "a", 0)],
        mean,
        np.zeros_like(mean),
        count,
        {},
        sensitivity=sensitivity,
        forecast=errors,
    )


# Brute force: every row of a budget, costed by hand from the forecast errors (independent of
# the search's dynamic program and of its cost table), for curves of one branch.


def _order_by_hand(errors: list[float], cap: int, prior: float) -> int:
    """The order a run takes, as the search's docstring states it: among the measured orders
    ``0..cap``, the one of least error (``prior`` 1), or the highest within ``prior`` times the
    least; reuse when none is measured."""
    measured = [(e, k) for k, e in enumerate(errors[: cap + 1]) if math.isfinite(e)]
    if not measured:
        return 0
    least = min(e for e, _ in measured)
    if prior <= 1.0:
        return min(k for e, k in measured if e == least)
    return max(k for e, k in measured if e <= prior * least)


def _row_by_hand(
    square: np.ndarray,
    combos: list[tuple[int, int, int]],
    row: tuple[int, ...],
    *,
    cap: int = MAX_ORDER,
    prior: float = 1.0,
    response: np.ndarray | None = None,
) -> tuple[float, tuple[int, ...]]:
    """What the search should predict for ``row`` and the orders it should give it.

    A run computing at ``s`` and skipping ``s + 1 .. e - 1`` costs the mean square error of its
    run combo ``(k, 0, e - s)`` at its last skipped step, ``k`` chosen over every order; with a
    ``response`` (a diagonal sensitivity: a reuse at step ``m`` moves the final output by
    ``response[m]``), that times the run's reuse cost ``sum_m (e - m)^2 response[m]^2`` over its
    own reuse error. Its orders: chosen the same way among the orders the computes so far can
    feed (``k + 1`` of them).
    """
    by_combo = {combo: square[c] for c, combo in enumerate(combos)}
    top = max(k for k, _, _ in combos)
    computed = [t for t, c in enumerate(row) if c]
    cost, orders = 0.0, [0] * len(row)
    for before, (start, end) in enumerate(itertools.pairwise(computed)):
        if end - start < 2:
            continue
        errors = [float(by_combo[(k, 0, end - start)][end - 1]) for k in range(top + 1)]
        errors = [e if math.isfinite(e) else math.inf for e in errors]
        value = errors[_order_by_hand(errors, cap, prior)]
        if response is not None:
            reuse = sum((end - m) ** 2 * response[m] ** 2 for m in range(start + 1, end))
            value = reuse * value / errors[0]
        cost += value
        order = _order_by_hand(errors[: before + 1], cap, prior)
        orders[start + 1 : end] = [order] * (end - start - 1)
    return cost, tuple(orders)


def _cheapest(
    square: np.ndarray,
    combos: list[tuple[int, int, int]],
    computes: int,
    lookahead: int,
    **costing: Any,
) -> list[tuple[float, tuple[int, ...]]]:
    """Every row with ``computes`` computed steps (the first and last among them, no run longer
    than ``lookahead``) with its cost by hand, cheapest first."""
    n = square.shape[1]
    ranked = []
    for inner in itertools.combinations(range(1, n - 1), computes - 2):
        computed = (0, *inner, n - 1)
        if max(b - a - 1 for a, b in itertools.pairwise(computed)) > lookahead:
            continue
        row = tuple(int(t in computed) for t in range(n))
        ranked.append((_row_by_hand(square, combos, row, **costing)[0], row))
    return sorted(ranked)


def _assert_cheapest(
    schedule: Schedule,
    square: np.ndarray,
    combos: list[tuple[int, int, int]],
    computes: int,
    lookahead: int,
    **costing: Any,
) -> None:
    """``schedule`` computes ``computes`` steps at a cheapest row found by brute force, with the
    orders and the predicted cost that row has by hand."""
    row = schedule.rows["a"]
    orders = schedule.orders.get("a", (0,) * len(row))  # a schedule that only reuses has none
    assert sum(row) == computes
    cost, by_hand = _row_by_hand(square, combos, row, **costing)
    least = _cheapest(square, combos, computes, lookahead, **costing)[0][0]
    assert cost == pytest.approx(least, rel=1e-12)
    assert schedule.metadata["predicted_cost"] == pytest.approx(cost, rel=1e-12)
    assert orders == by_hand


def test_search_forecasts_only_where_the_calibration_says_it_is_better():
    """Order 1 beats reuse everywhere but at steps 10-13, where it blows up on some sample."""
    n = 20
    combos = forecast_combos(lookahead=3, max_order=2)
    square = np.zeros((len(combos), n))
    for c, (k, j, g) in enumerate(combos):
        base = 0.01 * (j or g) ** 2
        square[c] = {0: base, 1: base / 10, 2: base / 5}[k]
        if k:  # the tail: a few samples break at steps 10-13, in every run that skips one
            last = 14 + (g - 2 if j == 0 else 0)  # a run combo at t covers t - g + 2 .. t
            square[c, 10:last] = 1.0
        square[c, : reach((k, j, g))] = np.nan
    schedule = _synthetic(square, combos).schedule(compute_fraction=0.3, method="forecast")
    row, orders = schedule.rows["a"], schedule.orders["a"]
    assert sum(row) == 6 and schedule.compute_fraction == 0.3
    skipped = [t for t in range(n) if not row[t]]
    assert all(orders[t] == 0 for t in skipped if 10 <= t <= 13)
    assert any(orders[t] == 1 for t in skipped if t < 10 or t > 13)
    assert all(orders[t] != 2 for t in skipped)  # order 2 is never the best here
    assert schedule.metadata["method"] == "forecast"


def test_search_never_asks_for_more_computes_than_the_row_has():
    """Higher orders always look better, so each run takes the highest order its computes so
    far can feed: the first run reuses, the second extrapolates with order 1, the third with
    order 2, every later one with order 3 (order k needs k + 1 computed outputs)."""
    n = 20
    combos = forecast_combos(lookahead=4, max_order=3)
    square = np.zeros((len(combos), n))
    for c, (k, j, g) in enumerate(combos):
        square[c] = 0.01 * (j or g) / (k + 1)  # higher orders always look better
    schedule = _synthetic(square, combos).schedule(compute_fraction=0.25, method="forecast")
    row, orders = schedule.rows["a"], schedule.orders["a"]
    assert sum(row) == 5
    computed = [t for t in range(n) if row[t]]
    expected = [0] * n
    for before, (start, end) in enumerate(itertools.pairwise(computed)):
        expected[start + 1 : end] = [min(before, 3)] * (end - start - 1)
    assert orders == tuple(expected)
    assert max(orders) == 3  # the row has runs enough to reach order 3


def test_recorded_forecast_schedule_runs_and_forecasts():
    """On the trained reference model the search forecasts, and beats reuse at its own steps."""
    from smoothcache.reference import load_reference_model, psnr, sample

    model = load_reference_model()
    with smoothcache.calibrating(model, lookahead=4) as recorder:
        sample(model, [0, 1, 2, 3], num_steps=20, seed=1000)
    schedule = recorder.curves().schedule(compute_fraction=0.3, method="forecast")
    assert schedule.compute_fraction <= 0.3
    plain = sample(model, [4, 5, 6, 7], num_steps=20, seed=0)
    with smoothcache.enabled(model, schedule) as session:
        forecast = sample(model, [4, 5, 6, 7], num_steps=20, seed=0)
    with smoothcache.enabled(model, Schedule(schedule.rows)):
        reused = sample(model, [4, 5, 6, 7], num_steps=20, seed=0)
    stats = session.stats
    assert stats.total_reused > 0 and sum(stats.fallbacks.values()) == 0
    assert sum(stats.forecast.values()) > 0  # the calibration found forecasts worth making
    assert sum(stats.forecast.values()) == sum(
        sum(1 for k in schedule.orders_for(b.kind, b.block) or () if k) for b in session.branches
    )
    assert psnr(forecast, plain) > psnr(reused, plain) + 1.0


def test_preferred_order_takes_the_highest_order_within_the_prior():
    from smoothcache.searches.forecast import preferred_order

    errors = np.array([1.0, 0.2, 0.3, np.inf])
    assert preferred_order(errors) == 1  # the least error
    assert preferred_order(errors, prior=2.0) == 2  # 0.3 is within 2 x 0.2; order 3 unmeasured
    assert preferred_order(errors, cap=1, prior=2.0) == 1
    assert preferred_order(errors, cap=0) == 0
    assert preferred_order(np.full(4, np.inf)) == 0


def test_candidates_are_distinct_within_budget_and_start_with_the_plain_search():
    n = 20
    combos = forecast_combos(lookahead=4, max_order=3)
    square = np.zeros((len(combos), n))
    for c, (k, j, g) in enumerate(combos):
        square[c] = 0.01 * (j or g) * (1.0, 0.3, 0.4, 0.5)[k]  # order 1 least, 2-3 close
    candidates = _synthetic(square, combos).forecast_candidates(compute_fraction=0.25)
    _assert_cheapest(candidates[0], square, combos, 5, 4)  # the plain search's defaults
    for candidate in candidates:
        meta = candidate.metadata
        costing = {"cap": meta["order_cap"], "prior": meta["order_prior"]}
        _assert_cheapest(candidate, square, combos, 5, 4, **costing)
    assert len({c.fingerprint() for c in candidates}) == len(candidates) > 2
    assert all(c.compute_fraction <= 0.25 for c in candidates)
    highest = {max(c.orders.get("a", (0,))) for c in candidates}
    assert {0, 1, 2, 3} <= highest  # reuse only, and caps 1-3 reached through the priors


def _order_curves(n: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Mean squares where order 1 is 4x better than reuse and no step stands out."""
    combos = forecast_combos(lookahead=4, max_order=1)
    square = np.zeros((len(combos), n))
    for c, (k, j, g) in enumerate(combos):
        square[c] = 0.01 * (j or g) ** 2 * (1.0, 0.25)[k]
    return square, combos


def test_weighted_search_computes_where_the_final_output_is_sensitive():
    """Steps 8-11 amplify every error 1000x: only the weighted search computes densely there,
    and its predicted cost is the sensitivity's reuse cost times the order's error ratio."""
    n = 24
    square, combos = _order_curves(n)
    response = np.full(n, 1e-4)
    response[[0, -1]] = 0.0
    response[8:12] = 0.1
    sensitivity = Sensitivity((ALL_BRANCHES,), np.diag(response**2)[None], np.zeros((1, n, n)))
    curves = _synthetic(square, combos, sensitivity)
    plain = curves.schedule(compute_fraction=0.3, method="forecast")
    weighted = forecast_schedule(curves, 0.3, False, weighted=True)
    assert sum(weighted.rows["a"]) == sum(plain.rows["a"]) == 7
    assert sum(weighted.rows["a"][8:12]) > sum(plain.rows["a"][8:12])
    assert weighted.metadata["weighted"] and not plain.metadata["weighted"]
    _assert_cheapest(plain, square, combos, 7, 4)
    _assert_cheapest(weighted, square, combos, 7, 4, response=response)
    assert set(weighted.orders["a"]) == {0, 1}  # order 1 is better everywhere it can be


def _random_curves(n: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Mean squares (lookahead 3, orders 0-2) drawn log-uniformly over two decades at every step,
    NaN where a combo cannot be read yet: caps and priors lead to different choices, and no two
    rows cost the same."""
    combos = forecast_combos(lookahead=3, max_order=2)
    square = 10 ** np.random.default_rng(seed).uniform(-3, -1, (len(combos), n))
    for c, combo in enumerate(combos):
        square[c, : reach(combo)] = np.nan
    return square, combos


def test_with_a_sensitivity_every_candidate_but_the_plain_search_is_weighted():
    """The candidates, each against a brute force over every row of the budget: the plain search
    (unweighted) first, then every member of the family placed by the sensitivity, in family
    order, repeats dropped."""
    n, computes, lookahead = 14, 5, 3
    square, combos = _random_curves(n, seed=0)
    response = np.random.default_rng(1).uniform(0.02, 0.05, n)  # no two reuse runs alike
    response[[0, -1]] = 0.0
    response[5:8] = 1.0  # reuse at steps 5-7 moves the final output some 30x more
    sensitivity = Sensitivity((ALL_BRANCHES,), np.diag(response**2)[None], np.zeros((1, n, n)))
    candidates = _synthetic(square, combos, sensitivity).forecast_candidates(compute_fraction=0.36)

    def brute_force(cap: int, prior: float, weighted: bool) -> tuple[tuple[int, ...], ...]:
        costing = {"cap": cap, "prior": prior, "response": response if weighted else None}
        (cost, row), (runner_up, _) = _cheapest(square, combos, computes, lookahead, **costing)[:2]
        assert runner_up > cost * (1 + 1e-9)  # one cheapest row: the answer is unambiguous
        return row, _row_by_hand(square, combos, row, **costing)[1]

    family = [(MAX_ORDER, 1.0)] + [
        (cap, prior)
        for cap, prior in itertools.product(CANDIDATE_CAPS, CANDIDATE_PRIORS)
        if cap or prior == 1.0
    ]
    expected = {brute_force(MAX_ORDER, 1.0, False): False}
    for cap, prior in family:
        expected.setdefault(brute_force(cap, prior, True), True)
    decided = [(c.rows["a"], c.orders.get("a", (0,) * n)) for c in candidates]
    assert decided == list(expected)
    assert [c.metadata["weighted"] for c in candidates] == list(expected.values())
    assert len(candidates) > 2
    # the crafted input is one where the weighting moves computes
    unweighted = {brute_force(cap, prior, False)[0] for cap, prior in family}
    assert {c.rows["a"] for c in candidates[1:]} - unweighted
    with pytest.raises(ScheduleError, match="measure_sensitivity"):
        forecast_schedule(_synthetic(square, combos), 0.3, False, weighted=True)


def test_a_smaller_family_is_the_same_members_restricted():
    """``caps`` and ``priors`` choose the family: a smaller one gives the members of the full
    family with those settings (tune's), in the same order; an empty or impossible one is an
    error that names the defaults."""
    n = 14
    square, combos = _random_curves(n, seed=0)
    response = np.random.default_rng(1).uniform(0.02, 0.05, n)
    response[[0, -1]] = 0.0
    sensitivity = Sensitivity((ALL_BRANCHES,), np.diag(response**2)[None], np.zeros((1, n, n)))
    curves = _synthetic(square, combos, sensitivity)
    full = curves.forecast_candidates(compute_fraction=0.36)
    small = curves.forecast_candidates(compute_fraction=0.36, caps=(1, 3), priors=(2.0,))
    settings = [(c.metadata["order_cap"], c.metadata["order_prior"]) for c in small]
    top = full[0].metadata["order_cap"]  # the caps are clipped to the orders measured
    assert settings[0] == (top, 1.0) and not small[0].metadata["weighted"]
    assert set(settings[1:]) <= {(top, 1.0), (1, 2.0), (min(3, top), 2.0)}
    by_print = {c.fingerprint() for c in full}
    assert {c.fingerprint() for c in small} <= by_print and len(small) < len(full)
    for caps, priors in (((), (1.0,)), ((4,), (1.0,)), ((1,), (0.5,)), ((1,), ())):
        with pytest.raises(ScheduleError, match=r"caps must be orders 0\.\.3"):
            curves.forecast_candidates(compute_fraction=0.36, caps=caps, priors=priors)


def test_select_schedule_picks_the_candidate_closest_to_the_uncached_output(original_dit):
    """Checked against an independent scoring of every candidate."""
    curves, _ = _calibrated(original_dit, lookahead=3, orders=3)
    candidates = curves.forecast_candidates(compute_fraction=0.4)
    assert len(candidates) > 1

    def run():
        return sample_original_dit(original_dit, num_steps=STEPS, seed=7)

    calls = []
    chosen = smoothcache.select_schedule(
        original_dit, run, candidates, on_run=lambda done, total: calls.append((done, total))
    )
    plain = run().double()
    expected = []
    for candidate in candidates:
        with smoothcache.enabled(original_dit, candidate):
            expected.append(float(((run().double() - plain) ** 2).mean()))
    assert chosen.metadata["selection_mse"] == pytest.approx(expected, rel=1e-12)
    best = int(np.argmin(expected))
    assert chosen.metadata["selected"] == best
    assert chosen.fingerprint() == candidates[best].fingerprint()
    assert calls[-1] == (2 + len(candidates), 2 + len(candidates))
    assert len(set(expected)) > 1  # the candidates really differ in quality


def test_weighted_candidates_from_a_measured_sensitivity_run_on_the_model(original_dit):
    """The weighted members made from a real sensitivity are valid schedules of the model that
    forecast, and place their computes differently from the plain search (the one unweighted
    candidate)."""
    curves, _ = _calibrated(original_dit, lookahead=3, orders=3)

    def run():
        return sample_original_dit(original_dit, num_steps=STEPS, seed=3)

    curves = smoothcache.measure_sensitivity(original_dit, run, curves)
    candidates = curves.forecast_candidates(compute_fraction=0.5)
    weighted = [c for c in candidates if c.metadata["weighted"]]
    plain = [c for c in candidates if not c.metadata["weighted"]]
    assert weighted and len(plain) == 1 and candidates[0] is plain[0]
    rows = {c.rows[next(iter(c.rows))] for c in plain}
    assert any(c.rows[next(iter(c.rows))] not in rows for c in weighted)
    assert any(any(any(o) for o in c.orders.values()) for c in weighted)
    uncached = run()
    for candidate in weighted:
        with smoothcache.enabled(original_dit, candidate) as session:
            output = run()
        assert candidate.compute_fraction <= 0.5
        if any(any(o) for o in candidate.orders.values()):
            assert sum(session.stats.forecast.values()) > 0
        assert not torch.equal(output, uncached)


def test_select_schedule_refuses_bad_input(original_dit):
    with pytest.raises(smoothcache.ArgumentError, match="at least one schedule"):
        smoothcache.select_schedule(original_dit, lambda: torch.zeros(1), [])
    seeds = iter(range(10))
    with pytest.raises(smoothcache.CalibrationError, match="deterministic"):
        smoothcache.select_schedule(
            original_dit,
            lambda: sample_original_dit(original_dit, num_steps=STEPS, seed=next(seeds)),
            [Schedule.uniform(STEPS, 2, ["attn"])],
        )


def test_the_default_calibration_reaches_a_fifth_of_the_compute(original_dit):
    """Calibration's default lookahead lets the default search make a schedule at 20% of the
    branch-steps (lookahead 3 stops at a quarter: the error names the remedy)."""
    with smoothcache.calibrating(original_dit) as recorder:
        sample_original_dit(original_dit, num_steps=20, seed=0)
    curves = recorder.curves()
    schedule = curves.schedule(compute_fraction=0.2)
    assert schedule.metadata["method"] == "forecast"
    assert 0.15 < schedule.metadata["compute_fraction"] <= 0.2
    with smoothcache.calibrating(original_dit, lookahead=3) as recorder:
        sample_original_dit(original_dit, num_steps=20, seed=0)
    with pytest.raises(ScheduleError, match="lookahead"):
        recorder.curves().schedule(compute_fraction=0.2)


def test_the_search_computes_where_a_second_denoiser_takes_over_and_forecasts_from_its_own():
    """Two branches of one kind, the second running from step 8 on (Wan 2.2's second expert):
    forecasts that suit every step, yet the search computes at step 8 (nothing of the second
    branch is stored before it) and no forecast after it reads more of the second branch's
    outputs than it computed; ``within_spans`` lowers a uniform schedule's orders the same way."""
    from smoothcache.searches.forecast import within_spans

    n, lookahead = 16, 3
    combos = forecast_combos(lookahead, 2)
    square = np.full((len(combos), n), 1.0)
    for row, (k, _, _) in enumerate(combos):
        square[row] = 1.0 / (1 + 10 * k)  # higher orders always better
    one = _synthetic(square, combos)
    f = one.forecast
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    count = both(one.count)
    count[0, :, :, 8:] = 0  # the first branch stops at step 7
    count[1, :, :, :9] = 0  # the second branch starts at step 8 (lag-1 pairs from step 9)
    forecast = ForecastErrors(f.combos, both(f.mean), both(f.square), both(f.worst), both(f.count))
    curves = ErrorCurves(
        [Branch("a.0", "a", 0), Branch("b.0", "a", 1)],
        both(one.mean),
        both(one.std),
        count,
        {},
        forecast=forecast,
    )
    schedule = forecast_schedule(curves, 0.5, False)
    row, orders = schedule.rows["a"], schedule.orders["a"]
    assert row[8] == 1
    computed = [t for t in range(n) if row[t]]
    for step in range(9, n):
        if not row[step]:
            since = [c for c in computed if 8 <= c < step]
            assert orders[step] <= len(since) - 1
    assert max(orders[9:]) >= 1  # forecasts made once the second branch has outputs
    uniform = Schedule.uniform(n, 3, ["a"], order=2)
    capped = within_spans(uniform, curves).orders["a"]
    assert uniform.orders["a"][10] == 2 and capped[10] == 0  # after step 9: one output of b
