"""Fitted forecasts (issue #28): the inner products calibration records, the weights fitted from
them, the schedule that carries them, and the search that scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import smoothcache
from smoothcache import CalibrationError, Schedule, ScheduleError
from smoothcache.fitting import fit_forecasts, run_ratios
from smoothcache.forecast import lagrange_weights, plan_reads
from smoothcache.measurements import ForecastErrors
from smoothcache.testing.models.original_dit import sample_original_dit
from tests.searches.test_forecast_search import PATHS, STEPS, _calibrated
from tests.test_calibration import store_outputs


def _calibrated_all(model) -> tuple[smoothcache.ErrorCurves, dict]:
    """Like ``_calibrated`` (lookahead 2, orders 2), keeping every branch's outputs."""
    adapter = smoothcache.detect(model)
    stored, handles = store_outputs(model, [b.path for b in adapter.branches(model)])
    with smoothcache.calibrating(model, lookahead=2, orders=2) as recorder:
        sample_original_dit(model, num_steps=STEPS, seed=0)
        sample_original_dit(model, num_steps=STEPS, seed=1)
    for handle in handles:
        handle.remove()
    return recorder.curves(), stored


def _outputs(stored: dict, path: str) -> list[torch.Tensor]:
    """Branch ``path``'s outputs of both calibration runs, one (samples, features) per step."""
    outputs = [o.flatten(1).double() for o in stored[path]]
    return [torch.cat([outputs[t], outputs[STEPS + t]]) for t in range(STEPS)]


def test_the_gram_is_the_inner_products_of_the_outputs(original_dit):
    curves, stored = _calibrated(original_dit, lookahead=2, orders=2)
    forecast = curves.forecast
    assert forecast.gram is not None and forecast.gram.shape[2:] == (STEPS, 1 + 2 + 2 * 3)
    paths = [b.path for b in curves.branches]
    for path in PATHS:
        b = paths.index(path)
        outputs = _outputs(stored, path)
        for t in (0, 5, STEPS - 1):
            for lag in range(forecast.gram.shape[3]):
                if lag > t:
                    assert forecast.gram_count[b, 0, t, lag] == 0
                    continue
                want = float((outputs[t] * outputs[t - lag]).sum())
                assert forecast.gram[b, 0, t, lag] == pytest.approx(want, rel=1e-9)
                assert forecast.gram_count[b, 0, t, lag] == 4  # 2 runs x 2 samples


def _by_hand(outputs: dict, paths: list[str], read: tuple, step: int, exact: int) -> np.ndarray:
    """Least squares over the outputs of ``paths`` (their samples and features stacked), with
    the weights summing to one for ``exact=0``."""
    X = torch.cat(
        [torch.stack([outputs[p][a] for a in read], -1).reshape(-1, len(read)) for p in paths]
    )
    y = torch.cat([outputs[p][step].reshape(-1) for p in paths])
    X, y = X.numpy(), y.numpy()
    if exact < 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    # y - X[:, -1] = (X[:, :-1] - X[:, -1:]) v, with the last weight 1 - sum(v)
    v = np.linalg.lstsq(X[:, :-1] - X[:, -1:], y - X[:, -1], rcond=None)[0]
    return np.append(v, 1 - v.sum())


