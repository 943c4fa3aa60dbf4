"""Anchors kept in 16 bits (``smoothcache.engine.low_precision``): half the stored bytes, the
same skips, answers within the storage dtype's rounding of the float32 ones, fitted weights
honoured."""

from __future__ import annotations

import pytest
import torch

import smoothcache
from smoothcache import Schedule
from smoothcache.engine import low_precision
from smoothcache.errors import ArgumentError
from smoothcache.testing.models.original_dit import sample_original_dit
from tests.conftest import count_original_calls

STEPS = 10
ROW = [1, 1, 0, 1, 0, 0, 1, 0, 1, 1]
PATHS = ["blocks.0.attn", "blocks.1.mlp"]


def _run(model, schedule: Schedule) -> tuple[torch.Tensor, smoothcache.CacheStats, dict]:
    with count_original_calls(model, PATHS) as calls:
        with smoothcache.enabled(model, schedule) as session:
            out = sample_original_dit(model, num_steps=STEPS, seed=3)
    return out, session.stats, dict(calls)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sixteen_bit_anchors_halve_the_bytes_and_round_only(original_dit, dtype):
    plain = sample_original_dit(original_dit, num_steps=STEPS, seed=3)
    schedule = Schedule({"attn": ROW, "mlp": ROW}).forecasting(1)
    full, full_stats, full_calls = _run(original_dit, schedule)
    half, half_stats, half_calls = _run(original_dit, low_precision(schedule, dtype))
    assert half_calls == full_calls == {p: sum(ROW) for p in PATHS}  # the same skips
    assert half_stats.peak_cache_bytes * 2 == full_stats.peak_cache_bytes
    assert sum(half_stats.forecast.values()) == sum(half_stats.reused.values()) > 0
    assert half.dtype == torch.float32
    change = float((half - full).norm() / (full - plain).norm())
    assert 0 < change < 0.05  # rounding of the kept outputs, small beside the caching error


def test_fitted_weights_apply_to_sixteen_bit_anchors(original_dit):
    schedule = Schedule({"attn": ROW, "mlp": ROW}).forecasting(1)
    weights = tuple((-0.9, 1.8) if k else None for k in schedule.orders["attn"])
    fitted = Schedule(schedule.rows, {}, schedule.orders, weights={"attn": weights, "mlp": weights})
    lagrange, _, _ = _run(original_dit, low_precision(schedule, torch.float16))
    full, _, _ = _run(original_dit, fitted)
    half, _, _ = _run(original_dit, low_precision(fitted, torch.float16))
    assert float((half - full).norm()) < 0.05 * float((lagrange - full).norm())


def test_low_precision_refuses_other_dtypes():
    with pytest.raises(ArgumentError, match=r"bfloat16 or torch\.float16"):
        low_precision(Schedule({"attn": ROW}), torch.float32)
