"""Counted work: the aten ops a run dispatches, and what the adapters' fast paths save.

A fast path skips a reused branch's input preparation (and, for a group, the stand-ins of its
members and the merge). Work is counted, not timed, so the count is the same on every machine:
:class:`OpCounter` counts every aten op dispatched while it is active, and :func:`count` runs the
tiny random instance of a diffusers class (``smoothcache.testing.models.diffusers_zoo``) under a
schedule that reuses the fast-pathed kinds at every other step (:data:`CASES`), with the fast
path on or off. ``python -m benchmarks.fast_path_ops`` prints the table (docs/performance.md);
the tests hold the FLUX group's saving to it.
"""

from __future__ import annotations

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

from smoothcache.engine import enabled
from smoothcache.testing.models.diffusers_zoo import ZOO, run

#: Steps of every counted run.
STEPS = 8
#: The schedule row of every fast-pathed kind: reuse at every other step, the last computes.
ROW = [1, 0] * (STEPS // 2 - 1) + [1, 1]
#: class -> schedule: the kinds whose blocks have a fast path
CASES = {
    "FluxTransformer2DModel": {"single": ROW},
    "DiTTransformer2DModel": {"attn1": ROW, "ff": ROW},
    "WanTransformer3DModel": {"attn1": ROW, "attn2": ROW, "ffn": ROW},
    "CogVideoXTransformer3DModel": {"attn1": ROW, "ff": ROW},
    "SD3Transformer2DModel": {"attn": ROW, "attn2": ROW, "ff": ROW, "ff_context": ROW},
    "Lumina2Transformer2DModel": {"attn": ROW, "feed_forward": ROW},
}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active (``with OpCounter() as counter:``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        """Count one op and run it unchanged."""
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count(name: str, fast_path: bool) -> int:
    """Aten ops of one cached run of ``name``'s tiny instance under its schedule of :data:`CASES`.

    The first run of the session checks the fast path against the block's own forward, which
    is set-up: only the second run is counted.
    """
    entry = ZOO[name]
    model = entry.factory()
    with enabled(model, CASES[name], fast_path=fast_path):
        run(entry, model, num_steps=STEPS)
        with OpCounter() as counter:
            run(entry, model, num_steps=STEPS)
    return counter.ops
