"""Reversible changes to a user's objects, and the record of which modules smoothcache holds.

Every change smoothcache makes to a model (or a pipeline's scheduler) goes through here, so
leaving a session restores the exact prior state: the same ``forward`` attribute (or none), the
same attributes, the same hooks. Three promises rest on this module:

- **Complete restore, whatever interrupts it.** :meth:`Patches.undo` holds back Ctrl-C until it
  is done, and an exception raised inside it (an interrupt from a trace function or another
  thread) is re-raised only after every step has run: each step runs before it is forgotten
  and is idempotent, so the one that was cut short simply runs again.
- **Atomic enabling.** :meth:`Patches.hold` checks and marks the modules under one lock: of two
  threads enabling the same model at once, exactly one succeeds.
- **Clean copies.** ``copy.deepcopy`` of a changed object (the model, a block, a pipeline that
  holds it) gives a copy as it was before the session: each changed object carries a
  ``__deepcopy__`` that copies it with the changes taken off for the moment of the copy.
"""

from __future__ import annotations

import copy
import functools
import logging
import signal
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from smoothcache.errors import AlreadyEnabledError

logger = logging.getLogger(__name__)

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
        self._left: list[Callable[[], None]] = []  # undo steps that failed twice, newest first
        self._held: list[nn.Module] = []
        self._changed: dict[int, _Changed] = {}

    @property
    def pending(self) -> bool:
        """Whether changes remain to undo (an undo step failed; :meth:`undo` retries it)."""
        return bool(self._undo or self._held or self._left)

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
        """Undo every change, newest first, and release the held modules; then re-raise the
        first exception (a ``KeyboardInterrupt``) that arrived meanwhile, if any.

        The restore finishes before an interrupt propagates: a Ctrl-C (``SIGINT`` in the main
        thread) waits until it is done, and an exception raised inside an undo step (a signal
        handler, a trace function, an asynchronous exception of another thread) is kept while
        the step runs again (every step is idempotent) and the rest follow. A step that raises
        twice in a row is left behind with its exception; calling :meth:`undo` again retries it.
        """
        self._undo[:0], self._left = reversed(self._left), []  # retry what failed before
        first: BaseException | None = None
        failed: Any = None  # the step that raised last
        with interrupts_deferred():
            while True:
                try:
                    self._undo_all()
                    break
                except BaseException as exc:  # finish the restore first, raise it after
                    first = exc if first is None else first
                    step = self._undo[-1] if self._undo else None
                    if step is not None and step is failed:  # it fails for real: leave it
                        self._left.append(self._undo.pop())
                        logger.warning("smoothcache: an undo step failed twice: %r", exc)
                    failed = step
        if first is not None:
            raise first

    def _undo_all(self) -> None:
        """Run the undo steps newest first, each before it is forgotten; release the modules."""
        while self._undo:
            self._undo[-1]()
            self._undo.pop()
        self._changed.clear()
        while self._held:
            _HELD.pop(self._held[-1], None)
            self._held.pop()

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


class _HeldInterrupt:
    """The ``SIGINT`` handler while a restore runs: it keeps a Ctrl-C for when the restore ends.

    ``owner`` is the frame of the ``with interrupts_deferred():`` statement. While that frame is
    on the stack the restore is running; once it is not, the holder is stale (its exit was cut
    short before it put the previous handler back, which only a trace function raising at that
    very line can do), and it hands over: a Ctrl-C that reaches a stale holder is delivered at
    once, and the next restore puts the previous handler back.
    """

    def __init__(self, previous: Callable[..., Any], owner: Any) -> None:
        self.previous = previous
        self.owner = owner
        self.caught: tuple[int, Any] | None = None

    def running(self) -> bool:
        """Whether the ``with`` block that installed this holder is still on the stack."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame is self.owner:
                return True
            frame = frame.f_back
        return False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.running():
            self.caught = self.caught or (signum, frame)
            return
        signal.signal(signal.SIGINT, self.previous)  # stale: step aside and deliver
        self.previous(signum, frame)


class interrupts_deferred:
    """Hold back ``SIGINT`` (Ctrl-C) while the block runs and deliver it when the block ends.

    Only the main thread receives Python signal handlers, and only a Python handler can be
    swapped (one installed outside Python, or ``SIG_IGN``/``SIG_DFL``, is left as it is).
    Nested blocks defer to the outermost one.
    """

    def __enter__(self) -> None:
        self._held: _HeldInterrupt | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, _HeldInterrupt):
            if current.running():
                return  # an outer block holds the interrupts
            current = current.previous
        if not callable(current):
            return
        self._held = _HeldInterrupt(current, sys._getframe(1))
        signal.signal(signal.SIGINT, self._held)

    def __exit__(self, *_exc: object) -> None:
        held = self._held
        if held is None:
            return
        if signal.getsignal(signal.SIGINT) is held:
            signal.signal(signal.SIGINT, held.previous)
        if held.caught is not None:
            held.previous(*held.caught)  # the default handler raises KeyboardInterrupt here


def _put_back(state: dict[str, Any], name: str, changed: _Changed) -> None:
    """Restore one attribute to its value before the session (idempotent).

    The value is restored before a warning is issued: with warnings as errors, the warning
    raises only after the attribute is back.
    """
    value = changed.previous.get(name, _MISSING)
    current = state.get(name, _MISSING)
    if value is _MISSING:
        state.pop(name, None)
    else:
        state[name] = value
    ours = changed.forward  # the engine may rebind it: bound methods compare by == only
    if name == "forward" and current is not _MISSING and current != ours and current != value:
        warnings.warn(
            f"smoothcache: the forward of a {type(changed.obj).__name__} was replaced while "
            "smoothcache was enabled (by another library: diffusers' enable_parallelism, "
            "hooks or offloading, accelerate?). Leaving the session restores the forward it "
            "had before the session, which drops that replacement: apply other libraries' "
            "wrappers before smoothcache.enabled(...), or after the session ends",
            RuntimeWarning,
            stacklevel=2,
        )
