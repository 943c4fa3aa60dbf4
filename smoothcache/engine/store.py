"""The per-pass stores of a session and their byte accounting.

Each model call of a step (conditional and unconditional guidance, say) is a *pass* with its
own stored outputs. The running pass's outputs live on the branch modules (``_sc_stored``, read
by the per-call path); the other passes' are parked here and swapped in when their pass runs.
Bytes are counted once per model evaluation, never per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from smoothcache.engine.actions import Action
from smoothcache.engine.outputs import nbytes
from smoothcache.engine.state import cleared_branch_state


def stored_bytes(lists: list[list[Any]]) -> list[int]:
    """Bytes held by each of several branches' stored outputs. One call for all of them, with
    tensors counted inline: it runs once per model evaluation, not once per branch."""
    sizes = []
    for stored in lists:
        size = 0
        for output in stored:
            if type(output) is torch.Tensor:
                size += output.numel() * output.element_size()
            else:
                size += nbytes(output)
        sizes.append(size)
    return sizes


class PassStore:
    """Stored outputs of every pass, the bytes they hold, and the peak.

    ``cache_bytes`` is what the stored outputs held at the end of the last counted evaluation;
    ``peak_cache_bytes`` bounds from above what they ever held (an entry dropped during an
    evaluation was held until its branch ran: counting it with what is held afterwards is exact
    when drops follow stores).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = modules
        n = len(modules)
        self.pass_idx = 0
        self.values: list[list[Any]] = [[[] for _ in range(n)]]  # parked outputs, per pass
        self.shapes: list[list[Any]] = [[None] * n]
        self.sizes: list[list[int]] = [[0] * n]
        self.last_step = [-1]  # per pass: the last step it ran in this generation
        self.cache_bytes = 0
        self.peak_cache_bytes = 0

    def swap(self, new: int) -> None:
        """Park the modules' stored outputs under the current pass and load pass ``new``'s."""
        n = len(self.modules)
        while len(self.values) <= new:
            self.values.append([[] for _ in range(n)])
            self.shapes.append([None] * n)
            self.sizes.append([0] * n)
            self.last_step.append(-1)
        old_values, old_shapes = self.values[self.pass_idx], self.shapes[self.pass_idx]
        values, shapes = self.values[new], self.shapes[new]
        for i, module in enumerate(self.modules):
            state = module.__dict__
            old_values[i], old_shapes[i] = state["_sc_stored"], state["_sc_shape"]
            # the modules hold the running pass's outputs; its parked slot keeps none, or an
            # output dropped while the pass runs would stay alive there, uncounted
            state["_sc_stored"], values[i] = values[i], []
            state["_sc_shape"] = shapes[i]
        self.pass_idx = new

    def trim_parked(self, plan: Sequence[Action], touched: Sequence[int], step: int) -> None:
        """A step starts (its first pass runs): the parked passes let go of what they no
        longer need, now rather than when they next run, which may be never (the last step,
        the end of a guidance interval).

        A parked pass that ran at the previous step keeps what this step keeps; one that did
        not will forget everything when it resumes (:meth:`forget`), so it drops it now.
        """
        for p in range(1, len(self.values)):
            values, sizes = self.values[p], self.sizes[p]
            stale = self.last_step[p] < step - 1
            for i in range(len(values)) if stale else touched:
                keep = 0 if stale else plan[i][2]
                stored = values[i]
                if len(stored) > keep:
                    values[i] = stored[len(stored) - keep :] if keep else []
                    size = stored_bytes([values[i]])[0]
                    self.cache_bytes -= sizes[i] - size
                    sizes[i] = size

    def forget(self) -> None:
        """Drop the running pass's stored outputs: its skipped steps compute until it stores.

        A pass that did not run at some steps (guidance as two calls at some steps only) did
        not store what it would have computed there; answering from its older outputs would
        be silently stale.
        """
        sizes = self.sizes[self.pass_idx]
        for i, module in enumerate(self.modules):
            module.__dict__.update(_sc_stored=[], _sc_read=[], _sc_shape=None)
            self.cache_bytes -= sizes[i]
            sizes[i] = 0

    def pending(self, touched: Sequence[int]) -> tuple[int, int]:
        """Bytes held and bytes dropped, counting the evaluation in progress (read-only)."""
        held, dropped, _ = self._measure(touched)
        return held, dropped

    def account(self, touched: Sequence[int]) -> None:
        """Fold the evaluation that just ended into the byte counts."""
        held, dropped, now = self._measure(touched)
        sizes = self.sizes[self.pass_idx]
        for i, size in zip(touched, now):
            sizes[i] = size
        self.peak_cache_bytes = max(self.peak_cache_bytes, held + dropped)
        self.cache_bytes = held

    def _measure(self, touched: Sequence[int]) -> tuple[int, int, list[int]]:
        """Bytes held and dropped with the running pass's stores as they are now, and the new
        sizes of the ``touched`` branches' stores."""
        sizes, modules = self.sizes[self.pass_idx], self.modules
        now = stored_bytes([modules[i].__dict__["_sc_stored"] for i in touched])
        held, dropped = self.cache_bytes, 0
        for i, size in zip(touched, now):
            if size < sizes[i]:
                dropped += sizes[i] - size
            held += size - sizes[i]
        return held, dropped, now

    def clear(self) -> None:
        """Drop every stored output (a new generation starts, or the session resets)."""
        for items in self.values:
            items[:] = [[] for _ in items]
        for items in self.shapes:
            items[:] = [None] * len(items)
        for sizes in self.sizes:
            sizes[:] = [0] * len(sizes)
        self.last_step[:] = [-1] * len(self.last_step)
        for module in self.modules:
            module.__dict__.update(cleared_branch_state())
        self.cache_bytes = 0
