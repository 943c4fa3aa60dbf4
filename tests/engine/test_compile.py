"""Caching on compiled models: whole-denoiser and regional (per-block) torch.compile.

The ``eager`` dynamo backend traces, guards and recompiles exactly like inductor but skips code
generation, which keeps these tests fast on a CPU; speed under inductor is measured in
benchmarks/speed.py.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

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
