"""The Stable Audio adapters: ``diffusers-stable-audio`` and ``stable-audio-tools``.

diffusers' ``StableAudioDiTModel`` runs through a tiny ``StableAudioPipeline`` (one call per
step, [uncond, cond], a (1,) float timestep). stable-audio-tools' ``DiffusionTransformer`` runs
through an Euler loop that calls it the way its samplers do; it runs guidance itself and doubles
the batch only inside ``cfg_interval``. Its tests skip when stable-audio-tools is not installed
(requirements-sat.txt installs it without its training stack).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache import Schedule
from smoothcache.adapters.stable_audio import DiffusersStableAudioAdapter
from smoothcache.adapters.stable_audio_tools import StableAudioToolsAdapter
from smoothcache.testing.models.tiny_stable_audio import (
    guided_steps,
    sat_euler_sample,
    stable_audio_latents,
    tiny_sat_dit,
    tiny_stable_audio_pipeline,
    tiny_stable_audio_transformer,
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
LAYERS = 2


# ---------------------------------------------------------------------------------------------
# diffusers StableAudioDiTModel
# ---------------------------------------------------------------------------------------------

DIFFUSERS_KINDS = ("attn1", "attn2", "ff")


@pytest.fixture(scope="module")
def audio_pipe():
    return tiny_stable_audio_pipeline()


def _diffusers_paths(kind: str) -> list[str]:
    return [f"transformer_blocks.{i}.{kind}" for i in range(LAYERS)]


def test_diffusers_detection_picks_this_adapter_and_no_other(audio_pipe):
    detected_only_as(audio_pipe, "diffusers-stable-audio")
    detected_only_as(audio_pipe.transformer, "diffusers-stable-audio")


def test_diffusers_every_branch_exists():
    model = tiny_stable_audio_transformer()
    branches = DiffusersStableAudioAdapter().branches(model)
    assert len(branches) == LAYERS * 3
    for branch in branches:
        module = model.get_submodule(branch.path)
        assert type(module).__name__ == ("FeedForward" if branch.kind == "ff" else "Attention")


def test_diffusers_timestep_is_positional_float_of_shape_one(audio_pipe):
    seen = []
    handle = audio_pipe.transformer.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].shape[0], args[1]))
    )
    try:
        stable_audio_latents(audio_pipe, STEPS)
    finally:
        handle.remove()
    assert len(seen) == STEPS
    assert all(batch == 2 and t.shape == (1,) and t.is_floating_point() for batch, t in seen)
    values = [float(t) for _, t in seen]
    assert values == sorted(values, reverse=True) and len(set(values)) == STEPS


@pytest.mark.parametrize("kind", DIFFUSERS_KINDS)
def test_diffusers_reuse_skips_the_branch_and_changes_the_output(audio_pipe, kind):
    base = stable_audio_latents(audio_pipe, STEPS)
    paths = _diffusers_paths(kind)
    with count_original_calls(audio_pipe.transformer, paths) as calls:
        with smoothcache.enabled(audio_pipe.transformer, {kind: ROW}) as session:
            out = stable_audio_latents(audio_pipe, STEPS)
    assert dict(calls) == {p: sum(ROW) for p in paths}
    assert session.stats.reused == {p: ROW.count(0) for p in paths}
    assert changed_by_far(out, base)


def test_diffusers_compute_everything_is_bit_identical(audio_pipe):
    before = module_state(audio_pipe.transformer)
    base = stable_audio_latents(audio_pipe, STEPS)
    everything = Schedule.uniform(STEPS, 1, DIFFUSERS_KINDS)
    with smoothcache.enabled(audio_pipe.transformer, everything) as session:
        out = stable_audio_latents(audio_pipe, STEPS)
    assert session.stats.total_computed == STEPS * LAYERS * 3
    assert torch.equal(out, base)
    assert_same_state(before, module_state(audio_pipe.transformer))


def test_diffusers_pipeline_run_reuses_with_one_step_per_denoising_step(audio_pipe):
    base = stable_audio_latents(audio_pipe, STEPS, batch=2)
    schedule = Schedule.uniform(STEPS, 2, DIFFUSERS_KINDS)
    with smoothcache.enabled(audio_pipe, schedule) as session:
        out = stable_audio_latents(audio_pipe, STEPS, batch=2)
    stats = session.stats
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)
    assert stats.total_reused == schedule.rows["ff"].count(0) * LAYERS * 3
    assert changed_by_far(out, base)


def test_diffusers_calibration_end_to_end(audio_pipe):
    with smoothcache.calibrating(audio_pipe) as recorder:
        stable_audio_latents(audio_pipe, STEPS, seed=0)
        stable_audio_latents(audio_pipe, STEPS, seed=1)
    schedule = recorder.curves().schedule(alpha=0.1)
    assert schedule.num_steps == STEPS
    with smoothcache.enabled(audio_pipe, schedule) as session:
        stable_audio_latents(audio_pipe, STEPS)
    assert session.stats.steps == STEPS


# ---------------------------------------------------------------------------------------------
# stable-audio-tools DiffusionTransformer
# ---------------------------------------------------------------------------------------------

SAT_KINDS = ("self_attn", "cross_attn", "ff")
# guidance (a doubled batch) at steps 1-4 only: t = 1, 5/6, ..., 1/6 and sigma = t
INTERVAL = (0.3, 0.9)


@pytest.fixture(scope="module")
def sat() -> nn.Module:
    """stable-audio-tools' DiT: the test set-up installs it (requirements-sat.txt), so a missing
    package fails here instead of skipping."""
    return tiny_sat_dit()


def _sat_paths(kind: str) -> list[str]:
    return [f"transformer.layers.{i}.{kind}" for i in range(LAYERS)]


class DiTWrapper(nn.Module):
    """Stand-in for stable-audio-tools' ``DiTWrapper`` (its module imports the training stack)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(x, t, **kwargs)


