"""Engine semantics (DESIGN.md 1-7) on tiny random models.

Each caching test shows that reuse happened (the original forward was not called) and that it
changed the output; each exactness test compares bit for bit.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import smoothcache
from smoothcache import AdapterError, AlreadyEnabledError, Schedule, ScheduleError, StepCountError
from smoothcache.adapter import TimestepSource
from smoothcache.adapters.diffusers_dit import DiffusersDiTAdapter
from smoothcache.adapters.dit import OriginalDiTAdapter
from smoothcache.engine import actions_for
from smoothcache.testing.models.original_dit import sample_original_dit
from tests.conftest import (
    assert_same_state,
    count_original_calls,
    module_state,
    observing_original_forwards,
    sample_two_calls,
)

STEPS = 8
# compute at 0, 3, 4, 6, 7: reuse at 1, 2, 5
ROW = [1, 0, 0, 1, 1, 0, 1, 1]
REUSED_STEPS = [i for i, f in enumerate(ROW) if f == 0]


def _paths(model, kind: str) -> list[str]:
    return [f"blocks.{i}.{kind}" for i in range(len(model.blocks))]


# -- substitution: reuse skips the original and changes the output -----------------------------


@pytest.mark.parametrize("kind", ["attn", "mlp"])
def test_reuse_skips_original_and_changes_output(original_dit, kind):
    base = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    paths = _paths(original_dit, kind)
    with count_original_calls(original_dit, paths) as calls:
        with smoothcache.enabled(original_dit, {kind: ROW}) as session:
            out = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    computed = sum(ROW)
    assert all(calls[p] == computed for p in paths), dict(calls)  # not STEPS
    stats = session.stats
    assert stats.reused == {p: len(REUSED_STEPS) for p in paths}
    assert stats.computed == {p: computed for p in paths}
    assert (out - base).abs().max() > 1e-4  # reuse is not a no-op


def test_compute_everything_is_bit_identical(original_dit):
    base = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    everything = Schedule.uniform(STEPS, 1, ["attn", "mlp"])
    with smoothcache.enabled(original_dit, everything) as session:
        out = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert session.stats.total_computed == STEPS * 4 and session.stats.total_reused == 0
    assert torch.equal(out, base)
    after = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert torch.equal(after, base)


def test_reuse_happens_before_the_gate(original_dit):
    """A reused output is gated by the *current* step's adaLN gate, as the paper prescribes."""
    gates = []
    block = original_dit.blocks[0]
    handle = block.adaLN_modulation.register_forward_hook(lambda m, a, o: gates.append(o))
    with smoothcache.enabled(original_dit, {"attn": ROW}, fast_path=False):
        sample_original_dit(original_dit, num_steps=STEPS)
    handle.remove()
    assert len(gates) == STEPS  # the modulation (the gate) still runs on every step
    assert not torch.equal(gates[1], gates[0])  # and it changes with the timestep


# -- step clock and passes --------------------------------------------------------------------


def test_cfg_as_two_calls_uses_one_slot_per_pass(original_dit):
    base = sample_two_calls(original_dit, STEPS)
    paths = _paths(original_dit, "attn")
    with count_original_calls(original_dit, paths) as calls:
        with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
            out = sample_two_calls(original_dit, STEPS)
    stats = session.stats
    assert stats.steps == STEPS and stats.passes == 2 and stats.generations == 1
    assert calls[paths[0]] == 2 * sum(ROW)
    assert stats.reused[paths[0]] == 2 * len(REUSED_STEPS)
    assert (out - base).abs().max() > 1e-4

    # Each pass reuses its own output: forward hooks see what the block received.
    seen = []
    module = original_dit.get_submodule(paths[0])
    handle = module.register_forward_hook(lambda m, a, o: seen.append(o))
    with smoothcache.enabled(original_dit, {"attn": ROW}, calls_per_step=2, fast_path=False):
        sample_two_calls(original_dit, STEPS)
    handle.remove()
    step0_cond, step0_uncond, step1_cond, step1_uncond = seen[:4]
    assert not torch.equal(step0_cond, step0_uncond)
    assert step1_cond is step0_cond and step1_uncond is step0_uncond


