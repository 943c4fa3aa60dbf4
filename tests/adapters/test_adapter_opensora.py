"""The Open-Sora adapters, ``opensora-stdit3`` and ``opensora-stdit2``, on tiny faithful models.

STDiT3 runs under Open-Sora 1.2's rectified-flow call pattern (``model(...)`` once per step,
[cond, uncond]), with conditioning frames (``x_mask``) as 1.2's inference script passes them;
STDiT2 runs under 1.1's IDDPM pattern (``model.forward(...)`` called directly).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import smoothcache
from smoothcache import AdapterError, Schedule
from smoothcache.adapter import TimestepSource, argument
from smoothcache.adapters.opensora import STDiT2Adapter, STDiT3Adapter
from smoothcache.testing.models.stdit import (
    STDiT3,
    iddpm_sample,
    rflow_sample,
    tiny_stdit2,
    tiny_stdit3,
)
from tests.conftest import (
    assert_same_state,
    changed_by_far,
    count_original_calls,
    detected_only_as,
    module_state,
)

STEPS = 6
ROW = [1, 0, 1, 0, 0, 1]
DEPTH = 2
STDIT3_KINDS = STDiT3Adapter.kinds
STDIT2_KINDS = ("attn", "attn_temp", "cross_attn", "mlp")


def _stdit3_paths(kind: str) -> list[str]:
    family, branch = kind.split(".")
    return [f"{family}_blocks.{i}.{branch}" for i in range(DEPTH)]


@pytest.fixture(scope="module")
def stdit3() -> STDiT3:
    return tiny_stdit3(seed=1)


@pytest.fixture(scope="module")
def stdit2():
    return tiny_stdit2(seed=1)


def _sample3(model: STDiT3, **kwargs: Any) -> torch.Tensor:
    return rflow_sample(model, STEPS, condition_frames=1, **kwargs)


# ---------------------------------------------------------------------------------------------
# STDiT3
# ---------------------------------------------------------------------------------------------


def test_stdit3_zero_initialised_temporal_branches_are_re_randomised(stdit3):
    fresh = STDiT3()
    for block in fresh.temporal_blocks:
        for layer in (block.attn.proj, block.cross_attn.proj, block.mlp.fc2):
            assert not layer.weight.any()
    for block in stdit3.temporal_blocks:
        for layer in (block.attn.proj, block.cross_attn.proj, block.mlp.fc2):
            assert layer.weight.abs().min() > 0


def test_stdit3_detection_picks_this_adapter_and_no_other(stdit3):
    detected_only_as(stdit3, "opensora-stdit3")


def test_stdit3_branches_are_named_by_block_family(stdit3):
    branches = STDiT3Adapter().branches(stdit3)
    assert [(b.path, b.kind, b.block) for b in branches[:4]] == [
        ("spatial_blocks.0.attn", "spatial.attn", 0),
        ("spatial_blocks.0.cross_attn", "spatial.cross_attn", 0),
        ("spatial_blocks.0.mlp", "spatial.mlp", 0),
        ("temporal_blocks.0.attn", "temporal.attn", 0),
    ]
    assert len(branches) == DEPTH * len(STDIT3_KINDS)
    assert {b.kind for b in branches} == set(STDIT3_KINDS)
    for branch in branches:
        stdit3.get_submodule(branch.path)


@pytest.mark.parametrize("kind", STDIT3_KINDS)
def test_stdit3_reuse_skips_the_branch_and_changes_the_output(stdit3, kind):
    base = _sample3(stdit3)
    paths = _stdit3_paths(kind)
    with count_original_calls(stdit3, paths) as calls:
        with smoothcache.enabled(stdit3, {kind: ROW}) as session:
            out = _sample3(stdit3)
    assert dict(calls) == {p: sum(ROW) for p in paths}
    assert session.stats.reused == {p: ROW.count(0) for p in paths}
    assert changed_by_far(out, base)


def test_stdit3_per_block_key_names_one_block_of_one_family(stdit3):
    schedule = {"spatial.cross_attn": ROW, "spatial.cross_attn-1": [1] * STEPS}
    with smoothcache.enabled(stdit3, schedule) as session:
        _sample3(stdit3)
    assert session.stats.reused == {
        "spatial_blocks.0.cross_attn": ROW.count(0),
        "spatial_blocks.1.cross_attn": 0,
    }


def test_stdit3_compute_everything_is_bit_identical(stdit3):
    before = module_state(stdit3)
    base = _sample3(stdit3)
    with smoothcache.enabled(stdit3, Schedule.uniform(STEPS, 1, STDIT3_KINDS)) as session:
        out = _sample3(stdit3)
    assert session.stats.total_computed == STEPS * DEPTH * len(STDIT3_KINDS)
    assert torch.equal(out, base)
    assert_same_state(before, module_state(stdit3))


@pytest.mark.parametrize("condition_frames", [0, 1])
def test_stdit3_one_step_per_denoising_step(stdit3, condition_frames):
    schedule = Schedule.uniform(STEPS, 2, STDIT3_KINDS)
    with smoothcache.enabled(stdit3, schedule) as session:
        rflow_sample(stdit3, STEPS, condition_frames=condition_frames)
    stats = session.stats
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)
    assert stats.total_reused == schedule.rows["spatial.attn"].count(0) * DEPTH * len(STDIT3_KINDS)


class _STDiT3EmbedderSource(STDiT3Adapter):
    """A wrong STDiT3 adapter: ``t_embedder`` runs twice per evaluation when x_mask is given."""

    name = "stdit3-via-t-embedder"

    def timestep_source(self, model):
        return TimestepSource(path="t_embedder", read=argument("t", 0))


def test_stdit3_t_embedder_is_not_a_valid_source_with_x_mask(stdit3):
    calls: list[float] = []
    handle = stdit3.t_embedder.register_forward_pre_hook(lambda _m, a: calls.append(float(a[0][0])))
    try:
        _sample3(stdit3)
    finally:
        handle.remove()
    assert len(calls) == 2 * STEPS and calls[1::2] == [0.0] * STEPS  # t, then t0 = 0

    wrong = _STDiT3EmbedderSource()
    with smoothcache.enabled(stdit3, {"spatial.mlp": ROW}, adapter=wrong):
        rflow_sample(stdit3, STEPS)  # without x_mask it happens to fire once
    with pytest.raises(AdapterError, match="fired twice"):
        with smoothcache.enabled(stdit3, {"spatial.mlp": ROW}, adapter=wrong):
            _sample3(stdit3)


def test_stdit3_calibration_end_to_end(stdit3):
    with smoothcache.calibrating(stdit3) as recorder:
        _sample3(stdit3, seed=0)
        _sample3(stdit3, seed=1)
    schedule = recorder.curves().schedule(alpha=0.1)
    assert schedule.num_steps == STEPS
    with smoothcache.enabled(stdit3, schedule) as session:
        _sample3(stdit3)
    assert session.stats.steps == STEPS


def test_stdit3_without_temporal_blocks_declares_spatial_branches_only():
    """Open-Sora 1.3's ``skip_temporal`` config has no ``temporal_blocks`` attribute."""
    model = tiny_stdit3()
    del model.temporal_blocks
    assert STDiT3Adapter().matches(model)
    assert {b.kind for b in STDiT3Adapter().branches(model)} == {
        "spatial.attn",
        "spatial.cross_attn",
        "spatial.mlp",
    }


