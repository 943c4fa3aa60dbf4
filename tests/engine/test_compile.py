"""Caching on compiled models: whole-denoiser and regional (per-block) torch.compile.

The ``eager`` dynamo backend traces, guards and recompiles exactly like inductor but skips code
generation, which keeps most of these tests fast on a CPU. The last tests compile with inductor
itself (C++ code on a CPU; skipped only where no C++ compiler exists), since the numbers are
inductor's: a compute-everything schedule is bit-identical to the same compiled model without
caching, and a caching schedule matches eager caching up to inductor's rounding. Speed under
inductor is measured in benchmarks/speed.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import metrics

import smoothcache

PATTERN = [1, 0, 0, 1, 0, 1]  # repeated: more steps, the same step patterns


def _row(steps: int) -> list[int]:
    row = (PATTERN * steps)[:steps]
    row[-1] = 1
    return row


def _schedule(steps: int, order: int) -> smoothcache.Schedule:
    """``_row`` for both kinds; skipped steps forecast with ``order`` where enough computed."""
    return smoothcache.Schedule({"attn1": _row(steps), "ff": _row(steps)}).forecasting(order)


@torch.no_grad()
def _run(model: torch.nn.Module, steps: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    labels = torch.tensor([1, 2])
    for i in range(steps):
        t = torch.full((2,), 999 - 40 * i)
        x = x - 0.1 * model(x, timestep=t, class_labels=labels).sample[:, :4]
    return x


def _compiled(model: torch.nn.Module, how: str) -> torch.nn.Module:
    torch._dynamo.reset()
    counters.clear()
    if how == "whole":
        return torch.compile(model, backend="eager")
    for block in model.transformer_blocks:
        block.compile(backend="eager")
    return model


@pytest.mark.parametrize("order", [0, 2])
@pytest.mark.parametrize("how", ["whole", "regional"])
def test_caching_under_compile_matches_eager_and_recompiles_do_not_grow(how, order):
    """More steps (and, for regional compilation, more blocks) bring no new graphs.

    With forecasts (``order=2``) every skipped step has its own extrapolation weights, yet the
    graphs stay those of the distinct step patterns: the weights are tensors, not guards.
    """
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    graphs = []
    lengths = (12, 18) if order else (6, 12)  # past the steps where orders ramp up
    for layers, steps in ((2, lengths[0]), (4 if how == "regional" else 2, lengths[1])):
        model = tiny_dit_transformer(seed=0, num_layers=layers)
        schedule = _schedule(steps, order)
        with smoothcache.enabled(model, schedule):
            eager = _run(model, steps)
        plain = _run(model, steps)
        compiled_model = _compiled(model, how)
        with smoothcache.enabled(compiled_model, schedule) as session:
            compiled = _run(compiled_model, steps)
            again = _run(compiled_model, steps)  # a second generation: no new graphs either
        graphs.append(counters["stats"]["unique_graphs"])
        assert not counters["graph_break"], dict(counters["graph_break"])  # one graph per pattern
        assert session.stats.total_reused == 2 * 2 * layers * _row(steps).count(0)
        assert (sum(session.stats.forecast.values()) > 0) == bool(order)
        torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6 if order else 0)
        assert torch.equal(again, compiled)
        assert not torch.equal(compiled, plain)
    assert graphs[0] == graphs[1], graphs  # bounded by the distinct step patterns


def test_compute_everything_under_compile_is_exact(diffusers_dit):
    plain = _run(diffusers_dit, 6)
    model = _compiled(diffusers_dit, "whole")
    with smoothcache.enabled(model, {"attn1": [1] * 6, "ff": [1] * 6}):
        assert torch.equal(_run(model, 6), plain)
    assert torch.equal(_run(model, 6), plain)


# ---------------------------------------------------------------------------------------------
# inductor: the generated code itself
# ---------------------------------------------------------------------------------------------

INDUCTOR_ROW = [1, 0, 1]  # the fewest steps with a reuse: 3 graphs more than computing all
# Inductor fuses and reorders float32 arithmetic, so its model outputs differ from eager ones by
# rounding: up to 3 ulp (1.8e-7; the outputs are under 1) on the development machine, cached or
# not. 1e-6 leaves room for other CPUs' vector widths and stays far below what caching itself
# changes (3e-5, 30 times the tolerance; checked in the test).
INDUCTOR_ATOL = 1e-6


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU, or None where it finds none."""
    from torch._inductor import cpp_builder, exc

    try:
        return cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return None


