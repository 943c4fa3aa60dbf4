"""Reversible changes to a user's modules, and the record of which modules smoothcache holds.

Every change smoothcache makes to a model goes through here, so leaving a session restores the
exact prior state: the same ``forward`` attribute (or none), the same hooks.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from smoothcache.errors import AlreadyEnabledError

_HELD: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_MISSING = object()


class Patches:
    """Changes made to modules, undone in reverse order by :meth:`undo`."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._undo: list[Callable[[], None]] = []
        self._held: list[nn.Module] = []

    def hold(self, modules: Iterable[nn.Module]) -> None:
        """Mark modules as in use; a module already held by another session is an error."""
        modules = list(modules)
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

    def replace_forward(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        """Set ``module.forward`` to ``forward`` as an instance attribute, reversibly."""
        previous = module.__dict__.get("forward", _MISSING)

        def undo() -> None:
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous

        module.forward = forward
        self._undo.append(undo)

    def set_attributes(self, module: nn.Module, **values: Any) -> None:
        """Set plain instance attributes on ``module``; undo restores or removes each one."""
        state = module.__dict__
        previous = {name: state.get(name, _MISSING) for name in values}

        def undo() -> None:
            for name, value in previous.items():
                if value is _MISSING:
                    state.pop(name, None)
                else:
                    state[name] = value

        state.update(values)
        self._undo.append(undo)

    def add_hook(self, handle: RemovableHandle) -> None:
        """Remember a hook handle so :meth:`undo` removes it."""
        self._undo.append(handle.remove)

    def undo(self) -> None:
        """Undo every change, newest first, and release the held modules."""
        while self._undo:
            self._undo.pop()()
        for module in self._held:
            _HELD.pop(module, None)
        self._held.clear()