class ConditionedDiffusionModelWrapper(DiTWrapper):
    """Stand-in for the wrapper ``get_pretrained_model`` returns (it holds ``.model``)."""


def test_sat_zero_initialised_branches_are_re_randomised(sat):
    from stable_audio_tools.models.dit import DiffusionTransformer

    fresh = DiffusionTransformer(
        io_channels=4, embed_dim=64, depth=1, num_heads=2, cond_token_dim=8
    )
    layer = fresh.transformer.layers[0]
    zeroed = [layer.self_attn.to_out, layer.cross_attn.to_out, layer.ff.ff[-2]]
    assert all(not m.weight.any() for m in zeroed)
    assert not fresh.postprocess_conv.weight.any()
    for i in range(LAYERS):
        assert sat.transformer.layers[i].self_attn.to_out.weight.abs().min() > 0


def test_sat_detection_picks_this_adapter_and_no_other(sat):
    detected_only_as(sat, "stable-audio-tools")
    wrapped = ConditionedDiffusionModelWrapper(DiTWrapper(sat))
    detected_only_as(wrapped, "stable-audio-tools")
    assert StableAudioToolsAdapter().root(wrapped) is sat


def test_sat_every_branch_exists(sat):
    branches = StableAudioToolsAdapter().branches(sat)
    assert [b.path for b in branches] == [
        f"transformer.layers.{i}.{k}" for i in range(LAYERS) for k in SAT_KINDS
    ]
    for branch in branches:
        module = sat.get_submodule(branch.path)
        assert type(module).__name__ == ("FeedForward" if branch.kind == "ff" else "Attention")


@pytest.mark.parametrize("kind", SAT_KINDS)
def test_sat_reuse_skips_the_branch_and_changes_the_output(sat, kind):
    base = sat_euler_sample(sat, STEPS)
    paths = _sat_paths(kind)
    with count_original_calls(sat, paths) as calls:
        with smoothcache.enabled(sat, {kind: ROW}) as session:
            out = sat_euler_sample(sat, STEPS)
    assert dict(calls) == {p: sum(ROW) for p in paths}
    assert session.stats.reused == {p: ROW.count(0) for p in paths}
    assert session.stats.fallbacks == {p: 0 for p in paths}
    assert changed_by_far(out, base)


def test_sat_compute_everything_is_bit_identical(sat):
    before = module_state(sat)
    base = sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL)
    with smoothcache.enabled(sat, Schedule.uniform(STEPS, 1, SAT_KINDS)) as session:
        out = sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL)
    assert session.stats.total_computed == STEPS * LAYERS * 3
    assert torch.equal(out, base)
    assert_same_state(before, module_state(sat))


def test_sat_batch_size_changes_fall_back_exactly_where_guidance_switches(sat):
    """Guidance only at steps 1-4: the batch is 1, 2, 2, 2, 2, 1 per step."""
    assert guided_steps(STEPS, INTERVAL) == [False, True, True, True, True, False]
    row = [1, 0, 1, 0, 1, 0]  # reuse at 1 (batch 1 -> 2), 3 (2 -> 2), 5 (2 -> 1)
    paths = _sat_paths("self_attn")
    batches: list[int] = []
    module = sat.get_submodule(paths[0])
    original = module.forward

    def record(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        batches.append(x.shape[0])
        return original(x, *args, **kwargs)

    module.forward = record
    try:
        sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL)
        assert batches == [1, 2, 2, 2, 2, 1]
        batches.clear()
        with smoothcache.enabled(sat, {"self_attn": row}) as session:
            out = sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL)
    finally:
        del module.forward
    assert batches == [1, 2, 2, 2, 1]  # step 3 reused; steps 1 and 5 computed instead
    stats = session.stats
    assert stats.fallbacks == {p: 2 for p in paths}
    assert stats.reused == {p: 1 for p in paths}
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)
    assert torch.isfinite(out).all()


def test_sat_through_its_wrappers_one_step_per_sampler_call(sat):
    wrapped = ConditionedDiffusionModelWrapper(DiTWrapper(sat))
    base = sat_euler_sample(wrapped, STEPS, cfg_interval=INTERVAL)
    with smoothcache.enabled(wrapped, Schedule.uniform(STEPS, 2, SAT_KINDS)) as session:
        out = sat_euler_sample(wrapped, STEPS, cfg_interval=INTERVAL)
    stats = session.stats
    assert session.model is sat
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)
    assert stats.total_reused > 0
    assert changed_by_far(out, base)


def test_sat_calibration_end_to_end(sat):
    with smoothcache.calibrating(sat) as recorder:
        sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL, seed=0)
        sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL, seed=1)
    schedule = recorder.curves().schedule(alpha=0.1)
    assert schedule.num_steps == STEPS
    with smoothcache.enabled(sat, schedule) as session:
        sat_euler_sample(sat, STEPS, cfg_interval=INTERVAL)
    assert session.stats.steps == STEPS