@pytest.mark.parametrize("exact", [-1, 0])
def test_fitted_weights_are_the_least_squares_fit_of_the_calibration_outputs(original_dit, exact):
    curves, stored = _calibrated_all(original_dit)
    row = [1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    schedule = Schedule({"attn": row, "mlp": row}).forecasting(2)
    fitted = fit_forecasts(schedule, curves, ridge=0.0, exact=exact)
    outputs = {p: _outputs(stored, p) for p in stored}
    attn = [b.path for b in curves.branches if b.kind == "attn"]
    checked = 0
    for step, (skip, read, _) in enumerate(plan_reads(row, schedule.orders["attn"])):
        weights = fitted.weights["attn"][step]
        if not skip or len(read) < 2 or read[-1] - read[0] >= 9 or step - read[0] >= 9:
            continue  # reuse, or anchors outside the recorded window
        want = _by_hand(outputs, attn, read, step, exact)
        assert weights == pytest.approx(tuple(want), rel=1e-5, abs=1e-7)
        assert not np.allclose(weights, lagrange_weights(read, step), atol=1e-3)
        checked += 1
    assert checked >= 4
    meta = fitted.metadata["fitted"]
    assert meta["steps"] == sum(w is not None for w in fitted.weights["attn"]) + sum(
        w is not None for w in fitted.weights["mlp"]
    )
    assert meta["calibration_gain_db"] > 0  # the fit is at least as good where it was fitted


def test_the_weights_reproduce_a_constant_exactly_by_default(original_dit):
    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    schedule = Schedule({"attn": [1, 1, 1, 0, 1, 0, 1, 0] * 2}).forecasting(2)
    fitted = fit_forecasts(schedule, curves)
    sums = [sum(w) for w in fitted.weights["attn"] if w is not None]
    assert sums and np.allclose(sums, 1.0)
    free = fit_forecasts(schedule, curves, exact=-1)
    assert not np.allclose([sum(w) for w in free.weights["attn"] if w is not None], 1.0)
    line = fit_forecasts(Schedule({"attn": [1, 1, 0] * 5 + [1]}).forecasting(1), curves, exact=1)
    assert not line.weights and line.metadata["fitted"]["steps"] == 0  # nothing left to fit


def test_a_fitted_schedule_does_the_same_counted_work_as_lagrange(original_dit):
    """A run answers as many aten ops, of the same kinds, with fitted weights as with
    Lagrange's (the weights' tensors are made once per session, by the first run)."""
    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    row = [1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1]
    schedule = Schedule({"attn": row, "mlp": row}).forecasting(1)
    fitted = fit_forecasts(schedule, curves)
    assert fitted.weights and fitted.fingerprint() != schedule.fingerprint()

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func)] = self.ops.get(str(func), 0) + 1
            return func(*args, **(kwargs or {}))

    counted, images = [], []
    for chosen in (schedule, fitted):
        with smoothcache.enabled(original_dit, chosen) as session:
            sample_original_dit(original_dit, num_steps=STEPS, seed=5)
            with Ops() as ops:
                images.append(sample_original_dit(original_dit, num_steps=STEPS, seed=5))
        counted.append(ops.ops)
        assert sum(session.stats.forecast.values()) > 0
    assert counted[0] == counted[1]
    assert not torch.equal(images[0], images[1])  # the weights were used


def test_weights_in_a_schedule_are_checked_and_saved(tmp_path: Path):
    row = [1, 1, 0, 0, 1, 0]
    orders = [0, 0, 1, 1, 0, 1]
    weights = [None, None, [-0.4, 1.3], [-0.9, 1.8], None, None]
    schedule = Schedule(
        {"attn": row, "mlp": row}, orders={"attn": orders}, weights={"attn": weights}
    )
    assert schedule.weights_for("attn", 3) == ((None, None, (-0.4, 1.3), (-0.9, 1.8), None, None))
    assert schedule.weights_for("mlp", 0) is None
    path = tmp_path / "s.json"
    schedule.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 4 and data["weights"]["attn"][2] == [-0.4, 1.3]
    again = Schedule.load(path)
    assert again == schedule and again.fingerprint() == schedule.fingerprint()
    assert Schedule({"attn": row}, orders={"attn": orders}).to_dict()["version"] == 2
    data["version"] = 3
    with pytest.raises(ScheduleError, match=r'cannot carry fitted weights.*"version": 4'):
        Schedule.from_dict(data)
    bad = {
        "at a computed step": ([-0.4, 1.3], None, None, None, None, None),
        "order 0": (None, None, None, None, [0.1, 0.9], None),
        "wrong count": (None, None, [1.0], None, None, None),
        "not finite": (None, None, [float("nan"), 1.0], None, None, None),
        "a bool": (None, None, [True, 1.0], None, None, None),
        "too short": (None, None),
    }
    for entry in bad.values():
        with pytest.raises(ScheduleError, match="weights of 'attn'"):
            Schedule({"attn": row}, orders={"attn": orders}, weights={"attn": entry})
    with pytest.raises(ScheduleError, match="no row"):
        Schedule({"attn": row}, orders={"attn": orders}, weights={"mlp": weights})
    # another step count: the weights belong to the source's steps and are dropped, said
    mapped = schedule.remapped(12)
    assert not mapped.weights
    assert mapped.metadata["remapped_from"]["fitted_weights_dropped"] == ["attn"]
    assert schedule.renamed({"attn": "attn1"}).weights["attn1"] == schedule.weights["attn"]
    assert not schedule.forecasting(1).weights
    assert "fitted_keys=[attn]" in repr(schedule)


