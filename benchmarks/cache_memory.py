"""What each cache keeps in memory: counted on the flow model, computed for FLUX.1-dev (#28).

**Counted.** On the flow-matching model (``benchmarks/flow_model``, through its diffusers
pipeline), every method samples the same batch; after every call of the transformer, the bytes
of every live tensor (Python's garbage collector lists them; one count per storage) are added
up, and the same count of the uncached run at the same call is subtracted: what is left is what
the method holds between model calls (its cache), whatever the method and however it stores it.
The peak over the run is printed for the library's schedules (reuse; the forecast search,
Lagrange and fitted, at 30% and 20% of the compute; uniform order-1 and order-2 forecasts),
diffusers' TaylorSeer (orders 1 and 2) and cache-dit's DBCache (with and without its TaylorSeer
calibrator), with each one's share of the branch-steps computed; the library's search rows also
with their stored outputs in bfloat16 (``smoothcache.engine.low_precision``). The library's own
``stats.peak_cache_bytes`` is printed beside its count.

**Computed** (from shapes, not a run): FLUX.1-dev at 1024 x 1024, batch 1, bfloat16 (4096
image tokens, 512 text tokens, width 3072, 19 double-stream and 38 single-stream blocks): the
library stores, per kept output, every branch's output (a double block's attention returns image
and text, its two feed-forwards one each; a single block's fused group keeps its leader's
``proj_out`` output, its members nothing); a forecast of order ``k`` keeps ``k + 1`` of them.
diffusers' TaylorSeer with its defaults hooks the blocks' attention modules (``.*attn``) and
keeps ``max_order + 1`` factors of each output; cache-dit's DBCache keeps residuals of the
block stack's two streams (and ``order + 1`` Taylor factors of each with its calibrator)::

    python -m benchmarks.cache_memory --threads 1
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from typing import Any

import torch

import smoothcache
from benchmarks.common.bench import Bench, Row
from benchmarks.common.cache_dit_rows import cache_dit_rows, cache_dit_version
from benchmarks.common.peers import Settings, diffusers_rows
from benchmarks.tune_quality import runner
from smoothcache import Schedule
from smoothcache.engine import api, low_precision

#: FLUX.1-dev at 1024 x 1024: image and text tokens, width, double and single blocks
FLUX = {"image": 4096, "text": 512, "width": 3072, "double": 19, "single": 38}
BF16 = 2


def live_bytes() -> int:
    """Bytes of every live tensor's storage, each storage once."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def profile(run: Callable[[], Any], transformer_class: type) -> list[int]:
    """Live bytes after every transformer call of ``run()``."""
    counts: list[int] = []

    def after(module: torch.nn.Module, _args: Any, _output: Any) -> None:
        if type(module).__name__.startswith(transformer_class.__name__):
            counts.append(live_bytes())

    handle = torch.nn.modules.module.register_module_forward_hook(after)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return counts


def flux_plan() -> list[tuple[str, float]]:
    """GiB kept between model calls on FLUX.1-dev at 1024 x 1024 (batch 1, bfloat16)."""
    width, image, text = FLUX["width"], FLUX["image"], FLUX["text"]
    per_double = (image + text) + image + text  # attn (both streams), ff, ff_context
    per_output = (FLUX["double"] * per_double + FLUX["single"] * (image + text)) * width * BF16
    taylor_per = (FLUX["double"] * (image + text) + FLUX["single"] * (image + text)) * width * BF16
    stream = (image + text) * width * BF16  # one residual of both streams
    gib = 2**30
    return [
        ("smoothcache, reuse (1 output per branch)", per_output / gib),
        ("smoothcache, order-1 forecasts (2 per branch)", 2 * per_output / gib),
        ("smoothcache, order-2 forecasts (3 per branch)", 3 * per_output / gib),
        ("diffusers TaylorSeer, default modules, order 1 (2 factors)", 2 * taylor_per / gib),
        ("diffusers TaylorSeer, default modules, order 2 (3 factors)", 3 * taylor_per / gib),
        ("cache-dit DBCache (2 residuals)", 2 * stream / gib),
        ("cache-dit DBCache + TaylorSeer order 1 (2 residuals x 2 factors)", 4 * stream / gib),
    ]


def main() -> None:
    """Count every method's held bytes on the flow model, then print FLUX.1-dev's plan."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(
        "flow",
        samples=args.samples,
        timing_samples=args.samples,
        calibration_samples=16,
        device=torch.device("cpu"),
    )
    with smoothcache.calibrating(bench.model, lookahead=12) as recorder, torch.no_grad():
        runner(bench)(1000)  # development seed: the schedules' choice is no evaluation
    curves = recorder.curves()
    steps, kinds = bench.steps, bench.loaded.kinds
    rows: list[Row] = [
        bench.cached("smoothcache", "reuse, every 4", Schedule.uniform(steps, 4, kinds))
    ]
    for order in (1, 2):
        schedule = Schedule.uniform(steps, 4, kinds, order)
        rows.append(bench.cached("smoothcache", f"order {order}, every 4", schedule))
    for budget in (0.3, 0.2):
        for method in ("forecast", "fitted"):
            schedule = curves.schedule(compute_fraction=budget, method=method)
            rows.append(bench.cached("smoothcache", f"{method} search, {budget:.0%}", schedule))
            half = low_precision(schedule, torch.bfloat16)
            setting = f"{method} search, {budget:.0%}, bfloat16 anchors"
            rows.append(bench.cached("smoothcache", setting, half))
    low = Settings(taylor_orders=(1, 2), taylor_intervals=(4,), taylor_warmups=(3,))
    rows += diffusers_rows(bench, low)
    if cache_dit_version() is not None:
        rows += cache_dit_rows(bench, print, [(1, 0, 2, 0.2)], (1,))
    transformer = type(bench.model)
    base = profile(lambda: bench.plain(steps).run("timing"), transformer)
    print(
        f"Flow model ({bench.loaded.description}), {steps} steps, guidance {bench.guidance:g}, "
        f"batch {args.samples}, float32, CPU, torch {torch.__version__}, cache-dit "
        f"{cache_dit_version()}; bytes held between transformer calls beyond the uncached run's "
        "(peak over the run)"
    )
    print("| method | setting | computed | held (KiB) | library's peak_cache_bytes (KiB) |")
    print("|---|---|---|---|---|")
    for row in rows:
        before = row.counter.calls
        stats: list[int] = []

        def run(r: Row = row, found: list[int] = stats) -> Any:
            if r.family != "smoothcache":
                return r.run("timing")
            sessions: list[Any] = []
            original = api.enable

            def spy(*a: Any, **k: Any) -> Any:
                sessions.append(original(*a, **k))
                return sessions[-1]

            api.enable = spy
            try:
                return r.run("timing")
            finally:
                api.enable = original
                found.extend(s.stats.peak_cache_bytes for s in sessions)

        counts = profile(run, transformer)
        held = max(c - b for c, b in zip(counts, base)) if len(counts) == len(base) else None
        computed = (row.counter.calls - before) / (bench.counter.branches * steps * 2)
        own = f"{stats[0] / 1024:.0f}" if stats else ""
        shown = "n/a (calls differ)" if held is None else f"{held / 1024:.0f}"
        print(f"| {row.family} | {row.setting} | {computed:.3f} | {shown} | {own} |")
    print()
    print("FLUX.1-dev, 1024 x 1024, batch 1, bfloat16 (computed from shapes):")
    print("| method | GiB held |")
    print("|---|---|")
    for name, gib in flux_plan():
        print(f"| {name} | {gib:.2f} |")


if __name__ == "__main__":
    main()
