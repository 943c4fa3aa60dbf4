"""The conformance kit's harness: the model under test and the instruments the checks read.

:class:`Subject` holds one model from the author's factory with its adapter, root and branches,
runs the author's sampling loop and keeps the baseline output. The context managers around it
count original forwards and ``__call__``\\ s, turn smoothcache's errors and warnings into
failures of the check at hand, and :func:`step_invariant` tells a branch whose input never
changes (reusing it changes nothing, rightly) from one that does not act as a residual branch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch
from smoothcache.binding import model_branches, resolve
from smoothcache.engine import enabled
from smoothcache.engine.outputs import identical
from smoothcache.errors import SmoothCacheError
from smoothcache.testing.results import ConformanceError
from smoothcache.testing.state import module_state, state_differences, tensor_objects

if TYPE_CHECKING:
    from smoothcache.engine import Session

#: Builds a fresh model (or pipeline) with random, non-zero gates: ``make_model()``.
Factory = Callable[[], Any]
#: Runs a short, seeded sampling loop on the model and returns a tensor: ``run(model)``.
Runner = Callable[[Any], torch.Tensor]


class Subject:
    """One model from the factory, with its adapter, root module and branches.

    The checks share one subject inside :func:`~smoothcache.testing.check_adapter` (each leaves
    the model as it found it, which the ``restore`` check verifies), so the baseline output is
    computed once.
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
        with as_failure("detection"):
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
        with as_failure(check):
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

    def sample(self, _seed: int = 0) -> Any:
        """One run of the sampling loop, its output as returned (gradients kept, if the run
        keeps them): the ``run(seed)`` of :func:`smoothcache.tune`, whose seeds the kit's
        deterministic runner has no use for."""
        return self._run(self.obj)

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
            before = tensor_objects(self.root)
            second = self.run(check)
            after = tensor_objects(self.root)
            self.replaced = frozenset(
                k for k in before.keys() & after.keys() if before[k] is not after[k]
            )
            if not identical(first, second):
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

    def assert_restored(self, check: str, before: dict[str, Any], when: str) -> None:
        """Fail ``check`` when the root differs from its :func:`module_state` ``before``."""
        differences = state_differences(before, module_state(self.root), self.replaced)
        if differences:
            shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            raise ConformanceError(
                check,
                f"{when}, {len(differences)} module(s) or tensor(s) differ from before: {shown}. "
                "The adapter's methods must not change the model (no hooks, attributes or "
                "weights)",
            )


@contextmanager
def as_failure(check: str) -> Iterator[None]:
    """Turn smoothcache's own errors raised by the engine into a failure of ``check``."""
    try:
        yield
    except SmoothCacheError as exc:
        raise ConformanceError(check, f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def recording_warnings(check: str) -> Iterator[None]:
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
def counting_calls(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
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
def counting_pre_hooks(modules: Sequence[nn.Module]) -> Iterator[list[int]]:
    """Count ``__call__``\\ s of each module with a forward pre-hook (removed on exit)."""
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


def relative_change(out: torch.Tensor, base: torch.Tensor) -> float:
    """Largest absolute difference relative to the baseline's largest magnitude."""
    if out.shape != base.shape:
        return math.inf
    scale = float(base.abs().max()) or 1.0
    return float((out.float() - base.float()).abs().max()) / scale


def alternating_row(num_steps: int) -> list[int]:
    """``[1, 0, 1, 0, ..., 1]``: compute at even steps and the last, reuse in between."""
    return [1 if i % 2 == 0 or i == num_steps - 1 else 0 for i in range(num_steps)]


def forecast_row(num_steps: int) -> list[int]:
    """``[1, 1, 0, 1, 0, ..., 1]``: two computed steps before the first skipped one, so that
    every skipped step can forecast with order 1."""
    return [1 if i < 2 or i % 2 == 1 or i == num_steps - 1 else 0 for i in range(num_steps)]


def step_invariant(subject: Subject, check: str, modules: Sequence[nn.Module]) -> bool:
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
        subject.run(check)
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
                identical(list(args), list(a)) and kwargs.keys() == k.keys()
                and all(identical(kwargs[n], k[n]) for n in kwargs)
                for a, k in first
            ):  # fmt: skip
                return False
    return True