def test_fitting_needs_the_inner_products_and_a_schedule_of_the_curves(original_dit):
    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    schedule = Schedule({"attn": [1, 1, 0, 1] * 4}).forecasting(1)
    f = curves.forecast
    old = ForecastErrors(f.combos, f.mean, f.square, f.worst, f.count, f.metadata)
    curves.forecast = old  # curves recorded before the gram existed
    with pytest.raises(CalibrationError, match="calibrate again"):
        fit_forecasts(schedule, curves)
    curves.forecast = f
    with pytest.raises(ScheduleError, match="8 steps but the curves 16"):
        fit_forecasts(Schedule({"attn": [1, 1, 0, 1] * 2}).forecasting(1), curves)
    with pytest.raises(ScheduleError, match="names no branch"):
        fit_forecasts(Schedule({"cross": [1, 1, 0, 1] * 4}).forecasting(1), curves)
    with pytest.raises(ScheduleError, match="ridge must be"):
        fit_forecasts(schedule, curves, ridge=-1.0)
    with pytest.raises(ScheduleError, match="exact must be"):
        fit_forecasts(schedule, curves, exact=-2)
    with pytest.raises(CalibrationError, match="gram and gram_count"):
        ForecastErrors(f.combos, f.mean, f.square, f.worst, f.count, gram=f.gram)
    with pytest.raises(CalibrationError, match="shaped"):
        ForecastErrors(
            f.combos,
            f.mean,
            f.square,
            f.worst,
            f.count,
            gram=f.gram[:, :, 1:],
            gram_count=f.gram_count[:, :, 1:],
        )


def test_curves_files_keep_the_gram_and_older_files_load(tmp_path: Path, original_dit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    path = tmp_path / "c.safetensors"
    curves.save(path)
    loaded = smoothcache.ErrorCurves.load(path)
    assert np.array_equal(loaded.forecast.gram, curves.forecast.gram)
    assert np.array_equal(loaded.forecast.gram_count, curves.forecast.gram_count)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if "gram" not in k}
    save_file(tensors, str(path), metadata=header)
    older = smoothcache.ErrorCurves.load(path)
    assert older.forecast is not None and older.forecast.gram is None


def test_run_ratios_score_the_fitted_runs_and_the_search_carries_their_weights(original_dit):
    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    forecast = curves.forecast
    members = np.array([b.kind == "attn" for b in curves.branches])
    ratios = run_ratios(forecast, members)
    runs = [i for i, (k, j, _) in enumerate(forecast.combos) if k and not j]
    others = [i for i in range(len(forecast.combos)) if i not in runs]
    assert np.all(ratios[others] == 1.0)
    measured = ratios[runs][np.isfinite(ratios[runs])]
    assert measured.size and np.all(measured <= 1.0) and measured.min() < 0.9
    fitted = curves.schedule(compute_fraction=0.5, method="fitted")
    plain = curves.schedule(compute_fraction=0.5, method="forecast")
    assert fitted.compute_fraction <= 0.5 and fitted.metadata["fitted"]["steps"] > 0
    assert fitted.weights and not plain.weights


def test_candidates_can_follow_every_member_with_its_fitted_twin(original_dit):
    from smoothcache.racing import tune_candidates

    curves, _ = _calibrated(original_dit, lookahead=2, orders=2)
    plain = curves.forecast_candidates(0.5)
    twins = curves.forecast_candidates(0.5, fitted=True)
    assert [s.fingerprint() for s in twins if not s.weights] == [s.fingerprint() for s in plain]
    assert twins[1].weights and twins[1].metadata["fitted"]["steps"] > 0  # the search's twin
    assert len({s.fingerprint() for s in twins}) == len(twins)
    labels = [label for label, _, _ in tune_candidates(curves, 0.5, fitted=True)]
    assert labels[:2] == ["forecast search", "forecast search, fitted"]
    assert not any("fitted" in label for label, _, _ in tune_candidates(curves, 0.5))
