"""The generic diffusers adapter: what it finds, and what it refuses to guess."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache import AdapterError
from smoothcache.adapters.diffusers_generic import (
    GenericDiffusersAdapter,
    block_lists,
    timestep_argument,
)
from smoothcache.testing.models.diffusers_zoo import ZOO
from smoothcache.testing.models.diffusers_zoo import run as zoo_run
from tests.cli.helpers import run as run_cli


def sd3() -> nn.Module:
    """SD3's tiny instance."""
    return ZOO["SD3Transformer2DModel"].factory()


def mochi() -> nn.Module:
    """Mochi's tiny instance (no specific adapter; a factory for ``adapters --check``)."""
    return ZOO["MochiTransformer3DModel"].factory()


def test_it_finds_block_lists_branches_and_the_timestep():
    model = ZOO["FluxTransformer2DModel"].factory()  # two block lists: kinds get a prefix
    branches = GenericDiffusersAdapter().branches(model)
    kinds = {b.kind for b in branches}
    assert kinds == {
        "transformer_blocks.attn", "transformer_blocks.ff", "transformer_blocks.ff_context",
        "single_transformer_blocks.attn",
    }  # fmt: skip
    assert timestep_argument(model) == ("timestep", 3)
    model = sd3()  # one block list: the kinds are the children's names
    assert {b.kind for b in GenericDiffusersAdapter().branches(model)} >= {"attn", "ff"}
    assert smoothcache.detect(model).name == "sd3"  # a family adapter wins by class
    assert smoothcache.detect(mochi()).name == "diffusers-generic"


def test_it_caches_a_model_it_was_not_written_for():
    entry = ZOO["SD3Transformer2DModel"]
    model = entry.factory()
    base = zoo_run(entry, model, num_steps=4)
    adapter = "diffusers-generic"
    with smoothcache.enabled(model, {"attn": [1, 0, 1, 1]}, adapter=adapter) as session:
        out = zoo_run(entry, model, num_steps=4)
    assert session.adapter.name == "diffusers-generic"
    assert session.stats.reused["transformer_blocks.0.attn"] == 1
    assert not torch.equal(out, base)


class _NoTimestep(nn.Module):
    """A transformer-looking model whose forward takes no timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            nn.ModuleDict({"ff": nn.Linear(4, 4)}) for _ in range(2)
        )

    def forward(self, hidden_states):
        return hidden_states


def test_it_refuses_what_it_cannot_establish():
    model = _NoTimestep()
    assert len(block_lists(model)) == 1
    with pytest.raises(AdapterError, match="takes no timestep argument"):
        timestep_argument(model)
    assert not GenericDiffusersAdapter().matches(model)  # not a diffusers transformer either
    with pytest.raises(AdapterError, match="does not recognise"):
        smoothcache.enable(model, {"ff": [1, 0, 1]}, adapter="diffusers-generic")
    with pytest.raises(AdapterError, match="found no block list"):
        GenericDiffusersAdapter().branches(nn.Linear(2, 2))


def test_adapters_check_reports_what_it_found(capsys):
    code, out, _ = run_cli(
        capsys, "adapters", "--check", "tests.adapters.test_generic_adapter:mochi"
    )
    assert code == 0
    assert "adapter: 'diffusers-generic' (structure only, priority -100)" in out
    assert "block lists: ['transformer_blocks (" in out
    assert "timestep: argument 'timestep' (position " in out
