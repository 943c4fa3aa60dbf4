"""Adapter fast paths: block forwards that skip a reused branch's input preparation, trusted
only after a check against the block's own forward.

An adapter may supply a block forward (:meth:`Adapter.fast_forwards`) that asks
:func:`~smoothcache.engine.hotpath.reused_output` for each branch's answer before preparing its
input (the norm and modulation a reused branch does not need). A mistake there would change the
model's output silently, so the first call of every such block checks it: see
:func:`fast_block_forward`.
"""

from __future__ import annotations

import logging
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

import smoothcache.engine.hotpath as hotpath
from smoothcache.adapter import Branch
from smoothcache.engine.outputs import identical, input_shape
from smoothcache.patching import Patches
from smoothcache.registry import call_adapter

logger = logging.getLogger(__name__)


class _Mismatch(Exception):
    """The adapter's block forward called a branch differently from the block's own forward."""


def fast_block_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
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
        self._sc_fast = own_forward
        return self._sc_block_original(*args, **kwargs)
    records: dict[int, list[tuple[tuple[Any, ...], dict[str, Any], Any]]] = {}
    branches = self._sc_branches
    _bind(branches, _recording_forward(records))
    try:
        expected = self._sc_block_original(*args, **kwargs)
    finally:
        _bind(branches, hotpath.branch_forward)
    self._sc_checked = True
    problem = _shadow_run(self, branches, records, expected, args, kwargs)
    if problem:
        warnings.warn(
            f"smoothcache: the fast path of adapter {self._sc_session.adapter.name!r} does not "
            f"reproduce this {type(self).__name__} ({problem}); it keeps the block's own "
            "forward (correct, without skipping input preparation)",
            RuntimeWarning,
            stacklevel=2,
        )
        self._sc_fast = own_forward
    return expected


def _shadow_run(
    block: nn.Module,
    branches: list[nn.Module],
    records: dict[int, list[Any]],
    expected: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str:
    """Run the adapter's forward with the branches replaying ``records``; what differs, if any."""
    _bind(branches, _replaying_forward(records))
    outer = hotpath.asked
    hotpath.asked = {} if outer is None else outer
    try:
        got = block._sc_fast(block, *args, **kwargs)
        left = [type(m).__name__ for m in branches if records.get(id(m))]
        problem = f"{', '.join(left)} called less often" if left else ""
        if not problem and not identical(got, expected):
            problem = "block output"
    except _Mismatch as exc:
        problem = str(exc)
    except Exception as exc:  # the block's own forward ran on these inputs: the fast one is wrong
        problem = f"its forward raised {exc!r}"
    finally:
        for module in branches:
            hotpath.asked.pop(id(module), None)
        hotpath.asked = outer
        _bind(branches, hotpath.branch_forward)
    return problem


def _bind(modules: list[nn.Module], forward: Callable[..., Any]) -> None:
    for module in modules:
        module.forward = types.MethodType(forward, module)


def _hooked(block: nn.Module) -> bool:
    """Whether forward hooks would observe the inside of ``block`` (its own hooks do not count)."""
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in block.modules() if m is not block)


def _recording_forward(records: dict[int, list[Any]]) -> Callable[..., Any]:
    def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = hotpath.branch_forward(module, *args, **kwargs)
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
        asked = (hotpath.asked or {}).pop(id(module), None)  # set by the shadow run
        if asked is not None and asked != input_shape(args, kwargs):
            raise _Mismatch(
                f"input_shape {tuple(asked)} given to reused_output for {name}, whose input "
                f"has shape {tuple(input_shape(args, kwargs) or ())}"
            )
        return output

    return forward


def own_forward(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The block's own forward: what a block keeps when its fast path is not trusted."""
    return block._sc_block_original(*args, **kwargs)


def install_fast_paths(
    session: Any,
    patches: Patches,
    branches: list[Branch],
    modules: list[nn.Module],
    skipping: set[int],
) -> None:
    """Give each block with a branch that some step skips (``skipping``, indices into
    ``branches``) the adapter's forward, through ``patches``."""
    for name, root in session.roots:
        for path, forward in call_adapter(session.adapter, "fast_forwards", root).items():
            block = root.get_submodule(path)
            prefix = f"{name}.{path}." if name else f"{path}."
            members = [i for i, b in enumerate(branches) if b.path.startswith(prefix)]
            if skipping.isdisjoint(members):  # nothing to skip: keep its own forward
                continue
            if "forward" in block.__dict__:
                # another library wrapped this block's forward (diffusers' hooks, e.g. the
                # input split of context parallelism; accelerate): the adapter's forward
                # would bypass that wrapper, so the block keeps it
                logger.info("block %s keeps its wrapped forward: no fast path", path)
                continue
            patches.set_attributes(
                block,
                _sc_session=session,
                _sc_fast=forward,
                _sc_block_original=block.forward,
                _sc_branches=[modules[i] for i in members],
                _sc_checked=False,
            )
            patches.replace_forward(block, types.MethodType(fast_block_forward, block))
