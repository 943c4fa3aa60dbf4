"""Checks of what an adapter declares, before anything is cached: detection, branches, source.

These hold the adapter's static answers against the real model: that detection picks it, that
its branches are distinct, non-nested modules with valid schedule keys, and that its timestep
source fires exactly once per model evaluation (the engine's step clock counts on it).
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import Branch
from smoothcache.errors import SmoothCacheError
from smoothcache.registry import REGISTRY
from smoothcache.schedule import parse_key
from smoothcache.testing.harness import Subject, as_failure, counting_pre_hooks
from smoothcache.testing.results import ConformanceError


def detection(subject: Subject) -> None:
    """The ``detection`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "detection"
    adapter = subject.adapter
    if not adapter.matches(subject.root):
        raise ConformanceError(
            check, f"adapter {subject.name!r} does not match the factory's model"
        )
    try:
        foreign = adapter.matches(nn.Sequential(nn.Linear(2, 2)))
    except Exception as exc:
        raise ConformanceError(
            check,
            f"matches() raised {exc!r} on an unrelated nn.Sequential; it must return False for "
            "models of other families",
        ) from exc
    if foreign:
        raise ConformanceError(
            check,
            "matches() accepts an unrelated nn.Sequential; check the model's class "
            "(model_classes) and structure",
        )
    others = [a for a in REGISTRY.adapters() if a.name != adapter.name]
    ranked = REGISTRY.matching(subject.obj, [*others, adapter])
    if ranked[0].adapter is not adapter or (len(ranked) > 1 and ranked[1].rank == ranked[0].rank):
        ours = next(m for m in ranked if m.adapter is adapter)
        rivals = [m for m in ranked if m.rank <= ours.rank and m.adapter is not adapter]
        raise ConformanceError(
            check,
            f"smoothcache.detect would not pick {ours.describe()} for this model: "
            f"{', '.join(m.describe() for m in rivals)} ranks as high or higher. Name the "
            "model's own class in model_classes or raise priority (see docs/adapters.md)",
        )


def branches_exist(subject: Subject) -> None:
    """The ``branches_exist`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "branches_exist"
    pairs = subject.branches(check)
    declared = set(getattr(subject.adapter, "kinds", ()))
    keys: dict[str, str] = {}
    modules: dict[int, str] = {}
    for branch, module in pairs:
        if not isinstance(branch, Branch):
            raise ConformanceError(check, f"branches() returned {branch!r}, not a Branch")
        where = f"branch {branch.path!r}"
        if not branch.path:
            raise ConformanceError(check, f"{where}: the root module cannot be a branch")
        if isinstance(branch.block, bool) or not isinstance(branch.block, int) or branch.block < 0:
            raise ConformanceError(
                check, f"{where}: block must be an int >= 0, found {branch.block!r}"
            )
        try:
            kind, block = parse_key(branch.kind)
        except SmoothCacheError:
            kind, block = "", None
        if kind != branch.kind or block is not None:
            raise ConformanceError(
                check,
                f"{where}: kind {branch.kind!r} is not a valid schedule key (letters, digits, "
                "'_' and '.', not ending in '-<number>')",
            )
        if declared and branch.kind not in declared:
            raise ConformanceError(
                check,
                f"{where}: kind {branch.kind!r} is not among the adapter's kinds "
                f"{sorted(declared)}; list it in `kinds`",
            )
        if branch.leader is None:  # group members share their leader's key
            if branch.key in keys:
                raise ConformanceError(
                    check,
                    f"{where} and {keys[branch.key]!r} share the schedule key {branch.key!r}; "
                    "give blocks of one kind distinct indices",
                )
            keys[branch.key] = branch.path
        if id(module) in modules:
            raise ConformanceError(
                check, f"{where} is the same module as branch {modules[id(module)]!r}"
            )
        modules[id(module)] = branch.path
    paths = {b.path for b, _ in pairs}
    for path in paths:
        parts = path.split(".")
        outer = next((p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in paths), None)
        if outer is not None:
            raise ConformanceError(
                check,
                f"branch {path!r} lies inside branch {outer!r}; branches must not nest "
                "(reusing the outer one skips the inner one, whose cache then goes stale)",
            )
    subject.source(check)


def timestep_source_once(subject: Subject) -> None:
    """The ``timestep_source_once`` check (its summary: :mod:`smoothcache.testing.table`)."""
    check = "timestep_source_once"
    pairs = subject.branches(check)
    source_path, source = subject.source(check)
    everything = {kind: [1] * subject.num_steps for kind in subject.kinds(check)}
    with counting_pre_hooks([source]) as fired, counting_pre_hooks([m for _, m in pairs]) as ran:
        # Without the fast path: its one-time self-check at step 0 calls each branch twice.
        with as_failure(check), subject.enabled(everything, fast_path=False) as session:
            subject.run(check)
    source_name = source_path or "<root>"
    evaluations = fired[0]
    if evaluations == 0:
        raise ConformanceError(
            check,
            f"the timestep source {source_name!r} never fired: the caller bypasses its "
            "__call__ (e.g. calls model.forward directly); name a module that is called through "
            "__call__ once per evaluation",
        )
    for (branch, _), calls in zip(pairs, ran):
        if calls == evaluations:
            continue
        hint = (
            "the source fires more than once per evaluation (a timestep embedder called again, "
            "e.g. by the output head?)"
            if evaluations > calls
            else "the branch runs more than once per evaluation (chunked feed-forward?), or the "
            "source is skipped on some calls"
        )
        raise ConformanceError(
            check,
            f"branch {branch.path!r} ran {calls} times while the timestep source "
            f"{source_name!r} fired {evaluations} times: {hint}",
        )
    stats = session.stats
    if stats.steps != subject.num_steps or stats.generations != 1:
        raise ConformanceError(
            check,
            f"the run made {stats.steps} steps in {stats.generations} generation(s); expected "
            f"one generation of num_steps={subject.num_steps}",
        )
