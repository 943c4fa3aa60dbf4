"""Fused / parallel branches: a group of modules whose outputs meet before the residual add.

The model here has FLUX's single-stream shape: attention and an MLP run side by side on one
normalised input, ``proj_out`` projects their concatenation, and only that projection meets
the residual. The group's leader is ``proj_out``; ``attn`` and ``proj_mlp`` are its members.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache import AdapterError, Branch, TimestepSource
from smoothcache.testing import check_adapter
from tests.conftest import count_original_calls

STEPS = 6
ROW = [1, 0, 1, 0, 0, 1]
D = 16


class SingleStreamBlock(nn.Module):
    def __init__(self, leak: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.attn = nn.Linear(D, D)
        self.proj_mlp = nn.Linear(D, 2 * D)
        self.act = nn.GELU()
        self.proj_out = nn.Linear(3 * D, D)
        self.gate = nn.Linear(D, D)
        self.leak = leak  # a wrong block: the attention output also reaches the residual

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        a = self.attn(h)
        m = self.act(self.proj_mlp(h))
        out = x + self.gate(emb)[:, None] * self.proj_out(torch.cat([a, m], dim=-1))
        return out + 0.1 * a if self.leak else out


class SingleStreamNet(nn.Module):
    def __init__(self, leak: bool = False) -> None:
        super().__init__()
        self.time = nn.Linear(1, D)
        self.blocks = nn.ModuleList(SingleStreamBlock(leak) for _ in range(2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = torch.sin(self.time(t[:, None] / 1000.0))
        for block in self.blocks:
            x = block(x, emb)
        return x


class SingleStreamAdapter(smoothcache.Adapter):
    name = "single-stream-test"
    kinds = ("single",)
    model_classes = ("SingleStreamNet",)

    def branches(self, model: nn.Module) -> list[Branch]:
        found = []
        for i in range(len(model.blocks)):
            leader = f"blocks.{i}.proj_out"
            found += [
                Branch(f"blocks.{i}.attn", "single", i, leader=leader),
                Branch(f"blocks.{i}.proj_mlp", "single", i, leader=leader),
                Branch(leader, "single", i),
            ]
        return found

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", smoothcache.argument("t", 1))


def make(leak: bool = False) -> SingleStreamNet:
    torch.manual_seed(0)
    return SingleStreamNet(leak).eval()


@torch.no_grad()
def run(model: nn.Module) -> torch.Tensor:
    x = torch.randn(2, 4, D, generator=torch.Generator().manual_seed(0))
    for t in torch.linspace(999, 1, STEPS):
        x = x - 0.1 * model(x, t.expand(2))
    return x


def test_a_group_is_skipped_whole_and_computes_whole():
    model = make()
    base = run(model)
    adapter = SingleStreamAdapter()
    with smoothcache.enabled(model, {"single": [1] * STEPS}, adapter=adapter):
        assert torch.equal(run(model), base)
    paths = [f"blocks.0.{name}" for name in ("attn", "proj_mlp", "proj_out")]
    with count_original_calls(model, paths) as calls:
        with smoothcache.enabled(model, {"single": ROW}, adapter=adapter) as session:
            out = run(model)
    assert all(calls[p] == sum(ROW) for p in paths)  # members skipped with their leader
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert session.stats.reused["blocks.0.attn"] == ROW.count(0)
    # the group's answer is the leader's stored output: caching proj_out alone gives the same
    solo = type("Solo", (SingleStreamAdapter,), {"name": "solo"})()
    solo.branches = lambda m: [b for b in SingleStreamAdapter.branches(solo, m) if not b.leader]
    with smoothcache.enabled(model, {"single": ROW}, adapter=solo):
        assert torch.equal(run(model), out)


def test_a_group_passes_the_conformance_kit():
    report = check_adapter(make, run, adapter=SingleStreamAdapter(), num_steps=STEPS)
    assert report.passed, str(report)


def test_a_member_used_outside_its_leader_fails_the_kit_loudly():
    report = check_adapter(
        lambda: make(leak=True), run, adapter=SingleStreamAdapter(), num_steps=STEPS
    )
    failed = {r.check: r.message for r in report.results if r.status == "failed"}
    assert "reaches the output other than through its leader" in failed["branches_residual"]


def test_a_member_must_follow_a_declared_leader_of_its_kind_and_block():
    class Wrong(SingleStreamAdapter):
        name = "wrong-group"

        def branches(self, model):
            return [
                Branch("blocks.0.attn", "single", 0, leader="blocks.1.proj_out"),
                Branch("blocks.0.proj_out", "single", 0),
                Branch("blocks.1.proj_out", "single", 1),
            ]

    with pytest.raises(AdapterError, match="not a declared branch of the same kind and block"):
        smoothcache.enable(make(), {"single": ROW}, adapter=Wrong())


def test_members_are_not_calibrated_and_follow_the_schedule_made_for_leaders():
    model = make()
    with smoothcache.calibrating(model, adapter=SingleStreamAdapter()) as recorder:
        run(model)
        run(model)
    curves = recorder.curves()
    assert [b.path for b in curves.branches] == ["blocks.0.proj_out", "blocks.1.proj_out"]
    schedule = curves.schedule(compute_fraction=0.7)
    with smoothcache.enabled(model, schedule, adapter=SingleStreamAdapter()) as session:
        run(model)
    assert session.stats.reused["blocks.1.proj_mlp"] == session.stats.reused["blocks.1.proj_out"]
    assert session.stats.reused["blocks.1.proj_out"] > 0


def test_curves_of_a_grouped_model_fit_it_and_its_sensitivity_measures():
    """Issue #24, item 5: the curves hold group leaders only, and check_model compares them
    with the leaders (it compared with every member and refused the model they came from)."""
    model = make()
    adapter = SingleStreamAdapter()
    with smoothcache.calibrating(model, adapter=adapter) as recorder:
        run(model)
    curves = recorder.curves()
    curves.check_model(model, adapter)
    measured = smoothcache.measure_sensitivity(model, lambda: run(model), curves, adapter=adapter)
    assert measured.sensitivity is not None
    schedule = measured.schedule(compute_fraction=0.7, method="sensitivity")
    with smoothcache.enabled(model, schedule, adapter=adapter) as session:
        run(model)
    assert session.stats.reused["blocks.0.attn"] == session.stats.reused["blocks.0.proj_out"] > 0


def test_the_recipe_runs_on_a_real_flux_transformer():
    """The issue's case: a tiny FluxTransformer2DModel with the built-in ``flux`` adapter."""
    from smoothcache.testing.models.diffusers_zoo import ZOO, randomize_zeros_
    from smoothcache.testing.models.diffusers_zoo import run as zoo_run

    entry = ZOO["FluxTransformer2DModel"]
    model = randomize_zeros_(entry.factory())
    with smoothcache.calibrating(model) as recorder:
        zoo_run(entry, model, num_steps=5)
    curves = recorder.curves()
    assert {b.kind for b in curves.branches} == {"attn", "ff", "ff_context", "single"}
    curves.check_model(model)
    curves = smoothcache.measure_sensitivity(model, lambda: zoo_run(entry, model, 5), curves)
    schedule = curves.schedule(compute_fraction=0.6, method="forecast")
    with smoothcache.enabled(model, schedule) as session:
        zoo_run(entry, model, num_steps=5)
    assert session.stats.total_reused > 0


def test_the_flux_fast_path_skips_the_group_with_less_work():
    """FLUX's single-stream fast path: same output, fewer aten ops (counted, not timed)."""
    from smoothcache.testing import op_counts as ops
    from smoothcache.testing.models.diffusers_zoo import ZOO
    from smoothcache.testing.models.diffusers_zoo import run as zoo_run

    assert ops.count("FluxTransformer2DModel", True) < ops.count("FluxTransformer2DModel", False)
    entry = ZOO["FluxTransformer2DModel"]
    model = entry.factory()
    outputs = []
    for fast in (True, False):
        with smoothcache.enabled(model, {"single": ops.ROW}, fast_path=fast) as session:
            outputs.append(zoo_run(entry, model, num_steps=ops.STEPS))
        assert session.stats.reused["single_transformer_blocks.0.proj_out"] == ops.ROW.count(0)
    assert torch.equal(*outputs)
