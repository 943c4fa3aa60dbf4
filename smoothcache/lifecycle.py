"""The lifecycle that sessions and recorders share: attached to a model, then restored exactly.

A :class:`~smoothcache.engine.Session` and a :class:`~smoothcache.calibration.Recorder` both
change a model only through :class:`~smoothcache.patching.Patches`, watch its evaluations with a
step clock, and end by undoing every change. Ending is where bugs hide (an interrupt midway, a
cycle that keeps the model alive), so it is written once, here.
"""

from __future__ import annotations

from typing import Any

from smoothcache.clock import StepClock
from smoothcache.patching import Patches, interrupts_deferred
from smoothcache.watch import EvaluationWatch


class Attachment:
    """Something attached to a model; ``with`` it, or call :meth:`end`.

    Subclasses set ``clock``, ``_patches`` and ``_watches`` and call :meth:`_attached` once
    everything is installed; :meth:`_before_restore` drops what they hold of the model's outputs
    and :meth:`_check_end` raises for a run that stopped partway (after the model is restored).
    """

    clock: StepClock
    _patches: Patches
    _watches: list[EvaluationWatch]
    active = False
    _restoring = False  # set once the restore has dropped what was held

    def _before_restore(self) -> None:
        """Drop what is held before the model is restored (runs once)."""

    def _check_end(self) -> None:
        """Raise if the last run stopped partway (the model is already restored)."""

    def end(self) -> None:
        """Restore the model exactly, then check the last run. Calling it again is a no-op, and
        it completes a restore that something interrupted."""
        if self.active:
            self._restore()
            self._check_end()

    def _restore(self) -> None:
        """Drop what is held, then undo every change, even if an interrupt arrives meanwhile
        (it propagates once the model is restored)."""
        with interrupts_deferred():
            try:
                if not self._restoring:  # once: undo removes what clearing sets
                    self._restoring = True
                    self._before_restore()
            finally:
                try:
                    self._patches.undo()
                finally:
                    self.active = self._patches.pending
                    if not self.active:  # no cycle through this object keeps the model alive
                        self._watches = []
                        self.clock.detach()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.end()
        elif self.active:
            self._restore()
