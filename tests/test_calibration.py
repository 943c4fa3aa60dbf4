"""Calibration: recorded errors, the paper's schedule rule, budgets, curves files, bad input."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import smoothcache
from smoothcache import (
    AlreadyEnabledError,
    Branch,
    CalibrationError,
    CurvesFileError,
    ErrorCurves,
    ScheduleError,
    StepCountError,
)
from smoothcache.adapter import Adapter, TimestepSource, argument
from smoothcache.searches.paper import paper_rule
from smoothcache.testing.models.original_dit import sample_original_dit
from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer
from tests.conftest import assert_same_state, module_state, sample_two_calls

# ---------------------------------------------------------------------------------------------
# A toy model: linear branches with a bias (so relative error depends on a sample's scale), one
# branch returning a tuple, and plain-float timesteps (so the clock never reads a tensor).
# ---------------------------------------------------------------------------------------------


class PairBranch(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.proj(x)
        return y, 2 * y


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.pair = PairBranch(dim)


class Toy(nn.Module):
    def __init__(self, dim: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ToyBlock(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        h = x * (1.0 + t / 250.0)
        for block in self.blocks:
            h = h + block.lin(h)
            h = h + block.pair(h)[0]
        return h


class ToyAdapter(Adapter):
    name = "toy"
    kinds = ("lin", "pair")

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Toy)

    def branches(self, model: nn.Module) -> list[Branch]:
        return [
            Branch(f"blocks.{i}.{kind}", kind, i)
            for i in range(len(model.blocks))
            for kind in self.kinds
        ]

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", argument("t", 1))


def toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy().eval()


@torch.no_grad()
def run_toy(model: Toy, x: torch.Tensor, steps: int, batches: dict[int, int] | None = None) -> None:
    """Call the toy once per step with timesteps falling from 900; ``batches`` cuts the batch."""
    for i, t in enumerate(np.linspace(900.0, 0.0, steps)):
        rows = (batches or {}).get(i, x.shape[0])
        model(x[:rows], float(t))


@torch.no_grad()
def run_diffusers(model: nn.Module, steps: int, labels: list[int], passes: int, seed: int) -> None:
    """A small sampler for a diffusers DiT transformer: ``passes`` calls per step (cond, uncond)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), 4, 8, 8, generator=gen)
    cond = torch.tensor(labels)
    null = torch.full_like(cond, 1000)
    for t in torch.linspace(900, 0, steps).long():
        preds = [
            model(x, timestep=t.expand(len(labels)), class_labels=y).sample[:, :4]
            for y in (cond, null)[:passes]
        ]
        x = x - 0.1 * (preds[-1] + 2.0 * (preds[0] - preds[-1]))


# ---------------------------------------------------------------------------------------------
# Direct computation from outputs stored by separate forward hooks
# ---------------------------------------------------------------------------------------------


def store_outputs(model: nn.Module, paths: list[str]) -> tuple[dict[str, list], list]:
    """Forward hooks (registered before calibration's) keeping a copy of every branch output."""
    stored: dict[str, list[torch.Tensor]] = defaultdict(list)
    handles = []
    for path in paths:

        def keep(_m: nn.Module, _a: tuple, out: object, _p: str = path) -> None:
            tensor = out[0] if isinstance(out, tuple) else out
            stored[_p].append(tensor.detach().clone())

        handles.append(model.get_submodule(path).register_forward_hook(keep))
    return stored, handles


