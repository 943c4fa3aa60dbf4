"""Checks of caching itself: exactness, reuse skipping the branch, the fast path, restoring.

Each runs the author's sampling loop under a schedule and compares the output, the counts of
original forwards and the model's state with what the contract promises: computing everything
is bit-identical to no caching, reusing a branch skips its forward and changes the output, a
block fast path computes exactly what the plain wrappers do, and leaving a session (normally or
through an exception) restores the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothcache.engine.outputs import identical
from smoothcache.testing.harness import (
    Subject,
    alternating_row,
    as_failure,
    counting_calls,
    counting_pre_hooks,
    recording_warnings,
    relative_change,
    step_invariant,
)
from smoothcache.testing.results import ConformanceError
from smoothcache.testing.state import module_state


def exact(subject: Subject) -> None:
    """The ``exact`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "exact"
    base = subject.baseline(check)
    everything = {kind: [1] * subject.num_steps for kind in subject.kinds(check)}
    with recording_warnings(check), as_failure(check):
        with subject.enabled(everything) as session:
            out = subject.run(check)
    if session.stats.total_reused:
        raise ConformanceError(check, "a compute-everything schedule reused outputs")
    if not identical(out, base):
        raise ConformanceError(
            check,
            f"a schedule that computes everything changed the output (by "
            f"{relative_change(out, base):.3g} relative); caching must be exact when it "
            "skips nothing",
        )
    if not identical(subject.run(check), base):
        raise ConformanceError(check, "the output after leaving the session differs")


def branches_residual(subject: Subject) -> None:
    """The ``branches_residual`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "branches_residual"
    base = subject.baseline(check)
    pairs = subject.branches(check)
    _, source = subject.source(check)
    row = alternating_row(subject.num_steps)
    for kind in subject.kinds(check):
        chosen = [(b, m) for b, m in pairs if b.kind == kind]
        with (
            counting_calls([m for _, m in chosen]) as originals,
            counting_pre_hooks([source]) as fired,
        ):
            with as_failure(check), subject.enabled({kind: row}) as session:
                out = subject.run(check)
        stats = session.stats
        for (branch, _), calls in zip(chosen, originals):
            computed, reused = stats.computed[branch.path], stats.reused[branch.path]
            if reused == 0:
                fallbacks = stats.fallbacks[branch.path]
                raise ConformanceError(
                    check,
                    f"branch {branch.path!r} was never reused under {row} ({fallbacks} reuse "
                    "steps computed instead because its input shape changed)",
                )
            if calls != computed:
                raise ConformanceError(
                    check,
                    f"branch {branch.path!r}: its original forward ran {calls} times but "
                    f"{computed} calls should have computed; reuse must skip the branch",
                )
            if computed + reused != fired[0]:
                raise ConformanceError(
                    check,
                    f"branch {branch.path!r} answered {computed + reused} calls in "
                    f"{fired[0]} model evaluations",
                )
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
            members = [b.path for b, _ in chosen if b.leader is not None]
            raise ConformanceError(
                check,
                f"reusing kind {kind!r} made the output NaN or inf"
                + (
                    f": a group member ({', '.join(members)}) reaches the output other than "
                    "through its leader (members stand in with NaN at skipped steps)"
                    if members
                    else ""
                ),
            )
        change = relative_change(out, base)
        if change == 0 and step_invariant(subject, check, [m for _, m in chosen]):
            continue  # the branches see the same input at every step: reuse is exact
        if not change > subject.min_change:
            raise ConformanceError(
                check,
                f"reusing kind {kind!r} (branches {', '.join(b.path for b, _ in chosen)}) "
                f"changed the output by {change:.3g} relative, not more than "
                f"{subject.min_change:g}: the branch is not a residual branch, or its output "
                "layer or gate is zero (re-randomise zero-initialised weights in the factory)",
            )


def fast_path(subject: Subject) -> None:
    """The ``fast_path`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "fast_path"
    row = alternating_row(subject.num_steps)
    schedule = {kind: row for kind in subject.kinds(check)}
    outputs = []
    for fast in (True, False):
        with recording_warnings(check), as_failure(check):
            with subject.enabled(schedule, fast_path=fast) as session:
                outputs.append(subject.run(check))
        if not session.stats.total_reused:
            raise ConformanceError(check, f"nothing was reused with fast_path={fast}")
    if not identical(*outputs):
        raise ConformanceError(
            check,
            f"under reuse the fast path's output differs from the plain wrappers' by "
            f"{relative_change(*outputs):.3g} relative; a block fast path must compute exactly "
            "what the block's own forward does",
        )


class _Interrupted(Exception):
    """Raised by the restore check in the middle of a model evaluation."""


def restore(subject: Subject) -> None:
    """The ``restore`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "restore"
    pairs = subject.branches(check)
    row = alternating_row(subject.num_steps)
    schedule = {kind: row for kind in subject.kinds(check)}
    subject.baseline(check)  # a model may create state lazily on its first call: not ours
    before = module_state(subject.root)
    with as_failure(check), subject.enabled(schedule):
        subject.run(check)
    subject.assert_restored(check, before, "after a session")

    calls = [0]

    def interrupt(_module: nn.Module, _args: Any, _output: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise _Interrupted

    # The hook goes on before the snapshot: it is the test's, not smoothcache's, to remove.
    handle = pairs[-1][1].register_forward_hook(interrupt)
    try:
        before = module_state(subject.root)
        try:
            with as_failure(check), subject.enabled(schedule):
                subject.run(check)
        except _Interrupted:
            pass
        else:
            raise ConformanceError(check, f"branch {pairs[-1][0].path!r} ran only once")
        subject.assert_restored(check, before, "after an exception inside a session")
    finally:
        handle.remove()
    with as_failure(check), subject.enabled(schedule):
        pass  # enabling again works: the interrupted session released the model
