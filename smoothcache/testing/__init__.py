"""Conformance kit: checks that an adapter keeps the contract smoothcache relies on.

An adapter author runs the kit with a *model factory* and a *run* function::

    from smoothcache.testing import check_adapter

    report = check_adapter(make_model, sample, adapter="my-dit", num_steps=4)
    report.raise_for_failures()

``make_model()`` returns a fresh model (or a pipeline holding one) with random weights, its
zero-initialised gates and output layers re-randomised (otherwise reusing a branch changes
nothing and every check that caching *changes* the output fails). ``sample(model)`` runs a short
sampling loop of exactly ``num_steps`` denoising steps (at least 3) on it, deterministically
(seeded noise), and returns a tensor: the final latents, say. The kit calls it about a dozen
times, so keep the model tiny and the loop short.

Each check is also a plain function (:data:`CHECKS`), usable from any test runner, that raises
:class:`ConformanceError` (an ``AssertionError``) naming the check and the branch at fault. For
pytest, subclass :class:`AdapterConformance`. What the checks hold an adapter to:

* ``detection`` — the adapter matches the model, rejects an unrelated module, and detection
  picks it over every other known adapter;
* ``branches_exist`` — declared branches are distinct modules of the model, not nested in one
  another, with valid schedule kinds among the adapter's ``kinds``; the timestep source exists;
* ``timestep_source_once`` — the timestep source fires exactly once per model evaluation and
  every declared branch runs once per evaluation; the run has ``num_steps`` steps;
* ``exact`` — a schedule that computes everything is bit-identical to no caching;
* ``branches_residual`` — for each kind, reusing it skips the branch's original forward on the
  reuse steps and changes the output;
* ``fast_path`` — the adapter's optional block fast path gives bit-identical outputs to the
  plain wrappers under reuse, without falling back;
* ``forecast`` — for each kind, a forecast of order 1 (``[1, 1, 0, 1, ...]``, skipped steps
  extrapolated from the last two computed outputs) skips the branch's original forward, gives
  at every skipped step and pass exactly the extrapolation of the outputs the same run computed
  (checked by hand from outputs recorded with forward hooks), changes the output against plain
  reuse, and the fast path, if any, gives the same output; needs ``num_steps >= 4``;
* ``restore`` — leaving a session, normally or through an exception raised mid-evaluation,
  leaves every module as it was;
* ``calibration`` — calibrating over two runs gives curves for every branch, and a schedule made
  from them applies;
* ``calibration_path`` — the whole recommended path on the same model: the curves pass
  ``check_model``, the sensitivity is measured, every schedule method and the choice among the
  forecast candidates give schedules that apply and skip what they say (``num_steps >= 4``).

Importing this module does not import pytest; :class:`AdapterConformance` imports it only to
skip the fast-path test of an adapter that declares none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch
from smoothcache.binding import model_branches, resolve
from smoothcache.calibration import calibrating, measure_sensitivity, select_schedule
from smoothcache.curves import ErrorCurves
from smoothcache.engine import Session, enabled
from smoothcache.engine.outputs import identical as _same_values
from smoothcache.errors import SmoothCacheError
from smoothcache.forecast import first_tensor, lagrange_weights
from smoothcache.registry import REGISTRY
from smoothcache.schedule import Schedule, parse_key

#: Builds a fresh model (or pipeline) with random, non-zero gates: ``make_model()``.
Factory = Callable[[], Any]
#: Runs a short, seeded sampling loop on the model and returns a tensor: ``run(model)``.
Runner = Callable[[Any], torch.Tensor]


class ConformanceError(AssertionError):
    """An adapter broke the contract; ``check`` names the check that found it."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"[{check}] {message}")
        self.check = check
        self.message = message


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``passed``, ``failed`` or ``skipped``, and why."""

    check: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class Report:
    """The results of :func:`check_adapter`, one per check in :data:`CHECKS` order."""

    adapter: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not count against the adapter)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [r for r in self.results if r.status == "failed"]

    def raise_for_failures(self) -> None:
        """Raise :class:`ConformanceError` listing every failed check, if any failed."""
        if self.failures:
            raise ConformanceError(
                ", ".join(r.check for r in self.failures),
                f"adapter {self.adapter!r} fails {len(self.failures)} conformance check(s):\n"
                + str(self),
            )

    def __str__(self) -> str:
        lines = []
        for result in self.results:
            line = f"{result.status.upper():7} {result.check}"
            lines.append(f"{line}: {result.message}" if result.message else line)
        return "\n".join(lines)


# -- the model under test ---------------------------------------------------------------------


class _Subject:
    """One model from the factory, with its adapter, root module and branches.

    The checks share one subject inside :func:`check_adapter` (each leaves the model as it
    found it, which the ``restore`` check verifies), so the baseline output is computed once.
    """

    def __init__(
        self,
        factory: Factory,
        run: Runner,
        adapter: str | Adapter | None,
        num_steps: int,
        min_change: float,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 3:
            raise ValueError(
                f"num_steps must be the run's number of denoising steps, at least 3 (so that a "
                f"schedule can reuse between two computing steps), found {num_steps!r}"
            )
        self._run = run
        self.num_steps = num_steps
        self.min_change = min_change
        self.obj = factory()
        with _as_failure("detection"):
            self.root, self.adapter = resolve(self.obj, adapter)
        self._baseline: torch.Tensor | None = None
        #: tensors the plain model replaces with a new object on every call (OmniGen's rotary
        #: embedding reassigns its ``inv_freq`` buffer): compared by value, not identity
        self.replaced: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """The name of the adapter under test."""
        return self.adapter.name

    def branches(self, check: str) -> list[tuple[Branch, nn.Module]]:
        """The declared branches with their modules (an unusable list fails ``check``)."""
        with _as_failure(check):
            return model_branches(self.root, self.adapter)

    def kinds(self, check: str) -> list[str]:
        """The declared branch kinds, in order of first appearance."""
        return list(dict.fromkeys(b.kind for b, _ in self.branches(check)))

    def source(self, check: str) -> tuple[str, nn.Module]:
        """The timestep source's path and module."""
        path = self.adapter.timestep_source(self.root).path
        try:
            return path, self.root.get_submodule(path)
        except AttributeError:
            raise ConformanceError(
                check,
                f"the timestep source {path!r} is not a submodule of the "
                f"{type(self.root).__name__}",
            ) from None

    def run(self, check: str) -> torch.Tensor:
        """One run of the sampling loop; its output, detached and copied."""
        out = self._run(self.obj)
        if not isinstance(out, torch.Tensor):
            raise ConformanceError(
                check,
                f"run(model) must return a tensor (e.g. the final latents), found "
                f"{type(out).__name__}",
            )
        return out.detach().clone()

    def baseline(self, check: str) -> torch.Tensor:
        """The output without smoothcache; two runs must agree bit for bit."""
        if self._baseline is None:
            first = self.run(check)
            before = _tensor_objects(self.root)
            second = self.run(check)
            after = _tensor_objects(self.root)
            self.replaced = frozenset(
                k for k in before.keys() & after.keys() if before[k] is not after[k]
            )
            if not _identical(first, second):
                raise ConformanceError(
                    check,
                    "two runs of the plain model differ, so exactness cannot be checked: seed "
                    "every random draw in run(model) (e.g. torch.Generator().manual_seed(0)) and "
                    "put the model in eval mode (dropout)",
                )
            self._baseline = first
        return self._baseline

    def enabled(
        self, schedule: Mapping[str, Any], **kwargs: Any
    ) -> AbstractContextManager[Session]:
        """``smoothcache.enabled`` on the model with the adapter under test."""
        return enabled(self.obj, schedule, self.adapter, **kwargs)