@torch.no_grad()
def _outputs(model: torch.nn.Module, steps: int) -> torch.Tensor:
    """``_run``'s sampler, returning the model's output at every step (stacked): a change in
    the model shows at its own magnitude, not diluted in the noise the sampler starts from."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    labels = torch.tensor([1, 2])
    outputs = []
    for i in range(steps):
        t = torch.full((2,), 999 - 40 * i)
        outputs.append(model(x, timestep=t, class_labels=labels).sample)
        x = x - 0.1 * outputs[-1][:, :4]
    return torch.stack(outputs)


@pytest.fixture(scope="module")
def inductor_runs() -> dict[str, Any]:
    """One model (one block) compiled once with inductor: its outputs without caching,
    computing all and caching (two generations), the eager ones to compare, and what dynamo
    and inductor did.

    One compilation serves every inductor test: inductor's start (checks of the CPU's vector
    instructions, a precompiled header) and each kernel's C++ compile cost seconds on a small
    machine. ``compile_threads=1`` compiles in this process: starting a pool of compile
    workers costs more than the few small kernels of this model.
    """
    if _cpp_compiler() is None:
        pytest.skip("no C++ compiler found: inductor cannot generate code for a CPU here")
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    steps = len(INDUCTOR_ROW)
    everything = {"attn1": [1] * steps, "ff": [1] * steps}
    caching = {"attn1": INDUCTOR_ROW, "ff": INDUCTOR_ROW}
    model = tiny_dit_transformer(seed=0, num_layers=1)
    runs: dict[str, Any] = {"eager": _outputs(model, steps)}
    with smoothcache.enabled(model, caching):
        runs["eager cached"] = _outputs(model, steps)
    torch._dynamo.reset()
    counters.clear()
    kernels = metrics.generated_kernel_count
    with torch._inductor.config.patch(compile_threads=1):
        compiled_model = torch.compile(model, backend="inductor")
        runs["compiled"] = _outputs(compiled_model, steps)
        with smoothcache.enabled(compiled_model, everything) as session:
            runs["compiled, computing all"] = _outputs(compiled_model, steps)
        runs["computed all"] = session.stats.total_computed
        with smoothcache.enabled(compiled_model, caching) as session:
            runs["compiled cached"] = _outputs(compiled_model, steps)
            graphs = counters["stats"]["unique_graphs"]
            runs["compiled cached again"] = _outputs(compiled_model, steps)
        runs["reused"] = session.stats.total_reused
    runs["graphs"] = graphs
    runs["graphs again"] = counters["stats"]["unique_graphs"] - graphs
    runs["graph breaks"] = dict(counters["graph_break"])
    runs["kernels"] = metrics.generated_kernel_count - kernels
    torch._dynamo.reset()
    return runs


def test_inductor_generated_the_code_without_graph_breaks(inductor_runs):
    """The inductor tests below are not vacuous: inductor generated kernels, dynamo traced
    each step pattern whole, and a second generation compiled nothing new."""
    assert inductor_runs["kernels"] > 0
    assert inductor_runs["graph breaks"] == {}
    assert inductor_runs["graphs"] == 5  # no caching, computing all, 3 patterns of the row
    assert inductor_runs["graphs again"] == 0


def test_compute_everything_under_inductor_is_bit_identical_to_no_caching(inductor_runs):
    """docs/reliability.md's promise, compiled: the same compiled model's outputs, bit for bit
    (inductor's code itself may round differently from eager: that is not caching's doing)."""
    assert inductor_runs["computed all"] == 2 * len(INDUCTOR_ROW)  # 2 kinds, 1 block
    assert torch.equal(inductor_runs["compiled, computing all"], inductor_runs["compiled"])


def test_caching_under_inductor_matches_eager_caching(inductor_runs):
    """Reuse gives eager caching's outputs up to inductor's rounding, the same in a second
    generation; the tolerance is far below what reuse changes, so a compiled reuse that
    computed (or reused the wrong output) fails."""
    cached, eager_cached = inductor_runs["compiled cached"], inductor_runs["eager cached"]
    assert inductor_runs["reused"] == 2 * 2 * INDUCTOR_ROW.count(0)  # 2 generations, 2 kinds
    torch.testing.assert_close(cached, eager_cached, rtol=0, atol=INDUCTOR_ATOL)
    assert torch.equal(inductor_runs["compiled cached again"], cached)
    effect = (eager_cached - inductor_runs["eager"]).abs().max().item()
    assert effect > 10 * INDUCTOR_ATOL, effect
