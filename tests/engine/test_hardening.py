"""Hardening (issue #14): no silent stale output, no stuck session, no foreign exception.

Each test reproduces one numbered item of the issue and fails without its fix.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import smoothcache
from smoothcache import patching
from smoothcache.adapters.dit import OriginalDiTAdapter, _modulate
from smoothcache.engine import reused_output
from smoothcache.errors import (
    AdapterError,
    AlreadyEnabledError,
    ArgumentError,
    ScheduleError,
    ScheduleFileError,
    StepCountError,
)
from smoothcache.testing.models.original_dit import ddim_timesteps, sample_original_dit
from smoothcache.testing.models.tiny_diffusers import dit_pipeline_latents, tiny_dit_pipeline
from tests.conftest import assert_same_state, count_original_calls, module_state

STEPS = 8
ROW = [1, 0, 1, 1, 1, 1, 0, 1]  # step 6 reuses
ATTN0 = "blocks.0.attn"


@torch.no_grad()
def _loop(model, steps, *, guided=range(10**6), fail_at=None, batch=2, seed=0):
    """DDIM over ``ddim_timesteps(len(steps))`` with guidance as a second call at the steps in
    ``guided``; raises ValueError after the model calls of step ``fail_at``."""
    gen = torch.Generator().manual_seed(seed)
    side = int(model.x_embedder.num_patches**0.5) * model.patch_size
    x = torch.randn(batch, model.in_channels, side, side, generator=gen)
    y = torch.arange(batch) % model.y_embedder.num_classes
    null = torch.full_like(y, model.y_embedder.num_classes)
    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    for i, t in enumerate(steps):
        tt = torch.full((batch,), t, dtype=torch.long)
        eps = model(x, tt, y)[:, : model.in_channels]
        if i in guided:
            uncond = model(x, tt, null)[:, : model.in_channels]
            eps = uncond + 3.0 * (eps - uncond)
        if i == fail_at:
            raise ValueError("the user's own error")
        a_t = alphas[t].float()
        a_prev = alphas[steps[i + 1]].float() if i + 1 < len(steps) else torch.tensor(1.0)
        x = a_prev.sqrt() * (x - (1 - a_t).sqrt() * eps) / a_t.sqrt() + (1 - a_prev).sqrt() * eps
    return x


# -- 1. a key with a trailing newline -------------------------------------------------------------


def test_a_key_with_a_trailing_newline_is_refused(original_dit):
    before = module_state(original_dit)
    with pytest.raises(ScheduleError, match="attn"):
        smoothcache.enable(original_dit, {"attn\n": ROW})
    assert_same_state(before, module_state(original_dit))


@pytest.mark.parametrize(
    "key",
    [
        "attn-\u0661",  # Arabic-Indic one, through the diffusers-dit alias attn -> attn1
        "attn1-\u0661",
        "attn1-\uff11",  # fullwidth one
        "attn1-01",  # block 1 written another way
        "attn\u0131",  # a dotless i: not an ASCII letter
    ],
)
def test_keys_are_ascii_with_one_spelling_per_block(diffusers_dit, key):
    """Issue #24, item 3: one grammar for every key, with or without an alias; the error quotes
    the key as written."""
    before = module_state(diffusers_dit)
    with pytest.raises(ScheduleError) as caught:
        smoothcache.enable(diffusers_dit, {key: [1, 0, 1]})
    assert repr(key) in str(caught.value) and "ASCII" in str(caught.value)
    assert_same_state(before, module_state(diffusers_dit))


@pytest.mark.parametrize("key", ["mlp-5", "mlp", "attn-2"])
def test_an_error_quotes_the_key_as_written_not_as_the_alias_reads_it(diffusers_dit, key):
    """``mlp`` is read as ``ff`` and ``attn`` as ``attn1`` on a diffusers DiT: a key that still
    matches nothing is named as the user wrote it. (``mlp`` alone does match: the kind exists.)"""
    if key == "mlp":
        with smoothcache.enabled(diffusers_dit, {key: [1, 0, 1]}) as session:
            assert set(session.schedule.rows) == {"ff"}
        return
    with pytest.raises(ScheduleError) as caught:
        smoothcache.enable(diffusers_dit, {key: [1, 0, 1]})
    message = str(caught.value)
    assert message.startswith(f"schedule key {key!r} matches no branch"), message
    assert "'ff-5'" not in message and "'attn1-2'" not in message


# -- 2. guidance at some steps only ---------------------------------------------------------------


def test_a_pass_that_resumes_computes_instead_of_reusing_a_stale_output(original_dit):
    guided = {0, 1, 2, 6, 7}  # the second call pauses at steps 3-5 and resumes at step 6
    row = [1, 0, 1, 0, 1, 1, 0, 1]  # step 2 stores for step 3; step 6 reuses step 5's output
    steps = ddim_timesteps(STEPS)
    with count_original_calls(original_dit, [ATTN0]) as calls:
        with smoothcache.enabled(original_dit, {"attn": row}) as session:
            _loop(original_dit, steps, guided=guided)
    # pass 0 computes at the 5 computed steps; pass 1 at 0, 2, 7 and, at step 6, computes
    # instead of reusing the output it stored at step 2 (it never ran step 5)
    assert calls[ATTN0] == sum(row) + 4
    assert session.stats.fallbacks[ATTN0] == 1


# -- 3. calls per step are bounded ----------------------------------------------------------------


def test_repeated_calls_at_one_timestep_are_bounded(original_dit):
    x = torch.randn(2, 4, 8, 8)
    t, y = torch.full((2,), 999), torch.tensor([0, 1])
    with pytest.raises(StepCountError, match="9 model calls"):
        with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
            for _ in range(200):
                original_dit(x, t, y)
    assert len(session._store.values) <= 8  # the cache never grew past the bound


def test_calls_per_step_are_bounded_at_every_step_and_may_grow_after_step_0(original_dit):
    steps = ddim_timesteps(STEPS)
    # guidance as a second call from step 2 on (as skip-layer guidance adds a call after the
    # first steps): the new pass computes until it has stored outputs, then reuses
    with count_original_calls(original_dit, [ATTN0]) as calls:
        with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
            _loop(original_dit, steps, guided=range(2, STEPS))
    assert session.stats.passes == 2
    # pass 0 reuses at steps 1 and 6; pass 1 (steps 2-7) computes at 2-5 and 7, reuses at 6
    assert session.stats.reused[ATTN0] == 3
    assert calls[ATTN0] == sum(ROW) + 5
    with pytest.raises(StepCountError, match="max_calls_per_step=1"):
        with smoothcache.enabled(original_dit, {"attn": ROW}, max_calls_per_step=1):
            _loop(original_dit, steps, guided=range(2, STEPS))


# -- 4. runs whose timesteps continue each other --------------------------------------------------


def _halving_pipeline():
    """A DiT pipeline whose scheduler gives each 5-step run one half of the 10-step DDIM
    timesteps: ``pipe.scheduler.half`` ("first" or "second") says which."""
    from diffusers import DDIMScheduler

    class HalvingDDIM(DDIMScheduler):
        half = "first"

        def set_timesteps(self, num_inference_steps, *args, **kwargs):
            super().set_timesteps(2 * num_inference_steps, *args, **kwargs)
            cut = slice(None, num_inference_steps) if self.half == "first" else slice(5, None)
            self.timesteps = self.timesteps[cut].clone()

    pipe = tiny_dit_pipeline(seed=0)
    pipe.scheduler = HalvingDDIM.from_config(pipe.scheduler.config)
    return pipe


def test_two_pipeline_runs_that_continue_each_other_are_two_runs():
    pipe = _halving_pipeline()
    call = {"class_labels": [1], "num_inference_steps": 5, "guidance_scale": 1.0}
    with smoothcache.enabled(pipe, {"attn1": [1, 0] * 5}) as session:
        dit_pipeline_latents(pipe, **call)
        pipe.scheduler.half = "second"
        with pytest.raises(StepCountError, match="stopped after 5 steps"):
            dit_pipeline_latents(pipe, **call)
    assert session.stats.steps == 5
    with smoothcache.calibrating(pipe, lookahead=2) as recorder:
        for half in ("first", "second"):
            pipe.scheduler.half = half
            dit_pipeline_latents(pipe, **call)
        with pytest.warns(UserWarning, match="other timesteps"):  # each half is its own run
            curves = recorder.curves()
    assert curves.num_steps == 5 and curves.metadata["runs"] == 2


# -- 5. an exception inside a model call ----------------------------------------------------------


def test_an_exception_before_any_branch_does_not_poison_the_session(original_dit):
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 999)
    steps = ddim_timesteps(STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW}) as clean:
        expected = _loop(original_dit, steps)
    with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
        with pytest.raises(IndexError):  # a class label out of range, after the timestep source
            original_dit(x, t, torch.tensor([0, 10**6]))
        out = _loop(original_dit, steps)
    assert torch.equal(out, expected)
    assert session.stats.reused == clean.stats.reused
    assert clean.stats.reused[ATTN0] == 2 * ROW.count(0)  # both runs did reuse
    with smoothcache.calibrating(original_dit) as recorder:
        with pytest.raises(IndexError):
            original_dit(x, t, torch.tensor([0, 10**6]))
        _loop(original_dit, steps)
    assert recorder.curves().metadata["runs"] == 1


def test_an_exception_mid_run_drops_that_run(original_dit):
    steps = ddim_timesteps(STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        expected = _loop(original_dit, steps)
    module = original_dit.get_submodule(ATTN0)
    calls = [0]

    def fail_once(_module, _args, _output):
        calls[0] += 1
        if calls[0] == 9:  # step 4 of 8, first call
            raise RuntimeError("out of memory (simulated)")

    handle = module.register_forward_hook(fail_once)
    try:
        with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
            with pytest.raises(RuntimeError, match="simulated"):
                _loop(original_dit, steps)
            out = _loop(original_dit, steps)  # a new run, not "fewer steps than the schedule"
    finally:
        handle.remove()
    assert torch.equal(out, expected)
    assert session.stats.generations == 2
    assert session.stats.reused[ATTN0] > 0 and not torch.equal(out, _loop(original_dit, steps))


def test_direct_forward_failure_is_cleared_by_reset(original_dit):
    """forward_with_cfg calls self.forward: the root's hooks do not fire, so a failure before
    any branch looks like double firing; the error says to reset, and reset() clears it."""
    x, t = torch.randn(4, 4, 8, 8), torch.full((4,), 999)
    with smoothcache.enabled(original_dit, {"attn": [1] * 10}) as session:
        with pytest.raises(IndexError):
            original_dit.forward_with_cfg(x, t, torch.tensor([0, 1, 10**6, 3]), 4.0)
        with pytest.raises(AdapterError, match=r"session\.reset"):
            original_dit.forward_with_cfg(x, t, torch.tensor([0, 1, 2, 3]), 4.0)
        session.reset()
        sample_original_dit(original_dit, num_steps=10, cfg_scale=4.0)
    assert session.stats.generations == 2  # the failed call's, and the full run


# -- 6. the fast path's check does not swallow exceptions -----------------------------------------


def test_an_exception_at_the_fast_path_check_propagates(original_dit, recwarn):
    """A one-off exception in a branch at step 0, where the fast path is checked, reaches the
    caller; the fast path is not blamed (no warning, still on for the next run)."""
    module = original_dit.get_submodule(ATTN0)
    original = module.forward
    raised = [True]  # armed below

    def flaky(*args, **kwargs):
        if not raised[0]:
            raised[0] = True
            raise RuntimeError("transient")
        return original(*args, **kwargs)

    module.forward = flaky
    steps = ddim_timesteps(STEPS)
    try:
        with smoothcache.enabled(original_dit, {"attn": ROW}, fast_path=False):
            expected = _loop(original_dit, steps)
        raised[0] = False
        with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
            with pytest.raises(RuntimeError, match="transient"):
                _loop(original_dit, steps)
            out = _loop(original_dit, steps)
            fast = original_dit.blocks[0].__dict__["_sc_fast"]
    finally:
        del module.forward
    assert torch.equal(out, expected)
    assert fast is not smoothcache.engine.fastpath.own_forward
    assert not [w for w in recwarn if "fast path" in str(w.message)]
    assert session.stats.reused[ATTN0] == 2 * ROW.count(0)


# -- 7. reset() after the end ---------------------------------------------------------------------


def test_reset_after_the_session_ended_leaves_nothing(original_dit):
    before = module_state(original_dit)
    with smoothcache.enabled(original_dit, {"attn": ROW}) as session:
        _loop(original_dit, ddim_timesteps(STEPS))
    session.reset()
    assert_same_state(before, module_state(original_dit))


# -- 8. an interrupt inside disable() -------------------------------------------------------------


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt during the test, as in an interactive Python: a process
    that a non-interactive shell starts in the background inherits SIGINT ignored, and then
    neither Python nor smoothcache has a handler to hold back."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_after(lines: int):
    """A trace function raising KeyboardInterrupt at the ``lines``-th line run in smoothcache."""
    seen = [0]
    root = str(Path(smoothcache.__file__).parent)

    def trace(frame, event, _arg):
        if not frame.f_code.co_filename.startswith(root):
            return None
        if event == "line":
            seen[0] += 1
            if seen[0] == lines:
                raise KeyboardInterrupt
        return trace

    return trace


def test_an_interrupt_anywhere_in_disable_is_finished_by_a_second_disable(original_dit, ctrl_c):
    before = module_state(original_dit)
    handler = signal.getsignal(signal.SIGINT)
    steps = ddim_timesteps(4)
    lines, interrupted = 1, 0
    while True:
        session = smoothcache.enable(original_dit, {"attn": [1, 0, 1, 1]})
        _loop(original_dit, steps)
        sys.settrace(_interrupt_after(lines))
        try:
            session.disable()
        except KeyboardInterrupt:
            interrupted += 1
        else:
            break
        finally:
            sys.settrace(None)
        session.disable()
        assert_same_state(before, module_state(original_dit))
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C interrupts again, and leaves the
            signal.raise_signal(signal.SIGINT)  # handler the user had
        assert signal.getsignal(signal.SIGINT) is handler
        lines += 7  # a stride keeps the test short; every part of disable() is still hit
    assert interrupted > 20
    assert_same_state(before, module_state(original_dit))


def _at_undo_step(number: int, action):
    """A trace function that runs ``action(frame)`` as the ``number``-th undo step of
    :meth:`Patches._undo_all` is called (1-based; 0 only counts); ``action`` returns the step's
    local trace function or ``None``. ``counted[0]`` holds the steps seen."""
    counted = [0]
    undo = patching.Patches._undo_all.__code__

    def trace(frame, event, _arg):
        if event == "call" and frame.f_back is not None and frame.f_back.f_code is undo:
            counted[0] += 1
            if counted[0] == number:
                return action(frame)
        return None

    return trace, counted


def _raise_at(when: str):
    """A local trace function raising KeyboardInterrupt at the step's first line, or as it
    returns (the step done, not yet forgotten)."""

    def local(_frame, event, _arg):
        if event == when:
            raise KeyboardInterrupt
        return local

    return lambda _frame: local


def _send_sigint(_frame):
    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, delivered inside the step


def _undo_steps(model) -> int:
    trace, counted = _at_undo_step(0, lambda _frame: None)
    with smoothcache.enabled(model, {"attn": [1, 0, 1, 1]}):
        _loop(model, ddim_timesteps(4))
        sys.settrace(trace)
    sys.settrace(None)
    return counted[0]


@pytest.mark.parametrize("interrupt", ["line", "return", "sigint"])
def test_an_interrupt_at_any_step_of_the_restore_propagates_after_it(
    original_dit, interrupt, ctrl_c
):
    """Issue #24, item 1: leaving the ``with`` block is enough. An interrupt at any undo step
    (inside it, or after it and before it is forgotten, or a real SIGINT) reaches the caller
    only once every module is restored and the session has ended."""
    before = module_state(original_dit)
    total = _undo_steps(original_dit)
    assert total > 20  # hooks, forwards and the attributes of every branch module
    action = _send_sigint if interrupt == "sigint" else _raise_at(interrupt)
    for number in range(1, total + 1):
        trace, counted = _at_undo_step(number, action)
        session = None
        try:
            with pytest.raises(KeyboardInterrupt):
                with smoothcache.enabled(original_dit, {"attn": [1, 0, 1, 1]}) as session:
                    _loop(original_dit, ddim_timesteps(4))
                    sys.settrace(trace)
        finally:
            sys.settrace(None)
        assert counted[0] >= number, "the interrupt was never delivered"
        assert session is not None and not session.active, number
        assert_same_state(before, module_state(original_dit))
    with smoothcache.enabled(original_dit, {"attn": [1, 0, 1, 1]}):  # usable again
        _loop(original_dit, ddim_timesteps(4))


def test_a_restore_step_that_keeps_failing_is_left_for_a_second_disable(original_dit):
    """An undo step that raises every time (not an interrupt) does not stop the others; the
    session stays active so that ``disable()`` can retry it, and the error is raised."""
    before = module_state(original_dit)
    session = smoothcache.enable(original_dit, {"attn": [1, 0, 1, 1]})
    _loop(original_dit, ddim_timesteps(4))
    undo = session._patches._undo
    broken = undo[len(undo) // 2]
    calls = []

    def failing():
        calls.append(1)
        raise OSError("a step that cannot run")

    undo[len(undo) // 2] = failing
    with pytest.raises(OSError, match="cannot run"):
        session.disable()
    assert len(calls) == 2 and session.active  # tried again once, then left
    assert module_state(original_dit) != before
    with pytest.raises(OSError, match="cannot run"):
        session.disable()  # retried: it still fails
    assert len(calls) == 4 and session.active
    session._patches._left[0] = broken  # whatever made it fail has gone
    session.disable()
    assert not session.active
    assert_same_state(before, module_state(original_dit))


# -- 9. deepcopy inside a session -----------------------------------------------------------------


def test_deepcopy_inside_a_session_gives_a_clean_model(original_dit):
    pristine = module_state(copy.deepcopy(original_dit))
    steps = ddim_timesteps(STEPS)
    expected_plain = _loop(original_dit, steps)
    with smoothcache.enabled(original_dit, {"attn": ROW}):
        cached = _loop(original_dit, steps)
        assert not torch.equal(cached, expected_plain)  # the session does cache
        clone = copy.deepcopy(original_dit)
        assert_same_state(pristine, module_state(clone))
        assert torch.equal(_loop(clone, steps), expected_plain)  # the clone does not cache
        assert torch.equal(_loop(original_dit, steps), cached)  # the original still does
    assert torch.equal(_loop(clone, steps), expected_plain)  # and after the session
    with smoothcache.enabled(clone, {"attn": ROW}):
        assert torch.equal(_loop(clone, steps), cached)


def test_deepcopy_of_a_pipeline_inside_a_session_is_clean():
    pipe = tiny_dit_pipeline(seed=0)
    call = {"class_labels": [1], "num_inference_steps": 4, "guidance_scale": 1.0}
    with smoothcache.enabled(pipe, {"attn1": [1, 0, 1, 1]}):
        clone = copy.deepcopy(pipe)
    assert "set_timesteps" not in clone.scheduler.__dict__
    assert "__deepcopy__" not in clone.scheduler.__dict__
    assert not any(k.startswith("_sc_") for m in clone.transformer.modules() for k in vars(m))
    with smoothcache.enabled(clone, {"attn1": [1, 0, 1, 1]}) as session:
        dit_pipeline_latents(clone, **call)
    assert session.stats.total_reused > 0


# -- 10. two threads enabling at once -------------------------------------------------------------


class _SlowHeld(dict):
    """A held-modules table that is slow to mark a module: between one thread's check and its
    marks, the other thread has all the time it needs to check too."""

    def __setitem__(self, key, value):
        time.sleep(0.02)
        super().__setitem__(key, value)


def test_enabling_is_atomic_per_model(original_dit, monkeypatch):
    monkeypatch.setattr(patching, "_HELD", _SlowHeld())
    before = module_state(original_dit)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def enable():
        barrier.wait()
        try:
            results.append(smoothcache.enable(original_dit, {"attn": ROW}))
        except AlreadyEnabledError as exc:
            results.append(exc)

    threads = [threading.Thread(target=enable) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sessions = [r for r in results if isinstance(r, smoothcache.Session)]
    assert len(sessions) == 1 and len(results) == 2
    sessions[0].disable()
    assert_same_state(before, module_state(original_dit))


# -- 13. bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calls_per_step": 0},
        {"calls_per_step": -1},
        {"calls_per_step": 1.5},
        {"calls_per_step": "2"},
        {"calls_per_step": True},
        {"max_calls_per_step": 0},
        {"fast_path": "yes"},
        {"adapter": 123},
    ],
)
def test_bad_arguments_are_argument_errors(original_dit, kwargs):
    before = module_state(original_dit)
    with pytest.raises(ArgumentError, match="found"):
        smoothcache.enable(original_dit, {"attn": ROW}, **kwargs)
    assert_same_state(before, module_state(original_dit))


@pytest.mark.parametrize("path", ["a\0b.json", "a\udcffb.json", "\0"])
def test_unusable_paths_are_schedule_errors(original_dit, path):
    before = module_state(original_dit)
    with pytest.raises(ScheduleFileError if path.endswith(".json") else ScheduleError):
        smoothcache.enable(original_dit, path)
    assert_same_state(before, module_state(original_dit))


# -- 15. the user's exception wins over the step count --------------------------------------------


def test_disable_in_finally_lets_the_users_exception_win(original_dit):
    before = module_state(original_dit)
    session = smoothcache.enable(original_dit, {"attn": ROW})
    with pytest.raises(ValueError, match="the user's own error") as info:
        try:
            _loop(original_dit, ddim_timesteps(STEPS), fail_at=3)
        finally:
            session.disable()
    assert_same_state(before, module_state(original_dit))
    if sys.version_info >= (3, 11):
        assert any("fewer steps" in note for note in info.value.__notes__)
    with pytest.raises(StepCountError):  # without an exception in flight it is still an error
        with smoothcache.enabled(original_dit, {"attn": ROW}):
            _loop(original_dit, ddim_timesteps(STEPS)[:4])


# -- 12. hostile schedule and curves files --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than"),
        ('{"attn": [1, ' + "9" * 5000 + "]}", "digits"),
        ('{"format": "smoothcache.schedule", "version": 2, "schedule": {"attn": [1, 0]}, '
         '"metadata": [1]}', "metadata must be a JSON object"),
        ('{"format": "smoothcache.schedule", "version": 2, "num_steps": ' + "9" * 5000 +
         ', "schedule": {"attn": [1, 0]}}', "digits"),
    ],
)  # fmt: skip
def test_hostile_schedule_files_are_schedule_file_errors(tmp_path, text, message):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(ScheduleFileError, match=message):
        smoothcache.Schedule.load(path)


@pytest.fixture(scope="module")
def curves_tensors(curves_file):
    """The header and tensors of a real curves file (reuse and forecast errors)."""
    from safetensors import safe_open

    with safe_open(str(curves_file), framework="pt") as handle:
        return dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}


def _damaged(tensors, name, change):
    out = dict(tensors)
    out[name] = change(tensors[name].clone())
    return out


def _set_first_counted(value):
    def change(tensor):
        flat = tensor.flatten()
        flat[0 if not torch.isnan(flat[0]) else int(torch.nonzero(~torch.isnan(flat))[0])] = value
        return flat.reshape(tensor.shape)

    return change


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("mean", lambda t: t.half(), "dtype torch.float16"),
        ("mean", lambda t: t.to(torch.int64), "dtype torch.int64"),
        ("std", lambda t: t.bool(), "dtype torch.bool"),
        ("count", lambda t: t.double() + 0.5, "dtype torch.float64"),
        ("forecast_mean", lambda t: t.float(), "dtype torch.float32"),
        ("mean", _set_first_counted(-1.0), "negative, NaN or inf"),
        ("std", _set_first_counted(float("nan")), "negative, NaN or inf"),
        ("count", lambda t: t - 100, "negative count"),
        ("forecast_worst", _set_first_counted(float("inf")), "negative, NaN or inf"),
        ("forecast_count", lambda t: -t, "negative count"),
    ],
)
def test_corrupt_curves_tensors_are_curves_file_errors(tmp_path, curves_tensors, name, change,
                                                       message):  # fmt: skip
    from safetensors.torch import save_file

    header, tensors = curves_tensors
    path = tmp_path / "c.safetensors"
    save_file(_damaged(tensors, name, change), str(path), metadata=header)
    with pytest.raises(smoothcache.CurvesFileError, match=message):
        smoothcache.ErrorCurves.load(path)


def test_complex_counts_are_refused():
    import numpy as np

    shape = (1, 1, 1, 2)
    with pytest.raises(smoothcache.CalibrationError, match="whole numbers"):
        smoothcache.ErrorCurves(
            [smoothcache.Branch("a", "attn", 0)],
            np.zeros(shape),
            np.zeros(shape),
            np.ones(shape, dtype=np.complex128),
        )


# -- 19. a fast path that passes a wrong input_shape ----------------------------------------------


def _wrong_shape_forward(block, x, c):
    """The DiT block forward, but it asks reused_output with the shape of c, not of the input."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(
        c
    ).chunk(6, dim=1)
    out = reused_output(block.attn, c.shape)
    if out is None:
        out = block.attn(_modulate(block.norm1(x), shift_msa, scale_msa))
    x = x + gate_msa.unsqueeze(1) * out
    out = block.mlp(_modulate(block.norm2(x), shift_mlp, scale_mlp))
    return x + gate_mlp.unsqueeze(1) * out


class _WrongShapeAdapter(OriginalDiTAdapter):
    name = "wrong-input-shape"

    def fast_forwards(self, model):
        return {f"blocks.{i}": _wrong_shape_forward for i in range(len(model.blocks))}


def test_a_fast_path_with_a_wrong_input_shape_is_caught(original_dit):
    steps = ddim_timesteps(STEPS)
    with smoothcache.enabled(original_dit, {"attn": ROW}, fast_path=False):
        expected = _loop(original_dit, steps)
    with pytest.warns(RuntimeWarning, match=r"input_shape \(2, 64\) given to reused_output"):
        with smoothcache.enabled(original_dit, {"attn": ROW}, adapter=_WrongShapeAdapter()) as s:
            got = _loop(original_dit, steps)
    assert torch.equal(got, expected)
    assert s.stats.reused[ATTN0] == 2 * ROW.count(0)
