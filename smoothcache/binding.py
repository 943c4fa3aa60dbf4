"""Binding a schedule to a model: the adapter, the branches, the keys, the timestep source.

Everything here reads the model and the adapter and checks them; nothing changes the model
until :meth:`Bound.attach`, which does it through :class:`~smoothcache.patching.Patches`.
The engine's :class:`~smoothcache.engine.Session` and calibration's
:class:`~smoothcache.calibration.Recorder` both start here, so a model is resolved, its branches
listed and a schedule's keys checked the same way whether a schedule is applied or measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource
from smoothcache.clock import StepClock
from smoothcache.errors import AdapterError, ArgumentError, ScheduleError
from smoothcache.patching import Patches
from smoothcache.registry import REGISTRY, call_adapter
from smoothcache.schedule import Schedule, parse_key
from smoothcache.watch import EvaluationWatch, watch_runs

_ADAPTER_METHODS = ("name", "root", "matches", "branches", "timestep_source")


def resolve(model: Any, adapter: str | Adapter | None) -> tuple[nn.Module, Adapter]:
    """The adapter for ``model`` (forced by name or instance, else detected) and its root module."""
    if adapter is None:
        chosen = REGISTRY.detect(model)
    elif isinstance(adapter, str):
        chosen = REGISTRY.get(adapter)
    elif isinstance(adapter, Adapter) or all(hasattr(adapter, a) for a in _ADAPTER_METHODS):
        chosen = adapter
    else:
        raise ArgumentError(
            f"adapter must be an adapter's name (str), an Adapter or None (detect), found "
            f"{adapter!r} ({type(adapter).__name__}); smoothcache adapters lists the names"
        )
    root = call_adapter(chosen, "root", model)
    if root is None:
        raise AdapterError(
            f"adapter {chosen.name!r} found no denoiser module in a {type(model).__name__}; pass "
            "the transformer module itself or a pipeline that holds it as `.transformer`"
        )
    if adapter is not None and not call_adapter(chosen, "matches", root):
        raise AdapterError(
            f"adapter {chosen.name!r} does not recognise a {type(root).__qualname__}; "
            f"smoothcache.detect(model) says which adapter fits, if any"
        )
    return root, chosen


def model_branches(root: nn.Module, adapter: Adapter) -> list[tuple[Branch, nn.Module]]:
    """The adapter's branches of ``root`` with their modules, checked against the model."""
    found = []
    seen: set[str] = set()
    for branch in call_adapter(adapter, "branches", root):
        if branch.path in seen:
            raise AdapterError(f"adapter {adapter.name!r} declares branch {branch.path!r} twice")
        seen.add(branch.path)
        try:
            module = root.get_submodule(branch.path)
        except AttributeError:
            raise AdapterError(
                f"adapter {adapter.name!r} declares branch {branch.path!r}, which a "
                f"{type(root).__name__} does not have; the adapter does not fit this model"
            ) from None
        found.append((branch, module))
    leaders = {b.path: b for b, _ in found if b.leader is None}
    for branch, _ in found:
        leader = leaders.get(branch.leader) if branch.leader is not None else branch
        if leader is None or (leader.kind, leader.block) != (branch.kind, branch.block):
            raise AdapterError(
                f"adapter {adapter.name!r} declares branch {branch.path!r} a member of the group "
                f"led by {branch.leader!r}, which is not a declared branch of the same kind and "
                "block (a leader is itself no member)"
            )
    if not found:
        raise AdapterError(f"adapter {adapter.name!r} declares no branches for this model")
    return found


def model_kind_names(
    schedule: Schedule, adapter: Adapter, branches: list[Branch]
) -> dict[str, str]:
    """The kinds of ``schedule``'s keys that the model lacks but the adapter lists in
    ``kind_aliases``, each mapped to the model's kind (a schedule made with another adapter of
    the same network)."""
    kinds = {b.kind for b in branches}
    aliases = getattr(adapter, "kind_aliases", {}) or {}
    return {
        kind: aliases[kind]
        for kind in {parse_key(key)[0] for key in schedule.rows}
        if kind not in kinds and aliases.get(kind) in kinds
    }


def check_keys(
    schedule: Schedule,
    branches: list[Branch],
    adapter: Adapter | None = None,
    rename: Mapping[str, str] | None = None,
) -> None:
    """Every schedule key must name a branch kind of the model, or a kind and an existing block.

    ``rename`` maps kinds of the keys to the model's kinds (:func:`model_kind_names`); an error
    quotes the key as the schedule wrote it.
    """
    kinds = {b.kind for b in branches}
    keys = {b.key for b in branches}
    rename = rename or {}
    aliases = dict(getattr(adapter, "kind_aliases", {}) or {})
    for written in schedule.rows:
        written_kind, block = parse_key(written)
        kind = rename.get(written_kind, written_kind)
        if (block is None and kind in kinds) or f"{kind}-{block}" in keys:
            continue
        blocks = sorted({b.block for b in branches if b.kind == kind})
        read_as = f" (read as {kind!r})" if kind != written_kind else ""
        hint = (
            f"kind {written_kind!r}{read_as} has blocks {blocks[0]}..{blocks[-1]}"
            if blocks
            else f"the model's branch kinds are {sorted(kinds)}"
        )
        mapped = (
            f"; adapter {adapter.name!r} also reads "
            f"{', '.join(f'{a!r} as {b!r}' for a, b in sorted(aliases.items()))}"
            if adapter is not None and aliases
            else f"; adapter {adapter.name!r} declares no other names for its kinds"
            if adapter is not None
            else ""
        )
        raise ScheduleError(
            f"schedule key {written!r} matches no branch of this model ({hint}{mapped}); rename "
            "or remove the key, or use a schedule made for this model"
        )