@contextmanager
def _as_failure(check: str) -> Iterator[None]:
    """Turn smoothcache's own errors raised by the engine into a failure of ``check``."""
    try:
        yield
    except SmoothCacheError as exc:
        raise ConformanceError(check, f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _recording_warnings(check: str) -> Iterator[None]:
    """Fail ``check`` when smoothcache warns during the block (e.g. a fast path falling back).

    Other warnings are passed on unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if "smoothcache" in str(warning.message):
            raise ConformanceError(check, f"smoothcache warned: {warning.message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


@contextmanager
def _counting_calls(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
    """Count calls of each module's *original* forward.

    Installs a counting instance ``forward`` before smoothcache patches the modules, so the
    engine wraps the counter: a reused step never reaches it.
    """
    counts = [0] * len(modules)
    saved = [module.__dict__.get("forward") for module in modules]
    for index, module in enumerate(modules):
        original = module.forward

        def counting(*args: Any, _i: int = index, _f: Callable[..., Any] = original, **kw: Any):
            counts[_i] += 1
            return _f(*args, **kw)

        module.forward = counting
    try:
        yield counts
    finally:
        for module, previous in zip(modules, saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous


@contextmanager
def _counting_pre_hooks(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
    """Count ``__call__``s of each module with a forward pre-hook (removed on exit)."""
    counts = [0] * len(modules)
    handles = []
    for index, module in enumerate(modules):

        def hook(_module: nn.Module, _args: Any, _i: int = index) -> None:
            counts[_i] += 1

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def _relative_change(out: torch.Tensor, base: torch.Tensor) -> float:
    """Largest absolute difference relative to the baseline's largest magnitude."""
    if out.shape != base.shape:
        return math.inf
    scale = float(base.abs().max()) or 1.0
    return float((out.float() - base.float()).abs().max()) / scale


def alternating_row(num_steps: int) -> list[int]:
    """``[1, 0, 1, 0, ..., 1]``: compute at even steps and the last, reuse in between."""
    return [1 if i % 2 == 0 or i == num_steps - 1 else 0 for i in range(num_steps)]


# -- module state -----------------------------------------------------------------------------


def module_state(model: nn.Module) -> dict[str, Any]:
    """Everything smoothcache may touch on each module of ``model``.

    Per module: the instance ``forward`` attribute (or ``None``), the names of its instance
    attributes, its forward hooks and pre-hooks; per parameter and buffer: the object and a
    copy of its values. Compare two snapshots with :func:`state_differences`.
    """
    state: dict[str, Any] = {}
    for name, module in model.named_modules():
        state[f"module {name or '<root>'}"] = (
            module.__dict__.get("forward"),
            frozenset(module.__dict__),
            dict(module._forward_hooks),
            dict(module._forward_pre_hooks),
            dict(module._forward_hooks_with_kwargs),
            dict(module._forward_pre_hooks_with_kwargs),
        )
    for key, tensor in _tensor_objects(model).items():
        state[key] = (tensor, tensor.detach().clone())
    return state


def _tensor_objects(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, by the key :func:`module_state` gives it (objects, no copies)."""
    return {f"tensor {n}": t for n, t in [*model.named_parameters(), *model.named_buffers()]}


def state_differences(
    before: dict[str, Any], after: dict[str, Any], replaced: Collection[str] = ()
) -> list[str]:
    """The keys of two :func:`module_state` snapshots that differ (tensors compared bit-exact,
    and as objects, except the ``replaced`` ones that the model itself swaps for a new object
    on every call, whose values alone are compared)."""
    differences = sorted(before.keys() ^ after.keys())
    for key in before.keys() & after.keys():
        if key.startswith("tensor "):
            (obj, old), (new_obj, new) = before[key], after[key]
            swapped = obj is not new_obj and key not in replaced
            if swapped or not _identical(old, new.detach()):
                differences.append(key)
        elif before[key] != after[key]:
            differences.append(key)
    return differences


def _assert_restored(check: str, before: dict[str, Any], subject: _Subject, when: str) -> None:
    differences = state_differences(before, module_state(subject.root), subject.replaced)
    if differences:
        shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
        raise ConformanceError(
            check,
            f"{when}, {len(differences)} module(s) or tensor(s) differ from before: {shown}. The "
            "adapter's methods must not change the model (no hooks, attributes or weights)",
        )


# -- the checks -------------------------------------------------------------------------------


def _detection(subject: _Subject) -> None:
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


def _branches_exist(subject: _Subject) -> None:
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


def _timestep_source_once(subject: _Subject) -> None:
    check = "timestep_source_once"
    pairs = subject.branches(check)
    source_path, source = subject.source(check)
    everything = {kind: [1] * subject.num_steps for kind in subject.kinds(check)}
    with _counting_pre_hooks([source]) as fired, _counting_pre_hooks([m for _, m in pairs]) as ran:
        # Without the fast path: its one-time self-check at step 0 calls each branch twice.
        with _as_failure(check), subject.enabled(everything, fast_path=False) as session:
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


def _exact(subject: _Subject) -> None:
    check = "exact"
    base = subject.baseline(check)
    everything = {kind: [1] * subject.num_steps for kind in subject.kinds(check)}
    with _recording_warnings(check), _as_failure(check):
        with subject.enabled(everything) as session:
            out = subject.run(check)
    if session.stats.total_reused:
        raise ConformanceError(check, "a compute-everything schedule reused outputs")
    if not _identical(out, base):
        raise ConformanceError(
            check,
            f"a schedule that computes everything changed the output (by "
            f"{_relative_change(out, base):.3g} relative); caching must be exact when it "
            "skips nothing",
        )
    if not _identical(subject.run(check), base):
        raise ConformanceError(check, "the output after leaving the session differs")


def _branches_residual(subject: _Subject) -> None:
    check = "branches_residual"
    base = subject.baseline(check)
    pairs = subject.branches(check)
    _, source = subject.source(check)
    row = alternating_row(subject.num_steps)
    for kind in subject.kinds(check):
        chosen = [(b, m) for b, m in pairs if b.kind == kind]
        with (
            _counting_calls([m for _, m in chosen]) as originals,
            _counting_pre_hooks([source]) as fired,
        ):
            with _as_failure(check), subject.enabled({kind: row}) as session:
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
        change = _relative_change(out, base)
        if change == 0 and _step_invariant(subject, [m for _, m in chosen]):
            continue  # the branches see the same input at every step: reuse is exact
        if not change > subject.min_change:
            raise ConformanceError(
                check,
                f"reusing kind {kind!r} (branches {', '.join(b.path for b, _ in chosen)}) "
                f"changed the output by {change:.3g} relative, not more than "
                f"{subject.min_change:g}: the branch is not a residual branch, or its output "
                "layer or gate is zero (re-randomise zero-initialised weights in the factory)",
            )


def _step_invariant(subject: _Subject, modules: Sequence[nn.Module]) -> bool:
    """Whether every module receives, at every step, one of the inputs it received at step 0.

    Such a branch (a text refiner that takes no timestep) gives the same output at every step,
    so reusing it changes nothing, rightly: its check passes without a change of the output.
    """
    seen: list[list[Any]] = [[] for _ in modules]
    handles = [
        module.register_forward_pre_hook(
            lambda _m, args, kwargs, _s=store: _s.append((args, kwargs)), with_kwargs=True
        )
        for module, store in zip(modules, seen)
    ]
    try:
        subject.run("branches_residual")
    finally:
        for handle in handles:
            handle.remove()
    per_step = max(len(calls) for calls in seen) // subject.num_steps
    if per_step < 1:
        return False
    for calls in seen:
        first = calls[:per_step]
        for args, kwargs in calls:
            if not any(
                _same_values(list(args), list(a)) and kwargs.keys() == k.keys()
                and all(_same_values(kwargs[n], k[n]) for n in kwargs)
                for a, k in first
            ):  # fmt: skip
                return False
    return True


def _fast_path(subject: _Subject) -> None:
    check = "fast_path"
    if not subject.adapter.fast_forwards(subject.root):
        return
    row = alternating_row(subject.num_steps)
    schedule = {kind: row for kind in subject.kinds(check)}
    outputs = []
    for fast in (True, False):
        with _recording_warnings(check), _as_failure(check):
            with subject.enabled(schedule, fast_path=fast) as session:
                outputs.append(subject.run(check))
        if not session.stats.total_reused:
            raise ConformanceError(check, f"nothing was reused with fast_path={fast}")
    if not _identical(*outputs):
        raise ConformanceError(
            check,
            f"under reuse the fast path's output differs from the plain wrappers' by "
            f"{_relative_change(*outputs):.3g} relative; a block fast path must compute exactly "
            "what the block's own forward does",
        )


def forecast_row(num_steps: int) -> list[int]:
    """``[1, 1, 0, 1, 0, ..., 1]``: two computed steps before the first skipped one, so that
    every skipped step can forecast with order 1."""
    return [1 if i < 2 or i % 2 == 1 or i == num_steps - 1 else 0 for i in range(num_steps)]


def _forecast(subject: _Subject) -> None:
    check = "forecast"
    if subject.num_steps < 4:
        raise ConformanceError(check, "a forecast of order 1 needs num_steps >= 4")
    row = forecast_row(subject.num_steps)
    pairs = subject.branches(check)
    for kind in subject.kinds(check):
        chosen = [(b, m) for b, m in pairs if b.kind == kind]
        schedule = Schedule({kind: row}).forecasting(1)
        recorded: list[list[torch.Tensor]] = [[] for _ in chosen]
        handles = [
            module.register_forward_hook(
                lambda _m, _a, out, _r=record: _r.append(first_tensor(out).detach().clone())
            )
            for (_, module), record in zip(chosen, recorded)
        ]
        try:
            with _counting_calls([m for _, m in chosen]) as originals:
                with _as_failure(check), subject.enabled(schedule, fast_path=False) as session:
                    out = subject.run(check)
        finally:
            for handle in handles:
                handle.remove()
        stats = session.stats
        passes = stats.passes
        for (branch, _), calls, outputs in zip(chosen, originals, recorded):
            if branch.leader is not None:  # a group member stands in, never forecasts
                if calls != stats.computed[branch.path] or stats.forecast[branch.path]:
                    raise ConformanceError(
                        check,
                        f"group member {branch.path!r} ran {calls} times for "
                        f"{stats.computed[branch.path]} computed steps",
                    )
                continue
            if stats.forecast[branch.path] == 0 or calls != stats.computed[branch.path]:
                raise ConformanceError(
                    check,
                    f"branch {branch.path!r}: {stats.forecast[branch.path]} forecast steps, its "
                    f"original forward ran {calls} times for {stats.computed[branch.path]} "
                    "computed steps; a forecast must skip the branch",
                )
            if len(outputs) != subject.num_steps * passes:
                raise ConformanceError(
                    check,
                    f"branch {branch.path!r} answered {len(outputs)} calls, expected "
                    f"{subject.num_steps} steps x {passes} passes",
                )
            _check_forecasts(check, branch.path, outputs, row, passes)
        with _as_failure(check), subject.enabled({kind: row}):
            reused = subject.run(check)
        invariant = _relative_change(out, reused) == 0 and _step_invariant(
            subject, [m for _, m in chosen]
        )  # a branch with the same input at every step: its forecast is its reuse, rightly
        if not invariant and not _relative_change(out, reused) > subject.min_change:
            raise ConformanceError(
                check,
                f"forecasting kind {kind!r} gave the output of plain reuse (relative change "
                f"{_relative_change(out, reused):.3g}); the forecast is not applied",
            )
        if subject.adapter.fast_forwards(subject.root):
            with _recording_warnings(check), _as_failure(check):
                with subject.enabled(schedule, fast_path=True):
                    fast = subject.run(check)
            if not _identical(fast, out):
                raise ConformanceError(
                    check,
                    f"forecasting kind {kind!r} with the fast path differs from the plain "
                    f"wrappers by {_relative_change(fast, out):.3g} relative",
                )


def _check_forecasts(
    check: str, path: str, outputs: list[torch.Tensor], row: list[int], passes: int
) -> None:
    """Every skipped step's output is the line through the outputs of the two computes before."""
    for step, flag in enumerate(row):
        if flag:
            continue
        before = [s for s in range(step) if row[s]][-2:]
        weights = lagrange_weights(before, step)
        for p in range(passes):
            got = outputs[step * passes + p].double()
            want = sum(w * outputs[s * passes + p].double() for w, s in zip(weights, before))
            scale = float(want.abs().max()) or 1.0
            error = float((got - want).abs().max()) / scale
            tolerance = 32 * torch.finfo(outputs[0].dtype).eps  # the engine works in the dtype
            if not error <= tolerance:
                raise ConformanceError(
                    check,
                    f"branch {path!r} at step {step}, pass {p}: the output differs from the "
                    f"extrapolation of steps {before} by {error:.3g} relative",
                )


class _Interrupted(Exception):
    """Raised by the restore check in the middle of a model evaluation."""


def _restore(subject: _Subject) -> None:
    check = "restore"
    pairs = subject.branches(check)
    row = alternating_row(subject.num_steps)
    schedule = {kind: row for kind in subject.kinds(check)}
    subject.baseline(check)  # a model may create state lazily on its first call: not ours
    before = module_state(subject.root)
    with _as_failure(check), subject.enabled(schedule):
        subject.run(check)
    _assert_restored(check, before, subject, "after a session")

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
            with _as_failure(check), subject.enabled(schedule):
                subject.run(check)
        except _Interrupted:
            pass
        else:
            raise ConformanceError(check, f"branch {pairs[-1][0].path!r} ran only once")
        _assert_restored(check, before, subject, "after an exception inside a session")
    finally:
        handle.remove()
    with _as_failure(check), subject.enabled(schedule):
        pass  # enabling again works: the interrupted session released the model


def _calibrated(subject: _Subject, check: str, runs: int) -> tuple[ErrorCurves, dict[str, Any]]:
    """Curves of ``runs`` calibration runs (lookahead 2), and the model's state before them,
    which calibrating must have left as it was."""
    subject.baseline(check)  # a model may create state lazily on its first call: not ours
    before = module_state(subject.root)
    with _as_failure(check):
        with calibrating(subject.obj, lookahead=2, adapter=subject.adapter) as recorder:
            for _ in range(runs):
                subject.run(check)
        curves = recorder.curves()
    _assert_restored(check, before, subject, "after calibrating")
    return curves, before


def _calibration(subject: _Subject) -> None:
    check = "calibration"
    pairs = [
        (b, m) for b, m in subject.branches(check) if b.leader is None
    ]  # members: not measured
    curves, _ = _calibrated(subject, check, runs=2)
    if curves.num_steps != subject.num_steps or curves.metadata.get("runs") != 2:
        raise ConformanceError(
            check,
            f"calibration saw {curves.metadata.get('runs')} runs of {curves.num_steps} steps; "
            f"expected 2 runs of num_steps={subject.num_steps}",
        )
    for index, (branch, _) in enumerate(pairs):
        lag1 = curves.count[index, :, 0, :]
        if not lag1.any():
            raise ConformanceError(check, f"branch {branch.path!r} has no calibration errors")
    errors = curves.mean[:, :, 0, :][curves.count[:, :, 0, :] > 0]
    if not np.isfinite(errors).all():
        raise ConformanceError(check, "the calibration errors are not finite")
    schedule = curves.schedule(float(np.median(errors)))
    with _as_failure(check), subject.enabled(schedule):
        subject.run(check)


#: The budget of the schedules :func:`_calibration_path` makes: a skipped step at 3 or 4 steps.
_PATH_FRACTION = 0.75


def _calibration_path(subject: _Subject) -> None:
    """The whole path from calibration to a cached run, as the README recommends it."""
    check = "calibration_path"
    curves, before = _calibrated(subject, check, runs=1)
    try:
        curves.check_model(subject.obj, subject.adapter)
    except SmoothCacheError as exc:
        raise ConformanceError(
            check, f"curves recorded on this model are refused by check_model: {exc}"
        ) from None
    with _as_failure(check):
        curves = measure_sensitivity(
            subject.obj, lambda: subject.run(check), curves, adapter=subject.adapter
        )
        alpha = float(np.nanmedian(curves.mean[:, :, 0, :][curves.count[:, :, 0, :] > 0]))
        schedules = {
            "paper, alpha": curves.schedule(alpha),
            "paper, alpha, per block": curves.schedule(alpha, per_block=True),
            "paper, budget": curves.schedule(compute_fraction=_PATH_FRACTION),
            "sensitivity": curves.schedule(compute_fraction=_PATH_FRACTION, method="sensitivity"),
            "forecast": curves.schedule(compute_fraction=_PATH_FRACTION, method="forecast"),
        }
        candidates = curves.forecast_candidates(compute_fraction=_PATH_FRACTION)
        schedules["selected"] = select_schedule(
            subject.obj, lambda: subject.run(check), candidates, adapter=subject.adapter
        )
    for name, schedule in schedules.items():
        with _as_failure(check), subject.enabled(schedule) as session:
            subject.run(check)
        skips = any(0 in row for row in schedule.rows.values())
        if not name.startswith("paper, alpha") and not skips:  # a budget below 1 must skip
            raise ConformanceError(check, f"the {name} schedule skips nothing at a 0.75 budget")
        if skips and session.stats.total_reused == 0:
            raise ConformanceError(
                check, f"the {name} schedule skips steps but the run reused nothing"
            )
    _assert_restored(check, before, subject, "after the schedules ran")


#: Every check, in the order :func:`check_adapter` runs them.
_CHECKS: dict[str, Callable[[_Subject], None]] = {
    "detection": _detection,
    "branches_exist": _branches_exist,
    "timestep_source_once": _timestep_source_once,
    "exact": _exact,
    "branches_residual": _branches_residual,
    "fast_path": _fast_path,
    "forecast": _forecast,
    "restore": _restore,
    "calibration": _calibration,
    "calibration_path": _calibration_path,
}


class Check(Protocol):
    """The signature of every ``check_*`` function."""

    def __call__(
        self,
        factory: Factory,
        run: Runner,
        *,
        adapter: str | Adapter | None = None,
        num_steps: int,
        min_change: float = 1e-5,
    ) -> None: ...


def _public_check(name: str, summary: str) -> Check:
    """The public ``check_<name>`` function: runs one check on one model from ``factory``."""

    def check(
        factory: Factory,
        run: Runner,
        *,
        adapter: str | Adapter | None = None,
        num_steps: int,
        min_change: float = 1e-5,
    ) -> None:
        _CHECKS[name](_Subject(factory, run, adapter, num_steps, min_change))

    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__doc__ = (
        f"{summary}\n\nRaises :class:`ConformanceError` on failure; arguments as for "
        ":func:`check_adapter`."
    )
    return check


check_detection = _public_check(
    "detection",
    "The adapter matches the model, rejects an unrelated ``nn.Sequential``, and "
    ":func:`smoothcache.detect` would pick it over every other known adapter.",
)

check_branches_exist = _public_check(
    "branches_exist",
    "The declared branches are distinct, non-nested submodules with valid schedule kinds "
    "(among the adapter's ``kinds``) and distinct keys; the timestep source exists.",
)

check_timestep_source_once = _public_check(
    "timestep_source_once",
    "Under a compute-everything schedule, the timestep source fires exactly once per model "
    "evaluation, every branch runs once per evaluation, and the run has ``num_steps`` steps "
    "in one generation.",
)

check_exact = _public_check(
    "exact",
    "A schedule that computes everything gives a bit-identical output (``torch.equal``), "
    "reuses nothing and raises no smoothcache warning; the model is unchanged afterwards.",
)

check_branches_residual = _public_check(
    "branches_residual",
    "For each branch kind, reusing it at every other step (``[1, 0, 1, ..., 1]``) skips the "
    "branch's original forward on the reuse steps and changes the output by more than "
    "``min_change`` (relative).",
)

check_fast_path = _public_check(
    "fast_path",
    "When the adapter declares block fast paths (:meth:`Adapter.fast_forwards`), a reuse "
    "schedule gives bit-identical outputs with and without them, and none falls back.",
)

check_forecast = _public_check(
    "forecast",
    "For each branch kind, forecasting with order 1 (``[1, 1, 0, 1, ..., 1]``) skips the "
    "branch's original forward, answers every skipped step and pass with the extrapolation of "
    "the outputs the run computed, differs from plain reuse, and matches the fast path.",
)

check_restore = _public_check(
    "restore",
    "Leaving a session, normally or through an exception raised in the middle of a model "
    "evaluation, leaves every module, hook, attribute and tensor as it was.",
)

check_calibration = _public_check(
    "calibration",
    "Calibrating over two runs gives error curves for every branch with ``num_steps`` "
    "steps, restores the model, and a schedule made from the curves applies.",
)


check_calibration_path = _public_check(
    "calibration_path",
    "The path from calibration to a cached run: curves recorded on the model pass "
    ":meth:`~smoothcache.ErrorCurves.check_model` on it, :func:`smoothcache.measure_sensitivity` "
    "runs, every schedule method (the paper's rule by alpha, per block and by budget, the "
    "sensitivity search, the forecast search) and :func:`smoothcache.select_schedule` among "
    "the forecast candidates give schedules that apply and skip what they say.",
)


#: The checks by name, each ``check(factory, run, *, adapter=None, num_steps, min_change=1e-5)``.
CHECKS: dict[str, Check] = {
    "detection": check_detection,
    "branches_exist": check_branches_exist,
    "timestep_source_once": check_timestep_source_once,
    "exact": check_exact,
    "branches_residual": check_branches_residual,
    "fast_path": check_fast_path,
    "forecast": check_forecast,
    "restore": check_restore,
    "calibration": check_calibration,
    "calibration_path": check_calibration_path,
}


def check_adapter(
    factory: Factory,
    run: Runner,
    *,
    adapter: str | Adapter | None = None,
    num_steps: int,
    min_change: float = 1e-5,
) -> Report:
    """Run every check on one model from ``factory`` and report each outcome.

    ``adapter`` is the adapter under test, by name or instance (an instance need not be
    registered: detection is then checked as if it were); ``None`` tests whichever adapter
    detection picks. ``num_steps`` is the number of denoising steps ``run`` makes (at least 3).
    ``min_change`` is the smallest relative change of the output that reusing one branch kind
    must cause. A check that raises anything counts as failed; the others still run.
    """
    try:
        subject = _Subject(factory, run, adapter, num_steps, min_change)
    except ConformanceError as exc:
        name = adapter if isinstance(adapter, str) else getattr(adapter, "name", "<detected>")
        results = [CheckResult(exc.check, "failed", exc.message)]
        results += [CheckResult(c, "skipped", "no adapter") for c in _CHECKS if c != exc.check]
        return Report(str(name), tuple(results))
    results = []
    for name, body in _CHECKS.items():
        if name == "fast_path" and not subject.adapter.fast_forwards(subject.root):
            results.append(CheckResult(name, "skipped", "the adapter declares no fast path"))
            continue
        try:
            body(subject)
        except ConformanceError as exc:
            results.append(CheckResult(name, "failed", exc.message))
        except Exception as exc:
            results.append(CheckResult(name, "failed", f"raised {type(exc).__name__}: {exc}"))
        else:
            results.append(CheckResult(name, "passed"))
    return Report(subject.name, tuple(results))


class AdapterConformance:
    """Base class of a pytest test class that runs every check on one adapter.

    Subclass it in a test module (the subclass's name must start with ``Test``), set
    ``adapter`` and ``num_steps``, and define ``make_model`` and ``run``::

        class TestMyAdapter(AdapterConformance):
            adapter = "my-dit"
            num_steps = 4

            def make_model(self):
                return tiny_random_model()

            def run(self, model):
                return sample(model, num_steps=4)

    pytest collects one test per check. ``min_change`` may be lowered for a model whose
    branches barely change the output.
    """

    adapter: str | Adapter | None = None
    num_steps: int | None = None
    min_change: float = 1e-5

    def make_model(self) -> Any:
        """A fresh model (or pipeline) with random, non-zero gates; see :data:`Factory`."""
        raise NotImplementedError("define make_model(self) in your AdapterConformance subclass")

    def run(self, model: Any) -> torch.Tensor:
        """A short seeded sampling loop of ``num_steps`` steps on ``model``; see :data:`Runner`."""
        raise NotImplementedError("define run(self, model) in your AdapterConformance subclass")

    def _check(self, name: str) -> None:
        if self.num_steps is None:
            raise TypeError(f"set num_steps on {type(self).__name__} (the run's step count)")
        CHECKS[name](
            self.make_model,
            self.run,
            adapter=self.adapter,
            num_steps=self.num_steps,
            min_change=self.min_change,
        )

    def test_detection(self) -> None:
        self._check("detection")

    def test_branches_exist(self) -> None:
        self._check("branches_exist")

    def test_timestep_source_once(self) -> None:
        self._check("timestep_source_once")

    def test_exact(self) -> None:
        self._check("exact")

    def test_branches_residual(self) -> None:
        self._check("branches_residual")

    def test_fast_path(self) -> None:
        root, adapter = resolve(self.make_model(), self.adapter)
        if not adapter.fast_forwards(root):
            import pytest

            pytest.skip(f"adapter {adapter.name!r} declares no fast path")
        self._check("fast_path")

    def test_forecast(self) -> None:
        self._check("forecast")

    def test_restore(self) -> None:
        self._check("restore")

    def test_calibration(self) -> None:
        self._check("calibration")

    def test_calibration_path(self) -> None:
        self._check("calibration_path")