def test_cfg_as_one_batch_is_one_pass(original_dit):
    with smoothcache.enabled(original_dit, {"mlp": ROW}) as session:
        sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert session.stats.steps == STEPS and session.stats.passes == 1


def test_calls_per_step_matches_value_mode(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}) as read:
        by_value = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    with smoothcache.enabled(original_dit, {"attn": ROW}, calls_per_step=1) as counted:
        by_count = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert torch.equal(by_value, by_count)
    assert counted.stats.reused == read.stats.reused


def test_wrong_calls_per_step_is_reported(original_dit):
    with pytest.raises(StepCountError, match="calls_per_step=2 does not fit"):
        with smoothcache.enabled(original_dit, {"attn": [1] * 4}, calls_per_step=2):
            sample_original_dit(original_dit, num_steps=8)


# -- generations ------------------------------------------------------------------------------


def test_generations_restart_and_clear_the_cache(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW, "mlp": ROW}) as session:
        first = sample_original_dit(original_dit, num_steps=STEPS, seed=0)
        second = sample_original_dit(original_dit, num_steps=STEPS, seed=0)
        other = sample_original_dit(original_dit, num_steps=STEPS, seed=1)
    assert torch.equal(first, second)
    assert session.stats.generations == 3 and session.stats.steps == 3 * STEPS
    with smoothcache.enabled(original_dit, {"attn": ROW, "mlp": ROW}):
        alone = sample_original_dit(original_dit, num_steps=STEPS, seed=1)
    assert torch.equal(other, alone)  # nothing leaked from the earlier generations


