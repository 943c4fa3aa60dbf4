"""Counted work of the adapters' fast paths: aten ops per sampler run, with and without.

The first table counts what a fast path saves (``smoothcache.testing.op_counts``: every aten op
dispatched during a run of the tiny random model of ``smoothcache.testing.models.diffusers_zoo``
under a schedule that reuses the fast-pathed kinds at every other step, with ``fast_path=True``
and ``False``). A fast path skips a reused branch's input preparation (and, for a group, the
stand-ins of its members and the merge).

The second table bounds what a fast path could gain for the families that have none: the aten
ops spent inside the blocks' normalisation modules outside every branch (adaLN modules compute
the gates too, which a reuse step needs, so the real gain is a fraction of it).

    python -m benchmarks.fast_path_ops
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import smoothcache
from smoothcache.testing.models.diffusers_zoo import ZOO, run
from smoothcache.testing.op_counts import CASES, STEPS, OpCounter, count

#: Families without a fast path, for the bound of :func:`norm_ops`.
WITHOUT = (
    "LTXVideoTransformer3DModel", "QwenImageTransformer2DModel", "SanaTransformer2DModel",
    "HunyuanDiT2DModel", "Flux2Transformer2DModel",
)  # fmt: skip


def norm_ops(name: str) -> tuple[str, int, int]:
    """Adapter, aten ops of one uncached run, and of them those inside the blocks' norm modules
    that sit outside every branch (input preparation a fast path could at most skip)."""
    entry = ZOO[name]
    model = entry.factory()
    adapter = smoothcache.detect(model)
    inside = {
        id(module)
        for branch in adapter.branches(model)
        for module in model.get_submodule(branch.path).modules()
    }
    tally = [0]

    def counted(forward: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with OpCounter() as counter:
                out = forward(*args, **kwargs)
            tally[0] += counter.ops
            return out

        return wrapper

    for blocks in (c for c in model.children() if isinstance(c, nn.ModuleList)):
        for module in blocks.modules():
            if id(module) not in inside and "Norm" in type(module).__name__:
                module.forward = counted(module.forward)
    with OpCounter() as total:
        run(entry, model, num_steps=STEPS)
    return adapter.name, total.ops, tally[0]


def main() -> int:
    """Print both tables."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    torch.set_num_threads(1)
    print(
        f"aten ops per {STEPS}-step run, reuse at every other step; CPU, float32, batch 1, "
        f"one thread, torch {torch.__version__}"
    )
    print("| model | schedule | fast path off | fast path on | saved |")
    print("|---|---|---:|---:|---:|")
    for name, schedule in CASES.items():
        off, on = count(name, False), count(name, True)
        keys = ", ".join(schedule)
        print(f"| {name} | {keys} | {off} | {on} | {off - on} ({(off - on) / off:.1%}) |")
    print(f"\nno fast path: aten ops per uncached {STEPS}-step run, and inside block norms")
    print("| model | adapter | all | in norm modules outside branches |")
    print("|---|---|---:|---:|")
    for name in WITHOUT:
        adapter, total, norms = norm_ops(name)
        print(f"| {name} | {adapter} | {total} | {norms} ({norms / total:.1%}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
