"""The caching engine: applies a static schedule to a model and answers skipped branch calls.

PyTorch hooks cannot skip a module's work (a pre-hook only changes inputs, a forward hook runs
after the work), so each scheduled branch module gets a small ``forward`` wrapper as an
instance attribute. On a skipped step the wrapper returns the stored output (reuse) or a
forecast from the stored outputs (:mod:`smoothcache.forecast`) without calling the original.
Every decision is a lookup in a table built once from the schedule: the schedule is static, so
the engine knows at store time whether any later step reads an output, stores only those, and
drops each entry after its last use.
"""

from __future__ import annotations

import logging
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, TimestepSource
from smoothcache.binding import plan_model, prefixed_branch, resolve, second_denoisers
from smoothcache.clock import StepClock, check_count
from smoothcache.engine.outputs import identical, input_shape, like, nbytes, stand_in
from smoothcache.errors import (
    AdapterError,
    ArgumentError,
    StepCountError,
)
from smoothcache.forecast import combine, first_tensor, step_plan
from smoothcache.patching import Patches, interrupts_deferred
from smoothcache.registry import call_adapter
from smoothcache.schedule import Schedule, as_schedule
from smoothcache.watch import EvaluationWatch, watch_runs

logger = logging.getLogger(__name__)

# Per-step actions of one branch; bit flags so the wrapper tests them with one `&`.
_STORE = 1  # computing: store the output, a later skipped step reads it
_REUSE = 2  # skipped: return the last stored output
_NO_CLOCK = 4  # the timestep source has not fired yet: the adapter is wrong
_FORECAST = 8  # skipped: return a forecast from the last stored outputs
_DROP = 16  # before this step, fewer stored outputs are needed than held: drop the oldest
_STUB = 32  # skipped group member: answer a NaN stand-in shaped like its last output
_LIKE = 64  # computing group member: remember its output's shape for the stand-in
_SKIP = _REUSE | _FORECAST | _STUB

#: One branch's action at one step: (flags, outputs the answer reads, earlier outputs kept
#: when the step starts, forecast weights over the outputs read, oldest first).
Action = tuple[int, int, int, tuple[float, ...]]

ScheduleLike = Schedule | Mapping[str, Any] | str | Path


def actions_for(row: tuple[int, ...], orders: tuple[int, ...] | None = None) -> list[Action]:
    """The action of each step for one branch (see :data:`Action`).

    An output is stored only when a later skipped step reads it, and dropped (``_DROP``) when
    the first step that no longer reads it starts. Dropping and choosing the outputs a step
    reads happen once per model evaluation, before the branches run, so the wrapper itself
    never counts: under ``torch.compile`` no stored-output count becomes a guard.
    """
    acts: list[Action] = []
    present = 0  # outputs stored when the step starts: kept before the last, plus its own
    for skip, need, weights, hold in step_plan(row, orders):
        if skip:
            flags = _FORECAST if weights else _REUSE
            keep = max(need, hold)
        else:
            flags = _STORE if hold else 0
            keep = max(hold - 1, 0)  # the output of this step joins them
        if keep < present:
            flags |= _DROP
        acts.append((flags, need, keep, weights))
        present = keep + (1 if flags & _STORE else 0)
    return acts


def member_actions(row: tuple[int, ...]) -> list[Action]:
    """The actions of a group member (see :class:`~smoothcache.adapter.Branch`): compute with
    its leader, remembering its output's shape; stand in for it at the leader's skipped steps."""
    return [((_LIKE if flag else _STUB), 0, 0, ()) for flag in row]


@dataclass(frozen=True)
class CacheStats:
    """What a session did: per-branch counts, steps and passes seen, cache memory.

    ``reused`` counts every skipped branch call answered from the cache, ``forecast`` those of
    them answered by a forecast (order above 0). ``fallbacks`` counts skipped steps that
    computed instead because the stored outputs were missing or their input shape differed
    (e.g. the batch size changed between steps). ``peak_cache_bytes`` bounds from above the
    bytes the stored outputs ever held (checked once per model evaluation).
    """

    computed: dict[str, int]
    reused: dict[str, int]
    fallbacks: dict[str, int]
    steps: int
    passes: int
    generations: int
    cache_bytes: int
    peak_cache_bytes: int
    forecast: dict[str, int] = field(default_factory=dict)

    @property
    def total_computed(self) -> int:
        """Branch calls that ran the branch."""
        return sum(self.computed.values())

    @property
    def total_reused(self) -> int:
        """Branch calls answered from the cache."""
        return sum(self.reused.values())

    @property
    def reuse_fraction(self) -> float:
        """Fraction of branch calls answered from the cache (0 when nothing ran)."""
        total = self.total_computed + self.total_reused
        return self.total_reused / total if total else 0.0