def prefixed_branch(branch: Branch, name: str) -> Branch:
    """``branch`` of the denoiser held as ``name`` by the pipeline, with paths from there."""
    if not name:
        return branch
    leader = f"{name}.{branch.leader}" if branch.leader is not None else None
    return Branch(f"{name}.{branch.path}", branch.kind, branch.block, leader=leader)


def denoisers(holder: Any, root: nn.Module, adapter: Adapter) -> list[tuple[str, nn.Module]]:
    """Every denoiser of ``holder`` by the attribute name its branch paths start with: the
    root (``""``), then the ones that take over partway (:func:`second_denoisers`)."""
    return [("", root), *second_denoisers(holder, root, adapter)]


def measured_branches(
    roots: Sequence[tuple[str, nn.Module]], adapter: Adapter
) -> list[tuple[Branch, nn.Module]]:
    """The branches calibration measures, with their modules: those of every denoiser in
    ``roots`` (:func:`denoisers`), paths prefixed, group leaders only (a member follows its
    leader's schedule and is not measured). Curves record these, and are checked against them.
    """
    return [
        (prefixed_branch(b, name), m)
        for name, denoiser in roots
        for b, m in model_branches(denoiser, adapter)
        if b.leader is None
    ]


def second_denoisers(holder: Any, root: nn.Module, adapter: Adapter) -> list[tuple[str, nn.Module]]:
    """Other denoisers of the pipeline ``holder`` that take over partway through a run.

    Wan 2.2 A14B runs ``transformer`` for the high-noise steps and ``transformer_2`` for the
    rest: one schedule spans both, with one step clock. A ``transformer_2`` that the adapter
    does not fit is an error rather than a denoiser left uncached.
    """
    if holder is root:
        return []
    other = getattr(holder, "transformer_2", None)
    if not isinstance(other, nn.Module) or other is root:
        return []
    if not call_adapter(adapter, "matches", other):
        raise AdapterError(
            f"the pipeline's transformer_2 is a {type(other).__name__}, which adapter "
            f"{adapter.name!r} (chosen for its transformer) does not fit; both denoisers must "
            "be one architecture to share a schedule"
        )
    return [("transformer_2", other)]


def timestep_source(model: nn.Module, adapter: Adapter) -> TimestepSource:
    """The adapter's timestep source for ``model``, checked to name one of its submodules."""
    source = call_adapter(adapter, "timestep_source", model)
    try:
        model.get_submodule(source.path)
    except AttributeError:
        raise AdapterError(
            f"adapter {adapter.name!r} names timestep source {source.path!r}, which a "
            f"{type(model).__name__} does not have"
        ) from None
    return source


@dataclass(frozen=True)
class Bound:
    """A model resolved for smoothcache: what :func:`bind` found, before anything is changed.

    ``holder`` is what the user passed (a pipeline or the denoiser), ``model`` the denoiser the
    adapter unwrapped, ``roots`` every denoiser by the name its branch paths start with
    (:func:`denoisers`), ``sources`` each root's timestep source.
    """

    holder: Any
    model: nn.Module
    adapter: Adapter
    roots: list[tuple[str, nn.Module]]
    sources: list[tuple[nn.Module, TimestepSource]]

    def attach(
        self,
        patches: Patches,
        modules: Sequence[nn.Module],
        clock: StepClock,
        branch_calls: Callable[[], int],
        new_run: Callable[[], None],
        **callbacks: Callable[[], None] | None,
    ) -> list[EvaluationWatch]:
        """Hold every module that will change, watch each root's evaluations with ``clock``
        (``callbacks`` as :class:`~smoothcache.watch.EvaluationWatch` takes them) and the
        pipeline's runs (``new_run``); returns the watches. Everything goes through
        ``patches``, which undoes it exactly."""
        sources = [root.get_submodule(source.path) for root, source in self.sources]
        patches.hold([*(root for _, root in self.roots), *sources, *modules])
        watches = [
            EvaluationWatch(
                patches, root, source, clock, branch_calls, self.adapter.name, **callbacks
            )
            for root, source in self.sources
        ]
        watch_runs(patches, self.holder, self.model, new_run)
        return watches


def bind(holder: Any, adapter: str | Adapter | None) -> Bound:
    """Resolve ``holder`` (a denoiser or a pipeline) and its adapter; list its denoisers and
    their timestep sources. Reads and checks only: the model is not touched."""
    model, chosen = resolve(holder, adapter)
    roots = denoisers(holder, model, chosen)
    sources = [(root, timestep_source(root, chosen)) for _, root in roots]
    return Bound(holder, model, chosen, roots, sources)


def scheduled_branches(
    bound: Bound, schedule: Schedule
) -> tuple[Schedule, list[Branch], list[nn.Module]]:
    """Check ``schedule`` against every denoiser of ``bound``; return it in the model's kinds,
    the branches (paths from the holder) and their modules. Reads only.

    Per denoiser, scheduled branches come first; the others follow, to be wrapped as
    always-computing so that every declared branch marks the evaluation as having run branches.
    """
    branches: list[Branch] = []
    modules: list[nn.Module] = []
    planned = schedule
    for name, root in bound.roots:
        pairs = model_branches(root, bound.adapter)
        found = [b for b, _ in pairs]
        rename = model_kind_names(schedule, bound.adapter, found)
        check_keys(schedule, found, bound.adapter, rename)
        planned = schedule.renamed(rename) if rename else schedule
        pairs.sort(key=lambda pair: planned.row_for(pair[0].kind, pair[0].block) is None)
        branches += [prefixed_branch(b, name) for b, _ in pairs]
        modules += [m for _, m in pairs]
    return planned, branches, modules