def test_run_shorter_than_schedule_is_an_error(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
        with pytest.raises(StepCountError, match=r"ended after 5 steps.*schedule has 8 steps"):
            sample_original_dit(original_dit, num_steps=5)
            sample_original_dit(original_dit, num_steps=5)
        session.reset()


def test_short_run_at_exit_is_an_error(original_dit):
    with pytest.raises(StepCountError, match=r"stopped after 5 steps.*schedule has 8"):
        with smoothcache.enabled(original_dit, {"attn": ROW}):
            sample_original_dit(original_dit, num_steps=5)
    assert "forward" not in original_dit.blocks[0].attn.__dict__  # restored before raising


def test_run_longer_than_schedule_is_an_error(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        with pytest.raises(StepCountError, match=r"more steps than the schedule.*8 steps"):
            sample_original_dit(original_dit, num_steps=12)


def test_reset_starts_a_new_generation(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
        with torch.no_grad():
            x = torch.randn(2, 4, 8, 8)
            y = torch.tensor([0, 1])
            original_dit(x, torch.tensor([999, 999]), y)
            original_dit(x, torch.tensor([800, 800]), y)
        session.reset()
        out = sample_original_dit(original_dit, num_steps=STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        expected = sample_original_dit(original_dit, num_steps=STEPS)
    assert torch.equal(out, expected)


# -- shape-guarded reuse ----------------------------------------------------------------------


@torch.no_grad()
def test_reuse_is_guarded_by_input_shape(original_dit):
    """A batch that changes size between steps computes instead of reusing a stale shape."""
    timesteps = [999, 700, 400, 100]
    with smoothcache.enabled(original_dit, {"attn": [1, 0, 0, 1]}) as session:
        for t, batch in zip(timesteps, [4, 4, 2, 2]):
            x = torch.randn(batch, 4, 8, 8)
            out = original_dit(x, torch.full((batch,), t), torch.zeros(batch, dtype=torch.long))
            assert out.shape[0] == batch
    stats = session.stats
    path = "blocks.0.attn"
    assert stats.reused[path] == 1  # step 1: same shape as step 0
    assert stats.fallbacks[path] == 1  # step 2: batch 2 != 4, computed instead
    assert stats.computed[path] == 3


# -- memory -----------------------------------------------------------------------------------


def test_actions_store_only_what_a_later_step_reuses():
    store, reuse, drop = 1, 2, 16
    actions = actions_for((1, 0, 0, 1, 1, 0, 1, 1))
    # row:                         1      0      0     1      1      0      1     1
    assert [a[0] for a in actions] == [store, reuse, reuse, drop, store, reuse, drop, 0]
    assert [a[2] for a in actions] == [0, 1, 1, 0, 0, 1, 0, 0]  # outputs kept as a step starts


def test_cache_holds_one_output_per_branch_and_frees_it(original_dit):
    batch, tokens, hidden = 4, 16, 64  # forward_with_cfg doubles a batch of 2
    one_output = batch * tokens * hidden * 4
    with smoothcache.enabled(original_dit, {"attn": ROW, "mlp": [1] * STEPS}) as session:
        sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=2.0)
        stats = session.stats  # before the session ends: dropped after the last use, not at exit
    assert stats.peak_cache_bytes == len(original_dit.blocks) * one_output  # mlp stores nothing
    assert stats.cache_bytes == 0  # every entry dropped after its last reuse


def _live_bytes(seen) -> tuple[int, int]:
    """Number and bytes of the recorded outputs still alive. The test runs with the garbage
    collector off (``no_gc``): an output the engine lets go of must be freed by reference
    counting at once, so what is alive here is exactly what something still references."""
    live = {id(o): o for o in (ref() for ref in seen) if o is not None}
    return len(live), sum(o.numel() * o.element_size() for o in live.values())


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize(
    ("rows", "guided", "orders"),
    [
        # issue #24's case: guidance as two calls at every step
        ({"attn1": [1, 0, 1, 0, 1], "ff": [1, 0, 0, 1, 1]}, range(5), None),
        # a guidance interval: the second pass stops after step 2 and never comes back
        ({"attn1": [1, 0, 1, 0, 1], "ff": [1, 0, 1, 1, 0]}, range(3), None),
        # the second pass runs at alternate steps only: each resumption finds its store stale
        ({"attn1": [1, 0, 0, 1, 1], "ff": [1, 1, 0, 1, 1]}, (0, 1, 3), None),
        # forecasts keep two outputs per branch and pass
        ({"attn1": [1, 1, 0, 1, 1], "ff": [1, 1, 0, 0, 1]}, range(5), {"attn1": [0, 0, 1, 0, 0]}),
    ],
)
@torch.no_grad()
@pytest.mark.usefixtures("no_gc")
def test_every_stored_output_is_counted_and_dropped_after_its_last_use(rows, guided, orders):
    """After every model call the branch outputs still alive are exactly the bytes that
    ``stats.cache_bytes`` reports, in every pass, and none is alive once the generation ended."""
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    model = tiny_dit_transformer(seed=0)
    paths = [f"transformer_blocks.{b}.{k}" for b in range(2) for k in ("attn1", "ff")]
    seen: list[weakref.ref] = []
    schedule = Schedule(rows, orders=orders or {})
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, null = torch.tensor([1, 2]), torch.tensor([1000, 1000])
    held = []
    with observing_original_forwards(model, paths, lambda _p, out: seen.append(weakref.ref(out))):
        with smoothcache.enabled(model, schedule) as session:
            for step, t in enumerate([900, 700, 500, 300, 100]):
                for labels in (cond, null) if step in guided else (cond,):
                    model(x, timestep=torch.full((2,), t), class_labels=labels)
                    count, size = _live_bytes(seen)
                    held.append(count)
                    assert size == session.stats.cache_bytes, (step, count)
            assert _live_bytes(seen) == (0, 0)  # inside the session: dropped, not left to exit
            assert session.stats.cache_bytes == 0
            assert session.stats.total_reused > 0 and max(held) > 0


@pytest.mark.parametrize("use", ["session", "calibration"])
def test_a_model_is_freed_by_reference_counting_once_the_session_ended(use):
    """No cycle through a finished session or recorder holds the model: dropping the last
    reference frees it at once, not at some later garbage collection (under context
    parallelism the model holds process groups, whose threads must not live to interpreter
    exit; docs/distributed.md)."""
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    model = tiny_dit_transformer(seed=0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    gc.collect()
    gc.disable()
    try:
        context = (
            smoothcache.enabled(model, {"attn1": [1, 0, 1]})
            if use == "session"
            else smoothcache.calibrating(model)
        )
        with torch.no_grad(), context as handle:
            for t in (900, 500, 100):
                model(x, timestep=torch.full((2,), t), class_labels=torch.tensor([1, 2]))
        if use == "session":
            assert handle.stats.total_reused > 0
        else:
            assert handle.curves().num_steps == 3
        freed = weakref.ref(model)
        del model, context
        assert freed() is not None  # the handle still holds it, as documented
        del handle
        assert freed() is None
    finally:
        gc.enable()


# -- exact restore, errors leave no trace ------------------------------------------------------


def test_restore_is_exact_after_normal_exit(original_dit):
    original_dit.blocks[1].mlp.forward = original_dit.blocks[1].mlp.forward  # pre-existing attr
    before = module_state(original_dit)
    with smoothcache.enabled(original_dit, {"attn": ROW, "mlp": ROW}):
        sample_original_dit(original_dit, num_steps=STEPS)
        assert module_state(original_dit) != before
    assert_same_state(before, module_state(original_dit))


def test_restore_is_exact_after_exception(original_dit):
    before = module_state(original_dit)
    with pytest.raises(KeyError, match="boom"):
        with smoothcache.enabled(original_dit, {"attn": ROW}):
            sample_original_dit(original_dit, num_steps=3)
            raise KeyError("boom")  # also: the run stopped early, but the user's error wins
    assert_same_state(before, module_state(original_dit))
    base = sample_original_dit(original_dit, num_steps=STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW}):  # usable again
        assert not torch.equal(sample_original_dit(original_dit, num_steps=STEPS), base)


def test_enable_disable_without_with(original_dit):
    before = module_state(original_dit)
    session = smoothcache.enable(original_dit, {"attn": ROW})
    assert session.active
    sample_original_dit(original_dit, num_steps=STEPS)
    session.disable()
    session.disable()  # idempotent
    assert not session.active
    assert_same_state(before, module_state(original_dit))


def test_enabling_twice_is_an_error(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        before = module_state(original_dit)
        with pytest.raises(AlreadyEnabledError, match="already active"):
            smoothcache.enable(original_dit, {"mlp": ROW})
        assert_same_state(before, module_state(original_dit))


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ({"attn2": ROW}, r"'attn2' matches no branch.*\['attn', 'mlp'\]"),
        ({"attn-7": ROW}, r"'attn-7' matches no branch.*blocks 0..1"),
        ({"attn": [1, 0, 1]}, None),  # wrong length: found when the sampler runs 8 steps
        ({"attn": [1, 2, 1]}, r"only 0 \(reuse\) and 1"),
        ({"attn": [0, 1, 1]}, r"reuses at step 0"),
        ({"attn": ROW, "mlp": ROW[:-1]}, r"has 7 steps but row 'attn' has 8"),
    ],
)
def test_bad_schedules_leave_the_model_untouched(original_dit, schedule, match):
    before = module_state(original_dit)
    if match is None:
        with pytest.raises(StepCountError, match=r"more steps than the schedule: .* 3 steps"):
            with smoothcache.enabled(original_dit, schedule):
                sample_original_dit(original_dit, num_steps=STEPS)
    else:
        with pytest.raises(ScheduleError, match=match):
            smoothcache.enable(original_dit, schedule)
    assert_same_state(before, module_state(original_dit))


# -- adapters that break the contract are caught, not silently wrong --------------------------


class _RootSourceAdapter(OriginalDiTAdapter):
    """Wrong on purpose: forward_with_cfg bypasses the root's __call__, so it never fires."""

    name = "broken-root-source"

    def timestep_source(self, model):
        return TimestepSource(path="", read=smoothcache.argument("t", 1))


def test_a_source_that_never_fires_is_an_error(original_dit):
    before = module_state(original_dit)
    with pytest.raises(AdapterError, match="ran before the timestep source"):
        with smoothcache.enabled(original_dit, {"attn": ROW}, adapter=_RootSourceAdapter()):
            sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert_same_state(before, module_state(original_dit))


def test_a_source_that_fires_twice_is_an_error(diffusers_dit):
    """diffusers' DiT calls block 0's timestep embedder again in its output head."""

    class Block0Embedder(DiffusersDiTAdapter):
        name = "broken-block0-source"

        def timestep_source(self, model):
            return TimestepSource("transformer_blocks.0.norm1.emb", smoothcache.argument("t", 0))

    x = torch.randn(2, 4, 8, 8)
    labels = torch.tensor([1, 2])
    with smoothcache.enabled(diffusers_dit, {"attn1": [1, 0, 1]}, adapter=Block0Embedder()):
        with torch.no_grad(), pytest.raises(AdapterError, match="fired twice"):
            for t in (999, 500, 0):
                diffusers_dit(x, timestep=torch.tensor([t, t]), class_labels=labels)


# -- adapter fast path: reused branches skip their input preparation ---------------------------


def _norm_calls(model) -> list[int]:
    """Count the first block's norm1 calls by wrapping its forward (a hook turns the fast
    path off: a hooked block keeps its own forward, so hooks fire as without caching)."""
    calls = []
    norm = model.blocks[0].norm1
    original = norm.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    norm.forward = forward
    return calls


def test_fast_path_skips_input_preparation_and_changes_nothing_else(original_dit):
    outputs = {}
    for fast in (False, True):
        calls = _norm_calls(original_dit)
        with smoothcache.enabled(original_dit, {"attn": ROW}, fast_path=fast) as session:
            outputs[fast] = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
        del original_dit.blocks[0].norm1.forward
        assert session.stats.reused["blocks.0.attn"] == len(REUSED_STEPS)
        # without the fast path the LayerNorm runs every step; with it, only when attn computes
        # (plus once at step 0, where the fast path is checked against the block's own forward)
        assert len(calls) == (sum(ROW) + 1 if fast else STEPS)
    assert torch.equal(outputs[True], outputs[False])


def _wrong_block_forward(block, x, c):
    """Forgets the gate: not what a DiTBlock computes."""
    shift_msa, scale_msa, _, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(c).chunk(6, 1)
    x = x + block.attn(block.norm1(x) * (1 + scale_msa.unsqueeze(1)) + shift_msa.unsqueeze(1))
    h = block.norm2(x) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
    return x + gate_mlp.unsqueeze(1) * block.mlp(h)


def test_fast_path_only_where_a_branch_reuses(original_dit):
    """A block whose branches compute at every step keeps its own forward (nothing to skip)."""
    with smoothcache.enabled(original_dit, {"attn": [1] * STEPS, "mlp": [1] * STEPS}):
        assert all("forward" not in block.__dict__ for block in original_dit.blocks)
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        assert all("forward" in block.__dict__ for block in original_dit.blocks)
    assert all("forward" not in block.__dict__ for block in original_dit.blocks)


class _WrongFastPath(OriginalDiTAdapter):
    name = "wrong-fast-path"

    def fast_forwards(self, model):
        return {f"blocks.{i}": _wrong_block_forward for i in range(len(model.blocks))}


def test_a_fast_path_that_differs_is_caught_and_not_used(original_dit):
    with smoothcache.enabled(original_dit, {"attn": ROW}, fast_path=False):
        expected = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    with pytest.warns(RuntimeWarning, match="does not reproduce this DiTBlock"):
        with smoothcache.enabled(original_dit, {"attn": ROW}, adapter=_WrongFastPath()):
            got = sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=4.0)
    assert torch.equal(got, expected)


class _OptionalBranchNet(torch.nn.Module):
    """Each block has `mix`, always called, and `extra`, called only with a context."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"mix": torch.nn.Linear(4, 4), "extra": torch.nn.Linear(4, 4)})
            for _ in range(2)
        )

    def forward(self, x, t, context=None):
        for block in self.blocks:
            x = x + block["mix"](x * t)
            if context is not None:
                x = x + block["extra"](context)
        return x


class _OptionalBranchAdapter(smoothcache.Adapter):
    name = "optional-branch-net"

    def matches(self, model):
        return isinstance(model, _OptionalBranchNet)

    def branches(self, model):
        return [
            smoothcache.Branch(f"blocks.{i}.{kind}", kind, i)
            for i in range(2)
            for kind in ("mix", "extra")
        ]

    def timestep_source(self, model):
        return TimestepSource("", smoothcache.argument("t", 1))


@torch.no_grad()
def test_unscheduled_branches_still_mark_the_evaluation():
    """Only `extra` is scheduled and it never runs: that is not a source firing twice."""
    net = _OptionalBranchNet()
    x = torch.randn(3, 4)
    with smoothcache.enabled(net, {"extra": [1, 0, 1]}, adapter=_OptionalBranchAdapter()) as s:
        for t in (3.0, 2.0, 1.0):
            net(x, torch.tensor(t))
    assert s.stats.steps == 3 and set(s.stats.computed) == {"blocks.0.extra", "blocks.1.extra"}


@torch.no_grad()
def test_a_branch_called_twice_per_evaluation_is_an_error(diffusers_dit):
    """Feed-forward chunking calls `ff` once per chunk: one cached output cannot serve them."""
    for block in diffusers_dit.transformer_blocks:
        block.set_chunk_feed_forward(chunk_size=8, dim=1)
    x, labels = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with pytest.raises(AdapterError, match=r"'transformer_blocks.0.ff' was called twice"):
        with smoothcache.enabled(diffusers_dit, {"ff": [1, 0, 1]}):
            diffusers_dit(x, timestep=torch.tensor([999, 999]), class_labels=labels)


@torch.no_grad()
def test_the_counted_work_of_a_generation(original_dit):
    """Aten ops of one generation: computing everything adds none to the model's own (with the
    step count given, no timestep is read), reading the timestep costs the same few ops per
    evaluation, and reuse removes exactly the skipped branches' ops (each branch dispatches the
    same ops at every step; the fast path's saved input preparation is counted apart, in
    test_groups)."""
    from smoothcache.testing.op_counts import OpCounter

    def ops(schedule=None, fast_path=True) -> int:
        torch.manual_seed(0)
        if schedule is None:
            with OpCounter() as counter:
                sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=2.0)
            return counter.ops
        with smoothcache.enabled(original_dit, schedule, fast_path=fast_path, calls_per_step=1):
            with OpCounter() as counter:
                sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=2.0)
        return counter.ops

    plain = ops()
    everything = {"attn": [1] * STEPS, "mlp": [1] * STEPS}
    assert ops(everything) == plain
    with smoothcache.enabled(original_dit, everything):  # the timestep is read: a host sync
        with OpCounter() as counter:
            sample_original_dit(original_dit, num_steps=STEPS, cfg_scale=2.0)
    assert (counter.ops - plain) % STEPS == 0 and 0 < (counter.ops - plain) // STEPS <= 3
    per_attn = (plain - ops({"mlp": [1] * STEPS, "attn": [1] + [0] * (STEPS - 1)}, False)) / (
        len(original_dit.blocks) * (STEPS - 1)
    )
    assert per_attn == int(per_attn) > 0  # the same ops skipped at every skipped step
    skipped = ROW.count(0) * len(original_dit.blocks)
    assert ops({"attn": ROW}, fast_path=False) == plain - skipped * per_attn