# ---------------------------------------------------------------------------------------------
# STDiT2
# ---------------------------------------------------------------------------------------------


def test_stdit2_detection_picks_this_adapter_and_no_other(stdit2):
    detected_only_as(stdit2, "opensora-stdit2")


def test_stdit2_every_branch_exists(stdit2):
    branches = STDiT2Adapter().branches(stdit2)
    assert [b.path for b in branches[:4]] == [f"blocks.0.{k}" for k in STDIT2_KINDS]
    assert len(branches) == DEPTH * len(STDIT2_KINDS)
    for branch in branches:
        stdit2.get_submodule(branch.path)


@pytest.mark.parametrize("kind", STDIT2_KINDS)
def test_stdit2_reuse_skips_the_branch_and_changes_the_output(stdit2, kind):
    base = iddpm_sample(stdit2, STEPS)
    paths = [f"blocks.{i}.{kind}" for i in range(DEPTH)]
    with count_original_calls(stdit2, paths) as calls:
        with smoothcache.enabled(stdit2, {kind: ROW}) as session:
            out = iddpm_sample(stdit2, STEPS)
    assert dict(calls) == {p: sum(ROW) for p in paths}
    assert session.stats.reused == {p: ROW.count(0) for p in paths}
    assert changed_by_far(out, base)


def test_stdit2_compute_everything_is_bit_identical_under_iddpm(stdit2):
    before = module_state(stdit2)
    base = iddpm_sample(stdit2, STEPS)
    with smoothcache.enabled(stdit2, Schedule.uniform(STEPS, 1, STDIT2_KINDS)) as session:
        out = iddpm_sample(stdit2, STEPS)
    stats = session.stats
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)
    assert stats.total_computed == STEPS * DEPTH * len(STDIT2_KINDS)
    assert torch.equal(out, base)
    assert_same_state(before, module_state(stdit2))


class _STDiT2RootSource(STDiT2Adapter):
    """A wrong STDiT2 adapter: IDDPM calls ``model.forward`` directly, so root hooks never fire."""

    name = "stdit2-via-root"

    def timestep_source(self, model):
        return TimestepSource(path="", read=argument("timestep", 1))


def test_stdit2_root_is_not_a_valid_source_under_iddpm(stdit2):
    with pytest.raises(AdapterError, match="ran before the timestep source"):
        with smoothcache.enabled(stdit2, {"mlp": ROW}, adapter=_STDiT2RootSource()):
            iddpm_sample(stdit2, STEPS)


def test_stdit2_with_x_mask_is_refused(stdit2):
    """Reference frames make ``forward`` call ``t_embedder`` twice: no valid source remains."""
    with pytest.raises(AdapterError, match="fired twice"):
        with smoothcache.enabled(stdit2, {"mlp": ROW}):
            iddpm_sample(stdit2, STEPS, condition_frames=1)


def test_stdit2_calibration_end_to_end(stdit2):
    with smoothcache.calibrating(stdit2) as recorder:
        iddpm_sample(stdit2, STEPS, seed=0)
        iddpm_sample(stdit2, STEPS, seed=1)
    schedule = recorder.curves().schedule(alpha=0.1)
    assert schedule.num_steps == STEPS
    with smoothcache.enabled(stdit2, schedule) as session:
        iddpm_sample(stdit2, STEPS)
    assert session.stats.steps == STEPS
