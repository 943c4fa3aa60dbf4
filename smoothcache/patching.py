"""Reversible changes to a user's objects, and the record of which modules smoothcache holds.

Every change smoothcache makes to a model (or a pipeline's scheduler) goes through here, so
leaving a session restores the exact prior state: the same ``forward`` attribute (or none), the
same attributes, the same hooks. Three promises rest on this module:

- **Complete restore, whatever interrupts it.** :meth:`Patches.undo` runs each undo step before
  forgetting it, and every step is idempotent, so an undo cut short (a ``KeyboardInterrupt``)
  is finished by calling it again.
- **Atomic enabling.** :meth:`Patches.hold` checks and marks the modules under one lock: of two
  threads enabling the same model at once, exactly one succeeds.
- **Clean copies.** ``copy.deepcopy`` of a changed object (the model, a block, a pipeline that
  holds it) gives a copy as it was before the session: each changed object carries a
  ``__deepcopy__`` that copies it with the changes taken off for the moment of the copy.
"""

from __future__ import annotations

import copy
import functools
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from smoothcache.errors import AlreadyEnabledError

_HELD: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_HOLD_LOCK = threading.Lock()
_MISSING = object()
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


class _Changed:
    """What was changed on one object: each attribute's prior value, and the hooks added."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.previous: dict[str, Any] = {}
        self.hooks: list[RemovableHandle] = []
        #: the ``forward`` smoothcache set, to tell at undo whether someone replaced it since
        self.forward: Any = _MISSING


class Patches:
    """Changes made to objects, undone in reverse order by :meth:`undo`."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._undo: list[Callable[[], None]] = []
        self._held: list[nn.Module] = []
        self._changed: dict[int, _Changed] = {}

    def hold(self, modules: Iterable[nn.Module]) -> None:
        """Mark modules as in use; a module already held by another session is an error.

        The check and the marking happen under one lock, so two threads cannot both hold a
        module.
        """
        modules = list(modules)
        with _HOLD_LOCK:
            for module in modules:
                other = _HELD.get(module)
                if other is not None:
                    raise AlreadyEnabledError(
                        f"smoothcache is already active on this model ({other}, holding a "
                        f"{type(module).__name__}); leave that `with` block or call "
                        "session.disable() before enabling again"
                    )
            for module in modules:
                _HELD[module] = self.owner
                self._held.append(module)

    def _record(self, obj: Any, names: Iterable[str]) -> None:
        """Remember the prior value of each attribute the first time it changes."""
        changed = self._changed.get(id(obj))
        if changed is None:
            changed = self._changed[id(obj)] = _Changed(obj)
            state = obj.__dict__
            changed.previous["__deepcopy__"] = state.get("__deepcopy__", _MISSING)
            state["__deepcopy__"] = functools.partial(self._clean_copy, changed)
            self._undo.append(functools.partial(_put_back, state, "__deepcopy__", changed))
        for name in names:
            if name not in changed.previous:
                changed.previous[name] = obj.__dict__.get(name, _MISSING)

    def replace_forward(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        """Set ``module.forward`` to ``forward`` as an instance attribute, reversibly.

        If another library replaces it in turn while the session lasts (diffusers'
        ``enable_parallelism`` or hooks, accelerate), undo still restores the ``forward`` from
        before the session, which drops that replacement, and warns that it did.
        """
        self.set_attributes(module, forward=forward)
        self._changed[id(module)].forward = forward

    def set_attributes(self, obj: Any, **values: Any) -> None:
        """Set plain instance attributes on ``obj``; undo restores or removes each one."""
        self._record(obj, values)
        changed = self._changed[id(obj)]
        state = obj.__dict__
        for name in values:
            self._undo.append(functools.partial(_put_back, state, name, changed))
        state.update(values)

    def add_hook(self, module: nn.Module, handle: RemovableHandle) -> None:
        """Remember a hook handle on ``module`` so :meth:`undo` removes it (and copies lack it)."""
        self._record(module, ())
        self._changed[id(module)].hooks.append(handle)
        self._undo.append(handle.remove)

    def undo(self) -> None:
        """Undo every change, newest first, and release the held modules.

        Each step runs before it is forgotten and is idempotent: if something interrupts the
        undo, calling it again finishes the job.
        """
        while self._undo:
            self._undo[-1]()
            self._undo.pop()
        self._changed.clear()
        for module in self._held:
            _HELD.pop(module, None)
        self._held.clear()

    def _clean_copy(self, changed: _Changed, memo: dict[int, Any]) -> Any:
        """``copy.deepcopy`` of a changed object: a copy of it as it was before the changes."""
        obj = changed.obj
        state = obj.__dict__
        now = {name: state.get(name, _MISSING) for name in changed.previous}
        hook_dicts = [getattr(obj, name, None) for name in _HOOK_DICTS]
        saved_hooks = [dict(d) if d is not None else None for d in hook_dicts]
        try:
            for name in changed.previous:
                _put_back(state, name, changed)
            for handle in changed.hooks:
                handle.remove()
            return copy.deepcopy(obj, memo)
        finally:
            for name, value in now.items():
                if value is _MISSING:
                    state.pop(name, None)
                else:
                    state[name] = value
            for d, saved in zip(hook_dicts, saved_hooks):
                if d is not None and saved is not None:
                    d.clear()
                    d.update(saved)


def _put_back(state: dict[str, Any], name: str, changed: _Changed) -> None:
    """Restore one attribute to its value before the session (idempotent)."""
    value = changed.previous.get(name, _MISSING)
    if name == "forward":
        current = state.get(name, _MISSING)
        ours = changed.forward  # the engine may rebind it: bound methods compare by == only
        if current is not _MISSING and current != ours and current != value:
            warnings.warn(
                f"smoothcache: the forward of a {type(changed.obj).__name__} was replaced while "
                "smoothcache was enabled (by another library: diffusers' enable_parallelism, "
                "hooks or offloading, accelerate?). Leaving the session restores the forward it "
                "had before the session, which drops that replacement: apply other libraries' "
                "wrappers before smoothcache.enabled(...), or after the session ends",
                RuntimeWarning,
                stacklevel=2,
            )
    if value is _MISSING:
        state.pop(name, None)
    else:
        state[name] = value
