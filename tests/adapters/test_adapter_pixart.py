"""The ``pixart`` adapter on tiny PixArt-alpha and PixArt-Sigma pipelines (diffusers).

The pipelines drive every test, so the transformer sees its real call pattern: one call per
step, guidance batched as [uncond, cond]. Model-level tests enable caching on the transformer
itself; pipeline-level tests hand the pipeline to smoothcache.
"""

from __future__ import annotations

import pytest
import torch

import smoothcache
from smoothcache import Schedule
from smoothcache.adapters.pixart import PixArtAdapter
from smoothcache.testing.models.tiny_pixart import pixart_latents, tiny_pixart_pipeline
from tests.conftest import assert_same_state, count_original_calls, module_state

STEPS = 6
ROW = [1, 0, 1, 0, 0, 1]
KINDS = ("attn1", "attn2", "ff")
LAYERS = 2


@pytest.fixture(scope="module")
def alpha():
    return tiny_pixart_pipeline("alpha")


def _paths(kind: str) -> list[str]:
    return [f"transformer_blocks.{i}.{kind}" for i in range(LAYERS)]


@pytest.mark.parametrize("version", ["alpha", "sigma"])
def test_detection_picks_pixart_and_no_other(version):
    pipe = tiny_pixart_pipeline(version)
    for obj in (pipe, pipe.transformer):
        assert smoothcache.detect(obj).name == "pixart"
        for adapter in smoothcache.adapters():
            if adapter.name not in ("pixart", "diffusers-generic"):  # the fallback ranks last
                root = adapter.root(obj)
                assert root is None or not adapter.matches(root), adapter.name


def test_every_branch_exists(alpha):
    model = alpha.transformer
    branches = PixArtAdapter().branches(model)
    assert [b.path for b in branches] == [
        f"transformer_blocks.{i}.{k}" for i in range(LAYERS) for k in KINDS
    ]
    for branch in branches:
        module = model.get_submodule(branch.path)
        assert type(module).__name__ == ("FeedForward" if branch.kind == "ff" else "Attention")


def test_adaln_single_receives_the_timestep_once_per_call(alpha):
    """The blocks' ``timestep`` is the adaLN modulation; adaln_single gets the real timestep."""
    root_t, source_t, block_t = [], [], []
    model = alpha.transformer
    handles = [
        model.register_forward_pre_hook(
            lambda _m, _a, kw: root_t.append(kw["timestep"]), with_kwargs=True
        ),
        model.adaln_single.register_forward_pre_hook(lambda _m, a: source_t.append(a[0])),
        model.transformer_blocks[0].register_forward_pre_hook(
            lambda _m, _a, kw: block_t.append(kw["timestep"]), with_kwargs=True
        ),
    ]
    try:
        pixart_latents(alpha, STEPS)
    finally:
        for handle in handles:
            handle.remove()
    assert len(root_t) == len(source_t) == STEPS
    assert all(torch.equal(a, b) for a, b in zip(root_t, source_t))
    assert source_t[0].shape == (2,) and source_t[0].dtype == torch.int64
    assert block_t[0].shape == (2, 6 * 16)  # the modulation, not the timestep


@pytest.mark.parametrize("kind", KINDS)
def test_reuse_skips_the_branch_and_changes_the_output(alpha, kind):
    base = pixart_latents(alpha, STEPS)
    with count_original_calls(alpha.transformer, _paths(kind)) as calls:
        with smoothcache.enabled(alpha.transformer, {kind: ROW}) as session:
            out = pixart_latents(alpha, STEPS)
    assert dict(calls) == {p: sum(ROW) for p in _paths(kind)}
    assert session.stats.reused == {p: ROW.count(0) for p in _paths(kind)}
    assert (out - base).abs().max() > 1e-3 * base.abs().max()


def test_compute_everything_is_bit_identical(alpha):
    before = module_state(alpha.transformer)
    base = pixart_latents(alpha, STEPS)
    with smoothcache.enabled(alpha.transformer, Schedule.uniform(STEPS, 1, KINDS)) as session:
        out = pixart_latents(alpha, STEPS)
    assert session.stats.total_computed == STEPS * LAYERS * len(KINDS)
    assert session.stats.total_reused == 0
    assert torch.equal(out, base)
    assert_same_state(before, module_state(alpha.transformer))
    assert torch.equal(pixart_latents(alpha, STEPS), base)


@pytest.mark.parametrize("version", ["alpha", "sigma"])
def test_one_step_per_denoising_step(version):
    pipe = tiny_pixart_pipeline(version)
    with smoothcache.enabled(pipe, {"attn1": ROW}) as session:
        pixart_latents(pipe, STEPS)
        assert session.clock.step == STEPS - 1
    stats = session.stats
    assert (stats.steps, stats.generations, stats.passes) == (STEPS, 1, 1)


@pytest.mark.parametrize("version", ["alpha", "sigma"])
def test_pipeline_run_reuses_and_changes_the_output(version):
    pipe = tiny_pixart_pipeline(version)
    base = pixart_latents(pipe, STEPS, batch=2)
    schedule = Schedule.uniform(STEPS, 2, KINDS)
    with smoothcache.enabled(pipe, schedule) as session:
        out = pixart_latents(pipe, STEPS, batch=2)
    reused_steps = schedule.rows["attn1"].count(0)
    assert session.stats.total_reused == reused_steps * LAYERS * len(KINDS)
    assert session.stats.steps == STEPS
    assert out.shape == base.shape == (2, 4, 8, 8)
    assert (out - base).abs().max() > 1e-3 * base.abs().max()


def test_calibration_end_to_end(alpha):
    with smoothcache.calibrating(alpha) as recorder:
        pixart_latents(alpha, STEPS, seed=0)
        pixart_latents(alpha, STEPS, seed=1)
    schedule = recorder.curves().schedule(alpha=0.1)
    assert schedule.num_steps == STEPS
    with smoothcache.enabled(alpha, schedule) as session:
        pixart_latents(alpha, STEPS)
    assert session.stats.steps == STEPS