def direct_curves(
    calls: list[torch.Tensor], runs: int, steps: int, passes: int, lookahead: int, pooled=False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std, count (passes, lookahead, steps) from one branch's outputs in call order.

    Calls are ordered run, step, pass. Per sample unless ``pooled`` (one ratio per batch, as
    the reference implementation computes it).
    """
    assert len(calls) == runs * steps * passes
    outs = {}
    for k, out in enumerate(calls):
        run, step, p = k // (steps * passes), (k // passes) % steps, k % passes
        outs[run, step, p] = out.double().flatten(1)
    mean = np.full((passes, lookahead, steps), np.nan)
    std = np.full((passes, lookahead, steps), np.nan)
    count = np.zeros((passes, lookahead, steps), dtype=np.int64)
    for p in range(passes):
        for j in range(1, lookahead + 1):
            for t in range(j, steps):
                errors = []
                for run in range(runs):
                    now, before = outs[run, t, p], outs[run, t - j, p]
                    if pooled:
                        errors.append(((now - before).abs().sum() / now.abs().sum()).reshape(1))
                    else:
                        errors.append((now - before).abs().sum(1) / now.abs().sum(1))
                e = torch.cat(errors).numpy()
                mean[p, j - 1, t], std[p, j - 1, t], count[p, j - 1, t] = e.mean(), e.std(), e.size
    return mean, std, count


def assert_matches_direct(curves: ErrorCurves, stored: dict, runs: int, passes: int) -> None:
    for b, branch in enumerate(curves.branches):
        mean, std, count = direct_curves(
            stored[branch.path], runs, curves.num_steps, passes, curves.lookahead
        )
        np.testing.assert_array_equal(curves.count[b], count, err_msg=branch.path)
        np.testing.assert_allclose(curves.mean[b], mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(curves.std[b], std, rtol=1e-4, atol=1e-6)


def test_toy_errors_equal_direct_computation_with_tuple_outputs() -> None:
    model = toy()
    paths = [b.path for b in ToyAdapter().branches(model)]
    stored, handles = store_outputs(model, paths)
    x = torch.randn(3, 4)
    with smoothcache.calibrating(model, lookahead=2, adapter=ToyAdapter()) as recorder:
        run_toy(model, x, steps=5)
        run_toy(model, 2 * x, steps=5)
    for handle in handles:
        handle.remove()
    curves = recorder.curves()
    assert curves.mean.shape == (4, 1, 2, 5)
    assert_matches_direct(curves, stored, runs=2, passes=1)
    assert np.isnan(curves.mean[:, :, 1, :2]).all() and (curves.count[:, :, 1, :2] == 0).all()
    assert curves.metadata["runs"] == 2 and curves.metadata["num_samples"] == 6
    assert curves.metadata["timesteps"] == [900.0, 675.0, 450.0, 225.0, 0.0]


def test_diffusers_two_passes_equal_direct_computation() -> None:
    model = tiny_dit_transformer()
    paths = [b.path for b in smoothcache.detect(model).branches(model)]
    stored, handles = store_outputs(model, paths)
    with smoothcache.calibrating(model, lookahead=3) as recorder:
        run_diffusers(model, steps=5, labels=[1, 2], passes=2, seed=0)
        run_diffusers(model, steps=5, labels=[3, 4], passes=2, seed=1)
    for handle in handles:
        handle.remove()
    curves = recorder.curves()
    assert curves.passes == 2 and curves.metadata["passes"] == 2
    assert_matches_direct(curves, stored, runs=2, passes=2)
    # The two passes really differ (conditional vs unconditional), so neither was dropped.
    assert not np.allclose(curves.mean[:, 0, 0, 1:], curves.mean[:, 1, 0, 1:])


def test_original_dit_guided_batch_and_two_calls(original_dit: nn.Module) -> None:
    paths = [f"blocks.{i}.{k}" for i in range(2) for k in ("attn", "mlp")]
    stored, handles = store_outputs(original_dit, paths)
    with smoothcache.calibrating(original_dit) as recorder:
        sample_original_dit(original_dit, num_steps=4, cfg_scale=4.0, seed=0)
    one_batch = recorder.curves()
    assert one_batch.passes == 1 and one_batch.metadata["num_samples"] == 4  # [cond, uncond]
    assert_matches_direct(one_batch, stored, runs=1, passes=1)
    stored.clear()
    with smoothcache.calibrating(original_dit) as recorder:
        sample_two_calls(original_dit, num_steps=4)
    for handle in handles:
        handle.remove()
    two_calls = recorder.curves()
    assert two_calls.passes == 2 and two_calls.metadata["num_samples"] == 4
    assert_matches_direct(two_calls, stored, runs=1, passes=2)


def test_per_sample_differs_from_pooled() -> None:
    model = toy()
    stored, handles = store_outputs(model, ["blocks.0.lin"])
    x = 0.01 * torch.randn(2, 4)  # small: the bias dominates, the output barely changes
    x[1] *= 1e4  # large: its output dwarfs the other's, so it dominates one pooled ratio
    with smoothcache.calibrating(model, lookahead=1, adapter=ToyAdapter()) as recorder:
        run_toy(model, x, steps=4)
    handles[0].remove()
    curves = recorder.curves()
    per_sample = direct_curves(stored["blocks.0.lin"], 1, 4, 1, 1)[0][0, 0, 1:]
    pooled = direct_curves(stored["blocks.0.lin"], 1, 4, 1, 1, pooled=True)[0][0, 0, 1:]
    np.testing.assert_allclose(curves.mean[0, 0, 0, 1:], per_sample, rtol=1e-5)
    # Pooling reports about the large sample's error, twice the mean over the two samples.
    assert (pooled > 1.8 * per_sample).all()
    assert (curves.std[0, 0, 0, 1:] > 0.9 * per_sample).all()  # the two samples disagree


def test_batch_change_between_steps_skips_the_pair() -> None:
    model = toy()
    with smoothcache.calibrating(model, lookahead=3, adapter=ToyAdapter()) as recorder:
        run_toy(model, torch.randn(2, 4), steps=5, batches={2: 1})
    count = recorder.curves().count[0, 0]
    assert count[0].tolist() == [0, 2, 0, 0, 2]  # lag 1: step 2 and 3 compare 1 row with 2
    assert count[1].tolist() == [0, 0, 0, 2, 0]  # lag 2: 3 vs 1 fits; 2 vs 0, 4 vs 2 do not
    assert count[2].tolist() == [0, 0, 0, 2, 2]


def test_hooks_do_not_read_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    model = toy()

    def host_read(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("calibration read a tensor on the host during sampling")

    with smoothcache.calibrating(model, adapter=ToyAdapter()) as recorder:
        with monkeypatch.context() as patch:
            for name in ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__"):
                patch.setattr(torch.Tensor, name, host_read)
            run_toy(model, torch.randn(2, 4), steps=6)
            run_toy(model, torch.randn(2, 4), steps=6)
    assert recorder.curves().metadata["runs"] == 2


@pytest.mark.parametrize(("orders", "kept"), [(0, 2), (1, 5), (3, 11)])
def test_ring_buffer_keeps_only_the_outputs_the_errors_read(orders, kept) -> None:
    """Reuse reads ``lookahead`` outputs back; order ``k`` forecasts ``k (lookahead + 1)`` more."""
    model = toy()
    with smoothcache.calibrating(
        model, lookahead=2, adapter=ToyAdapter(), orders=orders
    ) as recorder:
        run_toy(model, torch.randn(2, 4), steps=30)
        rings = [len(slot.ring) for slots in recorder._slots for slot in slots]
    assert rings == [kept] * 4


def test_on_step_reports_runs_and_steps() -> None:
    model = toy()
    seen: list[tuple[int, int]] = []
    with smoothcache.calibrating(
        model, adapter=ToyAdapter(), on_step=lambda r, s: seen.append((r, s)), metadata={"x": 1}
    ) as recorder:
        run_toy(model, torch.randn(1, 4), steps=3)
        run_toy(model, torch.randn(1, 4), steps=3)
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert recorder.curves().metadata["x"] == 1


def test_curves_inside_the_block_ends_the_run() -> None:
    model = toy()
    with smoothcache.calibrating(model, adapter=ToyAdapter()) as recorder:
        run_toy(model, torch.randn(1, 4), steps=3)
        assert recorder.curves().metadata["runs"] == 1
        run_toy(model, torch.randn(1, 4), steps=3)
    assert recorder.curves().metadata["runs"] == 2


# ---------------------------------------------------------------------------------------------
# Model state, exclusivity, bad runs
# ---------------------------------------------------------------------------------------------


def test_model_restored_exactly_and_outputs_unchanged(original_dit: nn.Module) -> None:
    before = module_state(original_dit)
    reference = sample_original_dit(original_dit, num_steps=3)
    with smoothcache.calibrating(original_dit):
        during = sample_original_dit(original_dit, num_steps=3)
    assert torch.equal(reference, during)  # recording never changes the result
    assert_same_state(before, module_state(original_dit))
    with pytest.raises(RuntimeError, match="boom"), smoothcache.calibrating(original_dit):
        raise RuntimeError("boom")
    assert_same_state(before, module_state(original_dit))


def test_calibrating_and_enabled_are_exclusive(original_dit: nn.Module) -> None:
    schedule = smoothcache.Schedule.uniform(3, 2, ["attn", "mlp"])
    with smoothcache.calibrating(original_dit), pytest.raises(AlreadyEnabledError):
        smoothcache.enable(original_dit, schedule)
    with smoothcache.enabled(original_dit, schedule), pytest.raises(AlreadyEnabledError):
        smoothcache.calibrating(original_dit).__enter__()


def test_zero_runs_is_an_error() -> None:
    with smoothcache.calibrating(toy(), adapter=ToyAdapter()) as recorder:
        pass
    with pytest.raises(CalibrationError, match="no calibration run"):
        recorder.curves()


def test_runs_of_different_lengths_name_both_counts() -> None:
    model = toy()
    with (
        pytest.raises(StepCountError, match=r"run 1 had 4 steps but run 2 had 3"),
        smoothcache.calibrating(model, adapter=ToyAdapter()),
    ):
        run_toy(model, torch.randn(1, 4), steps=4)
        run_toy(model, torch.randn(1, 4), steps=3)


def test_runs_with_other_timesteps_warn() -> None:
    model = toy()
    x = torch.randn(1, 4)
    with (
        pytest.warns(UserWarning, match="run 2 used other timesteps than run 1"),
        smoothcache.calibrating(model, adapter=ToyAdapter()) as recorder,
    ):
        run_toy(model, x, steps=4)
        with torch.no_grad():
            for t in (800.0, 500.0, 200.0, 100.0):
                model(x, t)
    assert recorder.curves().metadata["timesteps"] == [900.0, 600.0, 300.0, 0.0]


def test_one_step_runs_are_an_error() -> None:
    model = toy()
    with (
        pytest.raises(CalibrationError, match="at least 2 steps"),
        smoothcache.calibrating(model, adapter=ToyAdapter()),
    ):
        run_toy(model, torch.randn(1, 4), steps=1)


@pytest.mark.parametrize("lookahead", [0, -1, 1.5, True])
def test_bad_lookahead(lookahead: object) -> None:
    with pytest.raises(CalibrationError, match="lookahead"):
        smoothcache.calibrating(toy(), lookahead=lookahead, adapter=ToyAdapter()).__enter__()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_output_names_branch_and_step(bad: float) -> None:
    model = toy()
    calls = [0]

    def poison(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 3:  # step 2 of the first run
            out = out.clone()
            out[0, 0] = bad
        return out

    handle = model.blocks[1].lin.register_forward_hook(poison)
    with smoothcache.calibrating(model, adapter=ToyAdapter()) as recorder:
        run_toy(model, torch.randn(2, 4), steps=5)  # nothing raises while sampling
    handle.remove()
    with pytest.raises(CalibrationError, match=r"'blocks\.1\.lin' produced NaN or inf at step 2"):
        recorder.curves()


def test_check_model() -> None:
    model = tiny_dit_transformer()
    with smoothcache.calibrating(model) as recorder:
        run_diffusers(model, steps=3, labels=[1], passes=1, seed=0)
    curves = recorder.curves()
    curves.check_model(model)
    curves.check_model(tiny_dit_transformer(seed=5))  # other weights, same architecture
    with pytest.raises(CalibrationError, match=r"4 branches \(attn1 x2, ff x2\) vs 6 branches"):
        curves.check_model(tiny_dit_transformer(num_layers=3))
    with pytest.raises(CalibrationError, match="DiTTransformer2DModel vs Toy"):
        curves.check_model(toy(), adapter=ToyAdapter())


# ---------------------------------------------------------------------------------------------
# The paper's rule, from its definition, on hand-computed curves
# ---------------------------------------------------------------------------------------------

NAN = math.nan


def const(lookahead: int, steps: int, value: float) -> np.ndarray:
    errors = np.full((lookahead, steps), float(value))
    for j in range(1, lookahead + 1):
        errors[j - 1, :j] = NAN  # step t < lag j has no error
    return errors


def test_rule_hand_computed_mixed_case() -> None:
    errors = np.array(
        [
            [NAN, 0.05, 0.05, 0.30, 0.05, 0.05, 0.05, 0.05],  # lag 1
            [NAN, NAN, 0.08, 0.30, 0.30, 0.08, 0.08, 0.08],  # lag 2
            [NAN, NAN, NAN, 0.30, 0.20, 0.20, 0.09, 0.09],  # lag 3
        ]
    )
    # alpha 0.1: i=0 lag 3 (step 3) 0.30 no, lag 2 (step 2) 0.08 yes -> reuse 1, 2;
    # i=3: lag 3 (step 6) 0.09 yes -> reuse 4, 5, 6; step 7 is last.
    assert paper_rule(errors, 0.1) == [1, 0, 0, 1, 0, 0, 0, 1]
    # alpha 0.06: i=0 only lag 1 (0.05) -> reuse 1; i=2: 0.20, 0.30, 0.30 all above -> compute;
    # i=3: lag 1 (step 4) 0.05 -> reuse 4; i=5: only lag 1 fits before the last step, 0.05.
    assert paper_rule(errors, 0.06) == [1, 0, 1, 1, 0, 1, 0, 1]
    # alpha equal to an error counts as small enough (<=).
    assert paper_rule(errors, 0.09) == [1, 0, 0, 1, 0, 0, 0, 1]


def test_rule_alpha_zero_computes_everything() -> None:
    assert paper_rule(const(3, 7, 0.01), 0.0) == [1] * 7


def test_rule_huge_alpha_is_limited_by_lookahead() -> None:
    assert paper_rule(const(2, 10, 0.5), 1e9) == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert paper_rule(const(3, 10, 0.5), 1e9) == [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert paper_rule(const(1, 5, 0.5), 1e9) == [1, 0, 1, 0, 1]


def test_rule_last_step_always_computes() -> None:
    assert paper_rule(const(3, 5, 0.0), 1.0) == [1, 0, 0, 0, 1]
    assert paper_rule(const(3, 2, 0.0), 1.0) == [1, 1]
    # Only lag 3 (step 3) is small, but a run of 3 from step 0 would cover the last step, so it
    # is never considered (the reference code would take it, then force step 3 back on).
    errors = np.full((3, 4), 0.9)
    errors[2, 3] = 0.0
    assert paper_rule(errors, 0.1) == [1, 1, 1, 1]


def test_rule_checks_only_the_chosen_lag() -> None:
    errors = np.vstack([np.full(6, 0.5), np.full(6, 0.05)])  # lag 1 large, lag 2 small
    # i=0: lag 2 (step 2) fits -> reuse 1, 2; i=3: only lag 1 fits before the last step: 0.5.
    assert paper_rule(errors, 0.1) == [1, 0, 0, 1, 1, 1]


def test_rule_nan_never_reuses() -> None:
    assert paper_rule(np.full((3, 6), NAN), 1e9) == [1] * 6


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda lookahead: st.integers(2, 12).flatmap(
            lambda steps: st.lists(
                st.floats(0, 1), min_size=lookahead * steps, max_size=lookahead * steps
            ).map(lambda v: np.array(v).reshape(lookahead, steps))
        )
    ),
    st.floats(0, 1),
)
def test_rule_property(errors: np.ndarray, alpha: float) -> None:
    lookahead, steps = errors.shape
    row = paper_rule(errors, alpha)
    assert row[0] == 1 and row[-1] == 1
    computes = [i for i, f in enumerate(row) if f]
    for i, nxt in itertools.pairwise(computes):
        run = nxt - i - 1
        assert run <= lookahead
        if run:
            assert errors[run - 1, i + run] <= alpha
        longer = range(run + 1, min(lookahead, steps - 2 - i) + 1)
        assert all(errors[r - 1, i + r] > alpha for r in longer)


# ---------------------------------------------------------------------------------------------
# ErrorCurves.schedule: pooling, budgets, provenance
# ---------------------------------------------------------------------------------------------


def make_curves(per_branch: dict[Branch, tuple[np.ndarray, int]], **meta: object) -> ErrorCurves:
    """Curves with one pass from ``{branch: (errors (lookahead, steps), count)}``."""
    branches = list(per_branch)
    mean = np.stack([per_branch[b][0] for b in branches])[:, None]
    count = np.stack([np.where(np.isnan(per_branch[b][0]), 0, per_branch[b][1]) for b in branches])[
        :, None
    ]
    std = np.where(count > 0, 0.01, np.nan)
    return ErrorCurves(branches, mean, std, count, {"model": "Hand", "adapter": "hand", **meta})


A0, A1, B0 = Branch("b.0.a", "a", 0), Branch("b.1.a", "a", 1), Branch("b.0.b", "b", 0)


def test_schedule_pools_blocks_by_count() -> None:
    curves = make_curves({A0: (const(1, 5, 0.0), 1), A1: (const(1, 5, 0.3), 3)})
    assert curves.curve("a")[0][0, 1] == pytest.approx(0.225)  # (0 * 1 + 0.3 * 3) / 4
    assert curves.schedule(0.2).rows == {"a": (1, 1, 1, 1, 1)}
    assert curves.schedule(0.25).rows == {"a": (1, 0, 1, 0, 1)}
    per_block = curves.schedule(0.2, per_block=True)
    assert per_block.rows == {"a-0": (1, 0, 1, 0, 1), "a-1": (1, 1, 1, 1, 1)}
    # Pooled spread: the two blocks' means differ, so the pooled std exceeds each block's.
    assert curves.curve("a")[1][0, 1] > 0.1


def test_schedule_provenance_and_weighted_fraction() -> None:
    curves = make_curves(
        {A0: (const(2, 6, 0.05), 2), A1: (const(2, 6, 0.05), 2), B0: (const(2, 6, 0.5), 2)},
        timesteps=[5, 4, 3, 2, 1, 0],
    )
    schedule = curves.schedule(alpha=0.1)
    assert schedule.rows == {"a": (1, 0, 0, 1, 0, 1), "b": (1, 1, 1, 1, 1, 1)}
    meta = schedule.metadata
    # Row "a" counts for two blocks: (2 * 3 + 6) / (3 * 6).
    assert meta["compute_fraction"] == pytest.approx(12 / 18)
    assert meta["alpha"] == 0.1 and meta["lookahead"] == 2 and meta["method"] == "paper"
    assert meta["per_block"] is False and meta["model"] == "Hand" and meta["num_steps"] == 6
    assert meta["timesteps"] == [5, 4, 3, 2, 1, 0]
    assert "compute_fraction_target" not in meta
    assert curves.schedule(alpha=0.1, method="paper").rows == schedule.rows


def test_budget_search_hits_its_bound() -> None:
    rng = np.random.default_rng(0)
    errors = {b: (np.where(np.isnan(const(3, 20, 0)), NAN, rng.random((3, 20))), 4)
              for b in (A0, A1, B0)}  # fmt: skip
    curves = make_curves(errors)
    for target in (0.3, 0.5, 0.7, 1.0):
        schedule = curves.schedule(compute_fraction=target)
        meta = schedule.metadata
        assert meta["compute_fraction"] <= target and meta["compute_fraction_target"] == target
        assert curves.schedule(alpha=meta["alpha"]).rows == schedule.rows
        # No alpha (every distinct schedule is reached at 0 or at an error value) does better.
        values = np.unique(np.concatenate([[0.0], curves.mean[np.isfinite(curves.mean)]]))
        fractions = [curves.schedule(alpha=a).metadata["compute_fraction"] for a in values]
        best = max(f for f in fractions if f <= target)
        assert meta["compute_fraction"] == best
    assert curves.schedule(compute_fraction=1.0).metadata["alpha"] == 0.0
    exact = make_curves({A0: (const(1, 4, 0.1), 1)})  # alpha >= 0.1 gives [1, 0, 1, 1]
    schedule = exact.schedule(compute_fraction=0.75)
    assert schedule.metadata["compute_fraction"] == 0.75 and schedule.metadata["alpha"] == 0.1


def test_budget_below_what_lookahead_allows() -> None:
    curves = make_curves({A0: (const(1, 6, 0.1), 1)})  # at best [1, 0, 1, 0, 1, 1]: 4/6
    with pytest.raises(ScheduleError, match=r"smallest achievable fraction .* is 0\.6667"):
        curves.schedule(compute_fraction=0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1}, "alpha must be a finite number >= 0"),
        ({"alpha": math.nan}, "alpha must be a finite number >= 0"),
        ({"alpha": math.inf}, "alpha must be a finite number >= 0"),
        ({"alpha": "0.1"}, "alpha must be a number"),
        ({"compute_fraction": 0.0}, r"compute_fraction must be in \(0, 1\]"),
        ({"compute_fraction": 1.01}, r"compute_fraction must be in \(0, 1\]"),
        ({"compute_fraction": math.nan}, r"compute_fraction must be in \(0, 1\]"),
        ({}, "exactly one of alpha"),
        ({"alpha": 0.1, "compute_fraction": 0.5}, "exactly one of alpha"),
        ({"alpha": 0.1, "method": "magic"}, "unknown schedule method 'magic'"),
    ],
)
def test_schedule_bad_arguments(kwargs: dict, message: str) -> None:
    curves = make_curves({A0: (const(1, 4, 0.1), 1)})
    with pytest.raises(ScheduleError, match=message):
        curves.schedule(**kwargs)


def test_recorded_schedule_runs_with_enabled() -> None:
    model = tiny_dit_transformer()
    with smoothcache.calibrating(model, lookahead=2) as recorder:
        run_diffusers(model, steps=8, labels=[1, 2], passes=1, seed=0)
    schedule = recorder.curves().schedule(compute_fraction=0.6)
    assert schedule.metadata["compute_fraction"] <= 0.6
    with smoothcache.enabled(model, schedule) as session:
        run_diffusers(model, steps=8, labels=[1, 2], passes=1, seed=0)
    assert session.stats.reuse_fraction == pytest.approx(1 - schedule.metadata["compute_fraction"])


# ---------------------------------------------------------------------------------------------
# Curves files
# ---------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = toy()
    with smoothcache.calibrating(
        model, adapter=ToyAdapter(), metadata={"solver": "toy"}
    ) as recorder:
        run_toy(model, torch.randn(3, 4), steps=6)
    curves = recorder.curves()
    path = tmp_path / "toy.safetensors"
    curves.save(path)
    loaded = ErrorCurves.load(path)
    for name in ("mean", "std", "count"):
        original, again = getattr(curves, name), getattr(loaded, name)
        assert original.dtype == again.dtype and original.shape == again.shape
        assert original.tobytes() == again.tobytes(), name
    assert loaded.branches == curves.branches
    assert loaded.metadata == curves.metadata
    assert loaded.metadata["adapter"] == "toy" and loaded.metadata["solver"] == "toy"
    assert loaded.schedule(0.2).rows == curves.schedule(0.2).rows
    assert "Toy" in repr(loaded)


def test_loading_other_files_is_a_clear_error(tmp_path: Path) -> None:
    schedule = tmp_path / "schedule.json"
    smoothcache.Schedule.uniform(4, 2, ["attn"]).save(schedule)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(256))
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    cases = [
        (schedule, "not a smoothcache curves file"),
        (noise, "not a smoothcache curves file"),
        (foreign, "safetensors file but not a smoothcache curves file"),
        (tmp_path / "missing.safetensors", "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(CurvesFileError, match=message):
            ErrorCurves.load(path)
    future = tmp_path / "future.safetensors"
    save_file(
        {"w": torch.zeros(2)},
        str(future),
        metadata={"format": "smoothcache.curves", "version": "9"},
    )
    with pytest.raises(CurvesFileError, match="format version '9'"):
        ErrorCurves.load(future)
    broken = tmp_path / "broken.safetensors"
    header = {"format": "smoothcache.curves", "version": "1", "branches": "[]", "metadata": "{}"}
    save_file({"mean": torch.zeros(1)}, str(broken), metadata=header)
    with pytest.raises(CurvesFileError, match="corrupt"):
        ErrorCurves.load(broken)
    assert json.loads(schedule.read_text())["format"] == "smoothcache.schedule"
