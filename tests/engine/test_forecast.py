"""Forecast: skipped steps answered by extrapolating a branch's last computed outputs."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import smoothcache
from smoothcache import Schedule, ScheduleError
from smoothcache.engine.actions import actions_for
from smoothcache.forecast import combine, lagrange_weights, plan_reads
from smoothcache.testing.models.original_dit import sample_original_dit
from tests.conftest import count_original_calls, sample_two_calls

STEPS = 10
ROW = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]  # computes at 0, 2, 3, 6, 8, 9: uneven gaps
ORDERS = [0, 0, 0, 0, 2, 2, 0, 3, 0, 0]  # reuse at 1, order 2 at 4-5, order 3 at 7


def test_weights_reproduce_polynomials_exactly_with_uneven_gaps():
    positions = [0, 2, 3, 6]
    for degree in range(4):
        coeffs = [Fraction(3), Fraction(-2), Fraction(5, 7), Fraction(1, 3)][: degree + 1]

        def poly(x: int, c: list[Fraction] = coeffs) -> Fraction:
            return sum(ci * x**i for i, ci in enumerate(c))

        for at in (7, 8, 11):
            weights = lagrange_weights(positions[-(degree + 1) :], at)
            value = sum(w * float(poly(x)) for w, x in zip(weights, positions[-(degree + 1) :]))
            assert value == pytest.approx(float(poly(at)), rel=1e-12, abs=1e-12)
    assert lagrange_weights([4], 9) == (1.0,)
    with pytest.raises(ValueError, match="distinct"):
        lagrange_weights([1, 1], 3)


def test_step_plan_stores_only_what_later_forecasts_read():
    plan = plan_reads(ROW, ORDERS)
    needs = [len(read) for _, read, _ in plan]
    holds = [hold for *_, hold in plan]
    assert needs == [0, 1, 0, 0, 3, 3, 0, 4, 0, 0]
    # step 4 reads computes 0, 2, 3 (order 2); step 7 reads 0, 2, 3, 6 (order 3)
    assert holds == [1, 1, 2, 3, 3, 3, 4, 0, 0, 0]
    actions = actions_for(ROW, ORDERS)  # the weights the engine answers with
    assert actions[4][3][1] == lagrange_weights([0, 2, 3], 4)
    assert actions[7][3][1] == lagrange_weights([0, 2, 3, 6], 7)


def test_schedule_orders_roundtrip_and_old_formats_load(tmp_path):
    schedule = Schedule({"attn": ROW, "mlp": ROW}, orders={"attn": ORDERS})
    path = tmp_path / "s.json"
    schedule.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["orders"] == {"attn": ORDERS}
    loaded = Schedule.load(path)
    assert loaded.orders == {"attn": tuple(ORDERS)} and loaded.rows == schedule.rows
    assert loaded.orders_for("attn", 1) == tuple(ORDERS) and loaded.orders_for("mlp", 0) is None
    old = {"format": "smoothcache.schedule", "version": 1, "schedule": {"attn": ROW}}
    assert Schedule.from_dict(old).orders == {}
    assert Schedule.from_dict({"attn": ROW}).orders == {}  # the original SmoothCache format
    # a per-block key overrides the kind's orders along with its row
    both = Schedule({"attn": ROW, "attn-1": ROW}, orders={"attn": ORDERS})
    assert both.orders_for("attn", 0) == tuple(ORDERS) and both.orders_for("attn", 1) is None


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        ({"mlp": [0] * STEPS}, "key 'mlp', which has no row"),
        ({"attn": [0] * 9}, "9 entries but its row has 10"),
        ({"attn": [0, 0, 0, 0, 4, 0, 0, 0, 0, 0]}, "at step 4: expected an integer 0..3"),
        ({"attn": [0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0]}, "at step 4: expected an integer"),
        ({"attn": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]}, "at step 2: order 1 at a step that computes"),
        ({"attn": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]}, "at step 1: a forecast of order 1 needs 2"),
        ({"attn": [0, 0, 0, 0, 3, 0, 0, 0, 0, 0]}, "at step 4: a forecast of order 3 needs 4"),
        ({"attn": "0000"}, "must be a list of integers"),
    ],
)
def test_bad_orders_are_errors_naming_key_and_step(orders, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule({"attn": ROW}, orders=orders)


def test_version_one_with_orders_and_bad_metadata_are_errors():
    with pytest.raises(ScheduleError, match="version 1 schedule cannot carry"):
        Schedule.from_dict(
            {"format": "smoothcache.schedule", "version": 1, "schedule": {"a": ROW}, "orders": {}}
        )
    with pytest.raises(ScheduleError, match="metadata must be a JSON object"):
        Schedule.from_dict(
            {"format": "smoothcache.schedule", "version": 2, "schedule": {"a": ROW}, "metadata": 3}
        )


def _record_outputs(module: torch.nn.Module, sink: list[torch.Tensor]):
    return module.register_forward_hook(lambda _m, _a, out: sink.append(out.detach().clone()))


def test_forecast_skips_the_branch_and_equals_a_hand_computation(original_dit):
    """Each forecast step is the Lagrange extrapolation of the outputs the same run computed.

    Without the fast path a forward hook sees every output the branch returns; the fast path
    (which answers skipped steps before calling the branch) must give the same result.
    """
    schedule = Schedule({"attn": ROW, "mlp": [1] * STEPS}, orders={"attn": ORDERS})
    paths = [f"blocks.{i}.attn" for i in range(len(original_dit.blocks))]
    outputs: list[torch.Tensor] = []
    handle = _record_outputs(original_dit.blocks[1].attn, outputs)
    with count_original_calls(original_dit, paths) as calls:
        with smoothcache.enabled(original_dit, schedule, fast_path=False) as session:
            cached = sample_original_dit(original_dit, num_steps=STEPS)
    handle.remove()
    assert [calls[p] for p in paths] == [sum(ROW)] * len(paths)  # forecast steps never ran it
    stats = session.stats
    assert stats.forecast["blocks.1.attn"] == 3 and stats.reused["blocks.1.attn"] == 4
    assert stats.fallbacks["blocks.1.attn"] == 0
    assert len(outputs) == STEPS
    for step, order in enumerate(ORDERS):
        if not order:
            continue
        computed = [s for s in range(step) if ROW[s]][-(order + 1) :]
        weights = lagrange_weights(computed, step)
        expected = sum(w * outputs[s].double() for w, s in zip(weights, computed))
        torch.testing.assert_close(outputs[step].double(), expected, rtol=1e-5, atol=1e-6)
    with count_original_calls(original_dit, paths) as calls:
        with smoothcache.enabled(original_dit, schedule, fast_path=True) as session:
            fast = sample_original_dit(original_dit, num_steps=STEPS)
    assert [calls[p] for p in paths] == [sum(ROW)] * len(paths)
    assert session.stats.forecast == stats.forecast
    assert torch.equal(fast, cached)
    reuse = Schedule({"attn": ROW, "mlp": [1] * STEPS})
    with smoothcache.enabled(original_dit, reuse):
        reused = sample_original_dit(original_dit, num_steps=STEPS)
    plain = sample_original_dit(original_dit, num_steps=STEPS)
    assert (cached - reused).abs().max() > 1e-4  # forecasting changed the result
    assert (cached - plain).abs().max() > 1e-4


def test_order_zero_is_bit_identical_to_reuse_and_compute_everything_to_no_cache(original_dit):
    plain = sample_original_dit(original_dit, num_steps=STEPS)
    zero = Schedule({"attn": ROW, "mlp": ROW}, orders={"attn": [0] * STEPS})
    with smoothcache.enabled(original_dit, zero):
        a = sample_original_dit(original_dit, num_steps=STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW, "mlp": ROW}):
        b = sample_original_dit(original_dit, num_steps=STEPS)
    assert torch.equal(a, b) and not torch.equal(a, plain)
    with smoothcache.enabled(original_dit, Schedule.uniform(STEPS, 1, ["attn", "mlp"], order=3)):
        assert torch.equal(sample_original_dit(original_dit, num_steps=STEPS), plain)


def test_forecast_memory_is_at_most_k_plus_one_outputs_per_branch(original_dit):
    batch, tokens, hidden = 4, 16, 64  # forward_with_cfg doubles a batch of 2
    one_output = batch * tokens * hidden * 4
    schedule = Schedule.uniform(STEPS, 3, ["attn", "mlp"], order=2)
    with smoothcache.enabled(original_dit, schedule) as session:
        sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=2.0)
        stats = session.stats  # before the session ends: dropped after the last use, not at exit
        held = [(m.__dict__["_sc_stored"], m.__dict__["_sc_read"]) for m in session._modules]
    assert held == [([], [])] * len(held)  # no reference outlives its last use
    branches = 2 * len(original_dit.blocks)
    assert stats.peak_cache_bytes == 3 * one_output * branches  # orders 2 read 3 outputs
    assert stats.cache_bytes == 0
    assert sum(stats.forecast.values()) > 0


def test_forecast_with_guidance_as_two_calls_keeps_one_history_per_pass(original_dit):
    schedule = Schedule({"attn": ROW, "mlp": [1] * STEPS}, orders={"attn": ORDERS})
    outputs: list[torch.Tensor] = []
    handle = _record_outputs(original_dit.blocks[0].attn, outputs)
    with smoothcache.enabled(original_dit, schedule, fast_path=False) as session:
        sample_two_calls(original_dit, num_steps=STEPS)
    handle.remove()
    assert session.stats.passes == 2 and session.stats.fallbacks["blocks.0.attn"] == 0
    cond, uncond = outputs[0::2], outputs[1::2]
    for history in (cond, uncond):
        computed = [0, 2, 3, 6]
        expected = sum(w * history[s] for w, s in zip(lagrange_weights(computed, 7), computed))
        torch.testing.assert_close(history[7], expected, rtol=1e-5, atol=1e-6)
    assert (cond[7] - uncond[7]).abs().max() > 1e-4


def test_combine_handles_tuples_and_dicts_and_refuses_other_outputs():
    w = (torch.tensor(-1.0), torch.tensor(2.0))
    a, b = torch.ones(2), torch.full((2,), 3.0)
    assert torch.equal(combine([(a, None), (b, None)], w)[0], torch.full((2,), 5.0))
    assert torch.equal(combine([{"x": a}, {"x": b}], w)["x"], torch.full((2,), 5.0))
    with pytest.raises(smoothcache.AdapterError, match="cannot forecast"):
        combine([object(), object()], w)


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_a_forecast_costs_order_plus_one_elementwise_ops(order):
    values = [torch.randn(4, 8) for _ in range(order + 1)]
    weights = tuple(torch.tensor(w) for w in lagrange_weights(list(range(order + 1)), order + 2))
    with _OpCounter() as counter:
        combine(values, weights)
    assert len(counter.ops) == order + 1, counter.ops


def test_forecasting_reads_nothing_back_from_the_device(monkeypatch):
    """No host read in the per-branch path, the weights' placement or the bookkeeping.

    The toy model passes plain-float timesteps, so the step clock reads no tensor either.
    """
    from tests.test_calibration import ToyAdapter, run_toy, toy

    model = toy()
    steps = 12
    schedule = Schedule.uniform(steps, 3, ["lin", "pair"], order=2)

    def host_read(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the engine read a tensor on the host during sampling")

    with smoothcache.enabled(model, schedule, adapter=ToyAdapter()) as session:
        with monkeypatch.context() as patch:
            for name in ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__"):
                patch.setattr(torch.Tensor, name, host_read)
            run_toy(model, torch.randn(2, 4), steps=steps)
            run_toy(model, torch.randn(2, 4), steps=steps)
    assert sum(session.stats.forecast.values()) > 0


@torch.no_grad()
def test_a_forecast_is_guarded_by_input_shape_and_falls_back(original_dit):
    """A batch that changes size makes the forecast compute instead, counted as a fallback, and
    the history restarts from outputs of the new shape."""
    row = [1, 1, 0, 0, 1, 1, 0]
    orders = [0, 0, 1, 1, 0, 0, 1]
    batches = [4, 4, 4, 2, 2, 2, 2]
    path = "blocks.0.attn"
    with count_original_calls(original_dit, [path]) as calls:
        schedule = Schedule({"attn": row}, orders={"attn": orders})
        with smoothcache.enabled(original_dit, schedule, fast_path=False) as session:
            for step, batch in enumerate(batches):
                x = torch.randn(batch, 4, 8, 8)
                t = torch.full((batch,), 999 - 100 * step)
                out = original_dit(x, t, torch.zeros(batch, dtype=torch.long))
                assert out.shape[0] == batch
    stats = session.stats
    assert stats.forecast[path] == 2  # step 2 (batch 4) and step 6 (from steps 4-5, batch 2)
    assert stats.fallbacks[path] == 1  # step 3: batch 2 against outputs of batch 4
    assert calls[path] == stats.computed[path] == 5
