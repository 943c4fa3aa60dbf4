"""diffusers DiT through DiTPipeline, and the reference implementation as the bar to match."""

from __future__ import annotations

import warnings

import pytest
import torch

import smoothcache
from smoothcache import Schedule, ScheduleError
from smoothcache.testing.models.original_dit import sample_original_dit
from smoothcache.testing.models.tiny_diffusers import dit_pipeline_latents, tiny_dit_pipeline
from tests.conftest import assert_same_state, count_original_calls, module_state

STEPS = 10
ROW = [1, 0, 1, 0, 0, 1, 0, 1, 0, 1]
CALL = {"class_labels": [1, 2], "num_inference_steps": STEPS, "guidance_scale": 4.0}


def _latents(pipe) -> torch.Tensor:
    return dit_pipeline_latents(pipe, generator=torch.manual_seed(0), **CALL)


@pytest.fixture
def pipe():
    return tiny_dit_pipeline(seed=0)


@pytest.mark.parametrize("kind", ["attn1", "ff"])
def test_pipeline_reuse_skips_and_changes(pipe, kind):
    base = _latents(pipe)
    paths = [f"transformer_blocks.{i}.{kind}" for i in range(2)]
    with count_original_calls(pipe.transformer, paths) as calls:
        with smoothcache.enabled(pipe, {kind: ROW}) as session:
            out = _latents(pipe)
    assert [calls[p] for p in paths] == [sum(ROW)] * 2
    assert session.stats.steps == STEPS and session.stats.passes == 1
    assert session.stats.total_reused == 2 * ROW.count(0)
    assert (out - base).abs().max() > 1e-3  # compute-everything is bit-identical (below)


def test_pipeline_compute_everything_is_bit_identical(pipe):
    before = module_state(pipe.transformer)
    base = _latents(pipe)
    with smoothcache.enabled(pipe, Schedule.uniform(STEPS, 1, ["attn1", "ff"])) as session:
        out = _latents(pipe)
    assert session.stats.total_computed == 2 * 2 * STEPS
    assert torch.equal(out, base)
    assert torch.equal(_latents(pipe), base)
    assert_same_state(before, module_state(pipe.transformer))


def test_per_block_key_overrides_kind(pipe):
    schedule = {"attn1": ROW, "attn1-1": [1] * STEPS}
    with smoothcache.enabled(pipe.transformer, schedule) as session:
        _latents(pipe)
    reused = session.stats.reused
    assert reused["transformer_blocks.0.attn1"] == ROW.count(0)
    assert reused["transformer_blocks.1.attn1"] == 0


def test_matches_reference_implementation_bit_for_bit(pipe, capsys):
    """Same schedule, model and inputs as dit-smoothcache's DiffuserCacheHelper: same output.

    dit-smoothcache is in the ``test`` extra: where it is missing this fails, never skips.
    """
    import SmoothCache as reference

    schedule = {"attn1": ROW}
    helper = reference.DiffuserCacheHelper(pipe.transformer, schedule=schedule)
    helper.enable()
    try:
        theirs = _latents(pipe)
    finally:
        helper.disable()
    capsys.readouterr()  # the reference prints on every branch call
    with smoothcache.enabled(pipe, schedule) as session:
        ours = _latents(pipe)
    assert session.stats.total_reused == 2 * ROW.count(0)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, _latents(pipe))  # and both differ from no caching


def test_shipped_schedule_runs_on_original_dit(original_dit):
    name = "dit-xl-2-256/ddim-30/alpha-0.35"
    schedule = Schedule.shipped(name)
    base = sample_original_dit(original_dit, num_steps=30, cfg_scale=4.0)
    with smoothcache.enabled(original_dit, name) as session:
        out = sample_original_dit(original_dit, num_steps=30, cfg_scale=4.0)
    computed = sum(schedule.rows["attn"])
    assert session.stats.computed["blocks.0.attn"] == computed
    assert session.stats.reused["blocks.0.mlp"] == 30 - computed
    assert not torch.equal(out, base)


def _count_calls(module, calls):
    """Count ``module``'s forward calls without a hook (a hook turns the fast path off)."""
    original = module.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    module.forward = forward


def test_fast_path_skips_input_preparation(pipe):
    outputs, norm_calls = {}, {}
    norm3 = pipe.transformer.transformer_blocks[0].norm3
    for fast in (False, True):
        calls = []
        _count_calls(norm3, calls)
        with smoothcache.enabled(pipe, {"attn1": ROW, "ff": ROW}, fast_path=fast):
            outputs[fast] = _latents(pipe)
        del norm3.forward
        norm_calls[fast] = len(calls)
    assert torch.equal(outputs[True], outputs[False])
    assert norm_calls == {False: STEPS, True: sum(ROW) + 1}  # +1: the check at step 0


