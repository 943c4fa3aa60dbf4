"""Counted work of the adapters' fast paths: aten ops per sampler run, with and without.

The second table bounds what a fast path could gain for the families that have none: the aten
ops spent inside the blocks' normalisation modules outside every branch (adaLN modules compute
the gates too, which a reuse step needs, so the real gain is a fraction of it).

A fast path skips a reused branch's input preparation (and, for a group, the stand-ins of its
members and the merge). Work is counted, not timed: every aten op dispatched during a run of
the tiny random model (``tests/models/diffusers_zoo.py``, or the tiny DiT) under a schedule
that reuses the fast-pathed kind at every other step, with ``fast_path=True`` and ``False``.

    python benchmarks/fast_path_ops.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import smoothcache  # noqa: E402
from benchmarks.forecast_cost import OpCounter  # noqa: E402
from tests.models.diffusers_zoo import ZOO, run  # noqa: E402

STEPS = 8
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


def count(name: str, fast_path: bool) -> int:
    """Aten ops of one cached run of ``name``'s tiny instance."""
    entry = ZOO[name]
    model = entry.factory()
    with smoothcache.enabled(model, CASES[name], fast_path=fast_path):
        run(entry, model, num_steps=STEPS)  # step 0 checks the fast path; not counted
        with OpCounter() as counter:
            run(entry, model, num_steps=STEPS)
    return counter.ops


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

    def counted(forward):
        def wrapper(*args, **kwargs):
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