def _branch_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The ``forward`` of every scheduled branch module, bound to it as an instance attribute.

    One function for all branches, with the state in the module's own attributes (``_sc_*``):
    under ``torch.compile`` a regionally compiled block then shares its graphs with every other
    block in the same step pattern, and guards are on values, never on per-block closures.
    """
    state = self.__dict__  # plain dict access: nn.Module.__setattr__ costs microseconds
    if state["_sc_ran"]:
        raise state["_sc_session"]._called_twice(self)
    state["_sc_ran"] = True
    action = state["_sc_action"]
    if action & _SKIP:
        value = _answer(state, action, input_shape(args, kwargs))
        if value is not None:
            return value
        state["_sc_fell_back"] = True
        state["_sc_stored"] = []
    elif action & _NO_CLOCK:
        raise state["_sc_session"]._no_clock(self)
    output = state["_sc_original"](*args, **kwargs)
    if action & _LIKE:
        state["_sc_like"] = (input_shape(args, kwargs), like(output))
    if action & _STORE:
        shape = input_shape(args, kwargs)
        if state["_sc_shape"] == shape:  # the older outputs a later step reads are kept
            state["_sc_stored"] = [*state["_sc_stored"], output]
        else:  # none, or computed from inputs of another shape
            state["_sc_stored"] = [output]
        state["_sc_shape"] = shape
    return output


def _answer(state: dict[str, Any], action: int, input_shape: Any) -> Any:
    """The stored or forecast output of a skipped step, or ``None`` if it cannot be given.

    ``None`` when fewer outputs are stored than the answer reads (a new generation, a fallback
    before) or they were computed from inputs of another shape; the caller then computes.
    """
    if action & _STUB:
        like = state["_sc_like"]
        return None if like is None or like[0] != input_shape else stand_in(like[1])
    read = state["_sc_read"]  # chosen before the evaluation: [] if too few are stored
    if not read or state["_sc_shape"] != input_shape:
        return None
    if action & _FORECAST:
        return combine(read, state["_sc_weights"])
    return read[-1]


# While a fast path's first call runs in the shadow check (rarely), the ``input_shape`` each
# branch was asked with, by ``id(module)``; ``_checking`` counts checks in progress, so the
# per-call path pays one global read otherwise.
_asked: dict[int, Any] = {}
_checking = 0


def reused_output(module: nn.Module, input_shape: Any) -> Any:
    """For adapter fast paths: the output to substitute for ``module`` at this step, else ``None``.

    A block forward that an adapter supplies (see :meth:`Adapter.fast_forwards`) calls this
    *before* preparing a branch's input, with the shape that input will have. When it returns
    an output (reused or forecast) the block skips the input preparation and the branch; when it
    returns ``None`` the block prepares the input and calls the branch module as usual, whose
    wrapper then computes (and counts a fallback if this was a skipped step). Unscheduled
    modules always get ``None``.
    """
    state = module.__dict__
    action = state.get("_sc_action", 0)
    if _checking:  # a fast path's first call is being checked: keep what it asked
        _asked[id(module)] = input_shape
    if action & _SKIP:
        value = _answer(state, action, input_shape)
        if value is not None:
            state["_sc_ran"] = True
            return value
    return None


def _fast_block_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block forward from the adapter, checked once against the block's own forward.

    The first call of a session is step 0, where every branch computes. There the block's own
    forward runs (the real call: its result is returned, its exceptions propagate), recording
    each branch's input and output; then the adapter's forward runs as a shadow, with each
    branch replaying its recorded output and its input (and the ``input_shape`` it gave
    :func:`reused_output`) compared bit for bit. Branches compute once. If anything differs or
    the adapter's forward raises, it does not reproduce this block, which then keeps its own
    forward with a warning rather than silently changing the model's output.

    A block with forward hooks on any of its submodules (or global forward hooks) keeps its own
    forward without a check: the fast path would change when those hooks fire, and the shadow
    run would fire them twice.
    """
    if self._sc_checked or torch.compiler.is_compiling():
        return self._sc_fast(self, *args, **kwargs)
    if _hooked(self):
        self._sc_checked = True
        self._sc_fast = _own_forward
        return self._sc_block_original(*args, **kwargs)
    records: dict[int, list[tuple[tuple[Any, ...], dict[str, Any], Any]]] = {}
    branches = self._sc_branches
    for module in branches:
        module.forward = types.MethodType(_recording_forward(records), module)
    try:
        expected = self._sc_block_original(*args, **kwargs)
    finally:
        for module in branches:
            module.forward = types.MethodType(_branch_forward, module)
    self._sc_checked = True
    for module in branches:
        module.forward = types.MethodType(_replaying_forward(records), module)
    global _checking
    _checking += 1
    try:
        got = self._sc_fast(self, *args, **kwargs)
        left = [type(m).__name__ for m in branches if records.get(id(m))]
        problem = f"{', '.join(left)} called less often" if left else ""
        if not problem and not identical(got, expected):
            problem = "block output"
    except _Mismatch as exc:
        problem = str(exc)
    except Exception as exc:  # the block's own forward ran on these inputs: the fast one is wrong
        problem = f"its forward raised {exc!r}"
    finally:
        _checking -= 1
        for module in branches:
            module.forward = types.MethodType(_branch_forward, module)
            _asked.pop(id(module), None)
    if problem:
        warnings.warn(
            f"smoothcache: the fast path of adapter {self._sc_session.adapter.name!r} does not "
            f"reproduce this {type(self).__name__} ({problem}); it keeps the block's own "
            "forward (correct, without skipping input preparation)",
            RuntimeWarning,
            stacklevel=2,
        )
        self._sc_fast = _own_forward
    return expected