def test_user_hooks_fire_as_without_caching(pipe):
    """A hook inside a block turns that block's fast path off: hooks fire once per step, also
    at step 0 (no shadow run they could see) and at reuse steps (the branch is called and
    answers from the cache)."""
    block = pipe.transformer.transformer_blocks[0]
    fired = {"norm3": 0, "ff": 0}

    def counter(name):
        return lambda *_: fired.__setitem__(name, fired[name] + 1)

    handles = [getattr(block, n).register_forward_hook(counter(n)) for n in fired]
    ff_calls = []
    _count_calls(block.ff, ff_calls)
    try:
        with smoothcache.enabled(pipe, {"attn1": ROW, "ff": ROW}) as session:
            _latents(pipe)
    finally:
        for handle in handles:
            handle.remove()
        del block.ff.forward
    assert fired == {"norm3": STEPS, "ff": STEPS}
    assert len(ff_calls) == sum(ROW)  # the original forward ran only at computed steps
    assert session.stats.reused["transformer_blocks.0.ff"] == ROW.count(0)


def test_a_block_wrapped_by_another_library_keeps_its_wrapper(pipe):
    """A block whose ``forward`` another library replaced (diffusers' hooks, e.g. the input
    split of context parallelism; accelerate) keeps it: the fast path would bypass the wrapper.
    The wrapper runs at every step, nothing warns, and the result is the plain wrappers'."""
    block = pipe.transformer.transformer_blocks[0]
    calls = []
    _count_calls(block, calls)
    try:
        outputs = {}
        for fast in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with smoothcache.enabled(pipe, {"attn1": ROW, "ff": ROW}, fast_path=fast) as s:
                    outputs[fast] = _latents(pipe)
            assert s.stats.reused["transformer_blocks.0.ff"] == ROW.count(0)
            assert "forward" in block.__dict__  # the other library's wrapper is still there
    finally:
        del block.forward
    assert len(calls) == 2 * STEPS
    assert torch.equal(outputs[True], outputs[False])


def test_a_forward_replaced_during_a_session_is_dropped_with_a_warning(pipe):
    """Another library wrapping a branch after smoothcache did: leaving the session restores
    the forward from before the session (no trace of the session), and says it dropped the
    other wrapper rather than doing so silently."""
    block = pipe.transformer.transformer_blocks[0]
    with pytest.warns(RuntimeWarning, match="was replaced while smoothcache was enabled"):
        with smoothcache.enabled(pipe, {"attn1": ROW, "ff": ROW}):
            _latents(pipe)
            wrapped = block.ff.forward
            block.ff.forward = lambda *args, **kwargs: wrapped(*args, **kwargs)
    assert "forward" not in block.ff.__dict__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the engine's own rebinding of forward is not foreign
        with smoothcache.enabled(pipe, {"attn1": ROW, "ff": ROW}):
            _latents(pipe)


def test_a_schedule_made_for_the_original_dit_applies_to_diffusers_dit_by_name(pipe):
    """Issue #15: the shipped DiT-XL/2 schedules use the original DiT's kinds (attn, mlp); the
    diffusers-dit adapter reads them as attn1 and ff, each row for its own kind."""
    name = "dit-xl-2-256/ddim-50/alpha-0.18"
    shipped = Schedule.shipped(name)
    call = {"class_labels": [1], "num_inference_steps": 50, "guidance_scale": 4.0}
    explicit = {"attn1": shipped.rows["attn"], "ff": shipped.rows["mlp"]}
    with smoothcache.enabled(pipe, explicit):
        expected = dit_pipeline_latents(pipe, generator=torch.manual_seed(0), **call)
    with smoothcache.enabled(pipe, name) as session:
        got = dit_pipeline_latents(pipe, generator=torch.manual_seed(0), **call)
    assert torch.equal(got, expected)
    assert session.schedule.metadata["renamed_keys"] == {"attn": "attn1", "mlp": "ff"}
    reused = session.stats.reused
    assert reused["transformer_blocks.0.attn1"] == shipped.rows["attn"].count(0)
    assert reused["transformer_blocks.0.ff"] == shipped.rows["mlp"].count(0)
    with pytest.raises(ScheduleError, match="'attn' and 'attn1' both mean 'attn1'"):
        smoothcache.enable(pipe, {"attn": shipped.rows["attn"], "attn1": shipped.rows["attn"]})
    with pytest.raises(ScheduleError, match="also reads 'attn' as 'attn1', 'mlp' as 'ff'"):
        smoothcache.enable(pipe, {"self_attn": shipped.rows["attn"]})


def test_a_diffusers_schedule_applies_to_the_original_dit(original_dit):
    row = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1]
    with smoothcache.enabled(original_dit, {"attn1": row, "ff-1": row}) as session:
        sample_original_dit(original_dit, num_steps=10)
    assert session.stats.reused == {"blocks.0.attn": 3, "blocks.1.attn": 3, "blocks.1.mlp": 3}