class _Mismatch(Exception):
    """The adapter's block forward called a branch differently from the block's own forward."""


def _hooked(block: nn.Module) -> bool:
    """Whether forward hooks would observe the inside of ``block`` (its own hooks do not count)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in block.modules() if m is not block)


def _recording_forward(records: dict[int, list[Any]]) -> Callable[..., Any]:
    def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = _branch_forward(module, *args, **kwargs)
        records.setdefault(id(module), []).append((args, kwargs, output))
        return output

    return forward


def _replaying_forward(records: dict[int, list[Any]]) -> Callable[..., Any]:
    def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        name = type(module).__name__
        queue = records.get(id(module))
        if not queue:
            raise _Mismatch(f"{name} called more often by the adapter's forward")
        seen_args, seen_kwargs, output = queue.pop(0)
        same_kwargs = seen_kwargs.keys() == kwargs.keys() and all(
            identical(kwargs[k], seen_kwargs[k]) for k in kwargs
        )
        if not (identical(list(args), list(seen_args)) and same_kwargs):
            raise _Mismatch(f"input of {name}")
        asked = _asked.pop(id(module), None)
        if asked is not None and asked != input_shape(args, kwargs):
            raise _Mismatch(
                f"input_shape {tuple(asked)} given to reused_output for {name}, whose input "
                f"has shape {tuple(input_shape(args, kwargs) or ())}"
            )
        return output

    return forward


def _own_forward(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return block._sc_block_original(*args, **kwargs)


class Session:
    """One application of a schedule to one model; undone by :meth:`disable`.

    Create it with :func:`enable` or :func:`enabled`. ``model`` is the denoiser module the
    adapter unwrapped, ``branches`` the scheduled branches in execution order.

    A branch module's wrapper reads only its own action for this step and its stored output.
    Everything else runs once per model evaluation in the timestep source's pre-hook: counting,
    byte accounting, the step clock, and swapping each module's action and stored output for
    the step and pass about to run. That keeps the per-branch path short in eager mode and free
    of Python counters under ``torch.compile``, where recompilations are then bounded by the
    number of distinct step patterns of the schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: Adapter,
        schedule: Schedule,
        calls_per_step: int | None = None,
        fast_path: bool = True,
        *,
        max_calls_per_step: int | None = None,
        holder: Any = None,
        extra_roots: Sequence[tuple[str, nn.Module]] = (),
    ) -> None:
        self.model = model
        self.fast_path = fast_path
        self.adapter = adapter
        #: the denoisers this session caches, by attribute name in the pipeline ("" for the
        #: first): one step clock for all (Wan 2.2's second transformer takes over partway)
        self.roots: list[tuple[str, nn.Module]] = [("", model), *extra_roots]
        self._sources: list[tuple[nn.Module, str, Callable[..., Any]]] = []
        branches, self._modules = [], []
        for name, root in self.roots:
            planned, found, modules, (path, read) = plan_model(root, adapter, schedule)
            branches += [prefixed_branch(b, name) for b in found]
            self._modules += modules
            self._sources.append((root, path, read))
        #: the schedule applied: keys named after another adapter's kinds read as this model's
        self.schedule = schedule = planned
        self._branches = branches
        everything = (1,) * schedule.num_steps
        rows = [
            member_actions(schedule.row_for(b.kind, b.block) or everything)
            if b.leader is not None
            else actions_for(
                schedule.row_for(b.kind, b.block) or everything,
                schedule.orders_for(b.kind, b.block),
            )
            for b in self._branches
        ]
        #: the scheduled branches, in execution order (unscheduled ones are wrapped to compute)
        self.branches = [b for b in self._branches if schedule.row_for(b.kind, b.block)]
        n = len(self._branches)
        # One plan per distinct step pattern; steps share the plan objects.
        unique: dict[tuple[Action, ...], int] = {}
        self._plan_of_step = [unique.setdefault(plan, len(unique)) for plan in zip(*rows)]
        self._plans = list(unique)
        # Per plan: branches that skip (fallbacks to check), and branches whose stored outputs
        # may change during the evaluation (outputs to choose or drop, bytes to recount).
        # Compute-only branches: neither.
        self._reusing = [[i for i, a in enumerate(p) if a[0] & _SKIP] for p in self._plans]
        self._touched = [[i for i, a in enumerate(p) if a[0]] for p in self._plans]
        self._weights: dict[tuple[tuple[float, ...], torch.device, torch.dtype], Any] = {}
        self._current = -1  # plan index of the evaluation in progress; -1 between evaluations
        self._loaded = -1  # plan index whose actions the modules hold
        self._pass = 0
        self._values: list[list[Any]] = [[[] for _ in range(n)]]  # per pass: stored outputs
        self._shapes: list[list[Any]] = [[None] * n]
        self._sizes: list[list[int]] = [[0] * n]
        self._call_marks = 0
        self._fallbacks = [0] * n
        # Per branch, the calls that computed, skipped and forecast: only branches that ran in
        # an evaluation count (a block skipped by skip-layer guidance, another denoiser's).
        self._done = [[0, 0, 0] for _ in range(n)]
        paths = {b.path: i for i, b in enumerate(self._branches)}
        # whose call says whether a branch ran: its own, or its group's leader's
        self._ran_by = [paths.get(b.leader, i) for i, b in enumerate(self._branches)]
        self._forecast_fallbacks = [0] * n  # of the fallbacks, those at forecast steps
        self._last_step = [-1]  # per pass: the last step it ran in this generation
        self.cache_bytes = 0
        self.peak_cache_bytes = 0
        self.clock = StepClock(
            schedule.num_steps,
            calls_per_step,
            on_generation=self._clear,
            max_calls_per_step=max_calls_per_step,
        )
        self._patches = Patches(owner=f"session with adapter {adapter.name!r}")
        self._restoring = False
        self.active = False
        try:
            self._install(holder)
        except BaseException:
            self._patches.undo()
            raise
        self.active = True
        logger.debug("smoothcache enabled: %d branches, adapter %s", n, adapter.name)

    # -- installation ----------------------------------------------------------------------

    def _install(self, holder: Any) -> None:
        sources = [root.get_submodule(path) for root, path, _ in self._sources]
        self._patches.hold([*(root for _, root in self.roots), *sources, *self._modules])
        self._watches = [
            EvaluationWatch(
                self._patches,
                root,
                TimestepSource(path, read),
                self.clock,
                self._branch_calls,
                self.adapter.name,
                before_tick=self._account,
                after_tick=self._select,
                after_call=self._after_call,
                on_failure=self._drop_failed,
            )
            for root, path, read in self._sources
        ]
        watch_runs(self._patches, holder, self.model, self._new_run)
        for module in self._modules:
            self._patches.set_attributes(
                module,
                _sc_session=self,
                _sc_original=module.forward,
                _sc_action=_NO_CLOCK,
                _sc_weights=(),
                _sc_stored=[],
                _sc_read=[],
                _sc_shape=None,
                _sc_fell_back=False,
                _sc_ran=False,
                _sc_like=None,
            )
            self._patches.replace_forward(module, types.MethodType(_branch_forward, module))
        if not self.fast_path:
            return
        reusing = {i for plan in self._reusing for i in plan}  # reuse at some step
        for name, root in self.roots:
            for path, forward in call_adapter(self.adapter, "fast_forwards", root).items():
                block = root.get_submodule(path)
                prefix = f"{name}.{path}." if name else f"{path}."
                members = [i for i, b in enumerate(self._branches) if b.path.startswith(prefix)]
                if reusing.isdisjoint(members):  # nothing to skip: keep its own forward
                    continue
                if "forward" in block.__dict__:
                    # another library wrapped this block's forward (diffusers' hooks, e.g. the
                    # input split of context parallelism; accelerate): the adapter's forward
                    # would bypass that wrapper, so the block keeps it
                    logger.info("block %s keeps its wrapped forward: no fast path", path)
                    continue
                inside = [self._modules[i] for i in members]
                self._patches.set_attributes(
                    block,
                    _sc_session=self,
                    _sc_fast=forward,
                    _sc_block_original=block.forward,
                    _sc_branches=inside,
                    _sc_checked=False,
                )
                self._patches.replace_forward(block, types.MethodType(_fast_block_forward, block))

    # -- once per model evaluation -----------------------------------------------------------

    def _branch_calls(self) -> int:
        """A number that changes when a branch ran since the last evaluation started."""
        if any(module.__dict__["_sc_ran"] for module in self._modules):
            self._call_marks += 1
        return self._call_marks

    def _select(self) -> None:
        """After a tick: give each branch its action for this step and its pass's output."""
        clock = self.clock
        index = self._plan_of_step[clock.step]
        modules = self._modules
        if clock.pass_idx != self._pass:
            self._swap_pass(clock.pass_idx)
        if 0 <= self._last_step[self._pass] < clock.step - 1:
            self._forget_pass()  # this pass missed steps: what it stored is stale
        self._last_step[self._pass] = clock.step
        if clock.pass_idx == 0 and len(self._values) > 1:
            self._trim_parked(index, clock.step)
        plan = self._plans[index]
        if index != self._loaded:
            for i, module in enumerate(modules):  # _DROP is done here, the wrapper never sees it
                module.__dict__["_sc_action"] = plan[i][0] & ~_DROP
            self._loaded = index
        for i in self._touched[index]:
            state = modules[i].__dict__
            flags, need, keep, weights = plan[i]
            stored = state["_sc_stored"]
            if len(stored) > keep:
                stored = state["_sc_stored"] = stored[len(stored) - keep :] if keep else []
            if flags & _SKIP:
                state["_sc_read"] = stored[len(stored) - need :] if len(stored) >= need else []
                if flags & _FORECAST:
                    state["_sc_weights"] = self._weights_for(weights, stored)
            elif state["_sc_read"]:  # the step after a skipped one: let go of what it read
                state["_sc_read"] = []
        for module in modules:
            module.__dict__["_sc_ran"] = False
        self._current = index

    def _after_call(self) -> None:
        """A model call returned: at the schedule's last step, the outputs this pass read
        have had their last use (no later step reads them), so they go now rather than when
        the next generation starts."""
        if self._current < 0 or self.clock.step != self.clock.num_steps - 1:
            return
        for i in self._reusing[self._current]:
            self._modules[i].__dict__.update(_sc_stored=[], _sc_read=[])

    def _weights_for(self, weights: tuple[float, ...], stored: list[Any]) -> Any:
        """Forecast weights as 0-dim tensors on the stored outputs' device, made once each.

        As tensors they are inputs of a compiled graph, not constants it guards on. Their dtype
        is float32 (float64 for float64 outputs): a 0-dim tensor does not change the dtype of
        the output it scales, and bfloat16 would round weights such as 1/3.
        """
        tensor = first_tensor(stored[-1]) if stored else None
        if tensor is None:
            return ()  # nothing stored: the wrapper falls back before reading weights
        dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        key = (weights, tensor.device, dtype)
        found = self._weights.get(key)
        if found is None:
            found = tuple(torch.full((), w, dtype=dtype, device=tensor.device) for w in weights)
            self._weights[key] = found
        return found

    def _swap_pass(self, new: int) -> None:
        """Park the modules' stored outputs under the current pass and load pass ``new``'s."""
        n = len(self._modules)
        while len(self._values) <= new:
            self._values.append([[] for _ in range(n)])
            self._shapes.append([None] * n)
            self._sizes.append([0] * n)
            self._last_step.append(-1)
        old_values, old_shapes = self._values[self._pass], self._shapes[self._pass]
        values, shapes = self._values[new], self._shapes[new]
        for i, module in enumerate(self._modules):
            state = module.__dict__
            old_values[i], old_shapes[i] = state["_sc_stored"], state["_sc_shape"]
            # the modules hold the running pass's outputs; its parked slot keeps none, or an
            # output dropped while the pass runs would stay alive there, uncounted
            state["_sc_stored"], values[i] = values[i], []
            state["_sc_shape"] = shapes[i]
        self._pass = new

    def _trim_parked(self, index: int, step: int) -> None:
        """A step starts (its first pass runs): the parked passes let go of what they no
        longer need, now rather than when they next run, which may be never (the last step,
        the end of a guidance interval).

        A parked pass that ran at the previous step keeps what this step keeps; one that did
        not will forget everything when it resumes (:meth:`_forget_pass`), so it drops it now.
        """
        plan, touched = self._plans[index], self._touched[index]
        for p in range(1, len(self._values)):
            values, sizes = self._values[p], self._sizes[p]
            stale = self._last_step[p] < step - 1
            for i in range(len(values)) if stale else touched:
                keep = 0 if stale else plan[i][2]
                stored = values[i]
                if len(stored) > keep:
                    values[i] = stored[len(stored) - keep :] if keep else []
                    size = nbytes(values[i])
                    self.cache_bytes -= sizes[i] - size
                    sizes[i] = size

    def _forget_pass(self) -> None:
        """Drop the current pass's stored outputs: its skipped steps compute until it stores.

        A pass that did not run at some steps (guidance as two calls at some steps only) did
        not store what it would have computed there; answering from its older outputs would
        be silently stale.
        """
        sizes = self._sizes[self._pass]
        for i, module in enumerate(self._modules):
            module.__dict__.update(_sc_stored=[], _sc_read=[], _sc_shape=None, _sc_like=None)
            self.cache_bytes -= sizes[i]
            sizes[i] = 0

    def _drop_failed(self) -> None:
        """An evaluation raised: forget it and the generation it belonged to.

        Its counts are not folded in, and the next model call starts a new generation (the
        exception already told the caller that this run is over).
        """
        self._current = -1
        for module in self._modules:
            module.__dict__["_sc_fell_back"] = False
        self.clock.reset()
        self._clear()

    def _new_run(self) -> None:
        """A pipeline run starts (its scheduler's ``set_timesteps`` was called)."""
        for watch in self._watches:
            watch.check_failed()
        self._account()
        self.clock.finish()  # the previous run stopped partway: a StepCountError
        self.clock.reset()

    def _pending(self) -> tuple[list[int], int, int]:
        """Fallbacks, bytes held and bytes dropped by the evaluation in progress (read-only)."""
        fallbacks: list[int] = []
        held, dropped = self.cache_bytes, 0
        if self._current >= 0:
            modules, sizes = self._modules, self._sizes[self._pass]
            fallbacks = [i for i in self._reusing[self._current] if modules[i]._sc_fell_back]
            for i in self._touched[self._current]:
                size = nbytes(modules[i].__dict__["_sc_stored"])
                if size < sizes[i]:
                    dropped += sizes[i] - size
                held += size - sizes[i]
        return fallbacks, held, dropped

    def _account(self) -> None:
        """Fold the evaluation that just ended into the counts; runs once per evaluation."""
        index = self._current
        if index < 0:
            return
        fallbacks, held, dropped = self._pending()
        modules, sizes = self._modules, self._sizes[self._pass]
        plan = self._plans[index]
        for i in fallbacks:
            self._fallbacks[i] += 1
            if plan[i][0] & _FORECAST:
                self._forecast_fallbacks[i] += 1
            modules[i].__dict__["_sc_fell_back"] = False
        for i in self._touched[index]:
            sizes[i] = nbytes(modules[i].__dict__["_sc_stored"])
        self._tally(index, self._done)
        # An entry dropped during the evaluation was held until its branch ran; counting it
        # with what is held now bounds the peak from above (exact when drops follow stores).
        self.peak_cache_bytes = max(self.peak_cache_bytes, held + dropped)
        self.cache_bytes = held
        self._current = -1

    def _tally(self, index: int, done: list[list[int]]) -> None:
        """Add the evaluation of plan ``index`` to ``done``: each branch that ran (a group
        member runs when its leader does) as computed or skipped (and forecast) by its plan."""
        modules, ran_by, plan = self._modules, self._ran_by, self._plans[index]
        for i, leader in enumerate(ran_by):
            if modules[leader].__dict__["_sc_ran"]:
                flags = plan[i][0]
                done[i][1 if flags & _SKIP else 0] += 1
                done[i][2] += 1 if flags & _FORECAST else 0

    def _counts(self) -> tuple[list[int], list[int], list[int], list[int], int, int]:
        """Computed, reused, forecast and fallback counts per branch, bytes held and peak."""
        pending, held, dropped = self._pending()
        done = [list(counts) for counts in self._done]
        if self._current >= 0:  # the evaluation in progress counts too
            self._tally(self._current, done)
        computed, reused, forecast = (list(column) for column in zip(*done))
        fallbacks = list(self._fallbacks)
        forecast_fallbacks = list(self._forecast_fallbacks)
        for i in pending:
            fallbacks[i] += 1
            if self._plans[self._current][i][0] & _FORECAST:
                forecast_fallbacks[i] += 1
        for i, extra in enumerate(fallbacks):
            computed[i] += extra
            reused[i] -= extra
            forecast[i] -= forecast_fallbacks[i]
        peak = max(self.peak_cache_bytes, held + dropped)
        return computed, reused, forecast, fallbacks, held, peak

    def _clear(self) -> None:
        """Drop every stored output (a new generation starts, or the session resets)."""
        for items in self._values:
            items[:] = [[] for _ in items]
        for items in self._shapes:
            items[:] = [None] * len(items)
        for sizes in self._sizes:
            sizes[:] = [0] * len(sizes)
        self._last_step[:] = [-1] * len(self._last_step)
        for module in self._modules:
            module.__dict__.update(
                _sc_stored=[], _sc_read=[], _sc_shape=None, _sc_action=_NO_CLOCK, _sc_like=None
            )
        self._loaded = -1
        self.cache_bytes = 0

    def _called_twice(self, module: nn.Module) -> AdapterError:
        path = self._branches[self._modules.index(module)].path
        return AdapterError(
            f"branch {path!r} was called twice in one model evaluation (feed-forward chunking, "
            "or a block that runs a branch per chunk or per modality?). One cached output "
            "cannot stand for several calls; turn that feature off (e.g. diffusers' "
            "disable_forward_chunking()) or leave this branch out of the schedule"
        )

    def _no_clock(self, module: nn.Module) -> AdapterError:
        path = self._branches[self._modules.index(module)].path
        return AdapterError(
            f"adapter {self.adapter.name!r}: branch {path!r} ran before the "
            f"timestep source {self._sources[0][1] or '<root>'!r} was called, so the step is "
            "unknown. "
            "The caller bypasses that module's __call__ (hooks do not fire); the adapter must "
            "name a module that is called through __call__ once per evaluation"
        )

    # -- public ----------------------------------------------------------------------------

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counts since the session started (including the last evaluation)."""
        computed, reused, forecast, fallbacks, held, peak = self._counts()
        scheduled = {b.path for b in self.branches}
        shown = [(i, b.path) for i, b in enumerate(self._branches) if b.path in scheduled]

        def by_path(values: list[int]) -> dict[str, int]:
            return {path: values[i] for i, path in shown}

        return CacheStats(
            computed=by_path(computed),
            reused=by_path(reused),
            forecast=by_path(forecast),
            fallbacks=by_path(fallbacks),
            steps=self.clock.steps_seen,
            passes=self.clock.max_passes,
            generations=self.clock.generations,
            cache_bytes=held,
            peak_cache_bytes=peak,
        )

    def reset(self) -> None:
        """Drop the cache and start over: the next model call is step 0 of a new generation.

        Call it between runs of a custom sampling loop whose timesteps could continue the
        previous run's (pipeline runs are told apart on their own). After the session ended
        there is nothing to reset and it does nothing.
        """
        if not self.active:
            return
        self._account()
        self.clock.reset()
        self._clear()
        for watch in self._watches:
            watch.forget()

    def disable(self) -> None:
        """Restore the model exactly, then raise if the last generation stopped partway.

        Calling it again is a no-op, and it completes a restore that something interrupted.
        Called while an exception propagates (in a ``finally:`` or ``except`` block), it
        restores the model and lets that exception win: a run cut short by it is not a second
        error (the step-count problem is added to the exception as a note).
        """
        if not self.active:
            return
        self._restore()
        in_flight = sys.exc_info()[1]
        if in_flight is None:
            self.clock.finish()
            return
        try:
            self.clock.finish()
        except StepCountError as exc:
            note = f"smoothcache: on disable(), {exc}"
            if hasattr(in_flight, "add_note"):
                in_flight.add_note(note)
            else:
                logger.warning(note)

    def _restore(self) -> None:
        """Drop the cache, then undo every change, even if an interrupt arrives meanwhile
        (it propagates once the model is restored)."""
        with interrupts_deferred():
            try:
                if not self._restoring:  # once: clearing sets attributes that undo then removes
                    self._restoring = True
                    self._account()
                    self._clear()
            finally:
                try:
                    self._patches.undo()
                finally:
                    self.active = self._patches.pending
                    if not self.active:  # no cycle through the session keeps the model alive
                        self._watches = []
                        self.clock.detach()
        logger.debug("smoothcache disabled on %s", type(self.model).__name__)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.disable()
        elif self.active:
            self._restore()

    def __repr__(self) -> str:
        state = "active" if self.active else "disabled"
        return (
            f"<smoothcache.Session {state} adapter={self.adapter.name!r} "
            f"branches={len(self.branches)} steps={self.schedule.num_steps}>"
        )


def enable(
    model: Any,
    schedule: ScheduleLike,
    adapter: str | Adapter | None = None,
    *,
    calls_per_step: int | None = None,
    fast_path: bool = True,
    max_calls_per_step: int | None = None,
) -> Session:
    """Apply ``schedule`` to ``model`` until :meth:`Session.disable` is called.

    ``model`` is a denoiser module or an object holding one (a diffusers pipeline). ``schedule``
    is a :class:`Schedule`, a dict, a JSON path or a shipped name. ``adapter`` forces an adapter
    by name. ``calls_per_step`` fixes how many model calls make one denoising step, which
    avoids reading the timestep's value (a host sync when it lives on a GPU) on every call.
    ``fast_path=False`` turns off the adapter's block forwards that skip a reused branch's input
    preparation (the module-level wrappers alone give the same outputs, a little slower); they
    are installed only on blocks with a branch that the schedule reuses at some step.
    ``max_calls_per_step`` bounds the model calls of one step (each keeps its own cache; by
    default 8).

    Every check (arguments, schedule, adapter, keys) happens before the model is touched: on
    any error the model is exactly as it was.
    """
    check_arguments(calls_per_step=calls_per_step, max_calls_per_step=max_calls_per_step)
    if not isinstance(fast_path, bool):
        raise ArgumentError(f"fast_path must be True or False, found {fast_path!r}")
    schedule = as_schedule(schedule)
    root, chosen = resolve(model, adapter)
    return Session(
        root,
        chosen,
        schedule,
        calls_per_step,
        fast_path,
        max_calls_per_step=max_calls_per_step,
        holder=model,
        extra_roots=second_denoisers(model, root, chosen),
    )


def check_arguments(**counts: Any) -> None:
    """Refuse count arguments that are neither ``None`` nor a positive int."""
    for name, value in counts.items():
        if value is not None:
            check_count(name, value, "model calls per denoising step, e.g. 2 for guidance")


@contextmanager
def enabled(
    model: Any,
    schedule: ScheduleLike,
    adapter: str | Adapter | None = None,
    *,
    calls_per_step: int | None = None,
    fast_path: bool = True,
    max_calls_per_step: int | None = None,
) -> Iterator[Session]:
    """Context manager form of :func:`enable`: the model is restored exactly on exit.

    On a normal exit, a sampler run that stopped before the schedule's last step is an error
    (raised after the model is restored); on an exception the model is restored and the
    exception propagates unchanged.
    """
    session = enable(
        model,
        schedule,
        adapter,
        calls_per_step=calls_per_step,
        fast_path=fast_path,
        max_calls_per_step=max_calls_per_step,
    )
    with session:
        yield session
