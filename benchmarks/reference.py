"""smoothcache against the reference implementation (dit-smoothcache) on a diffusers DiT.

Runs in one process, on one model and the same inputs: the uncached transformer, the reference
``DiffuserCacheHelper`` (caches ``attn1`` only; it prints on every branch call, so its stdout is
sent to /dev/null, which favours it), and smoothcache with the same ``attn1`` schedule and with
the schedule applied to ``attn1`` and ``ff``. Each configuration runs a full sampling loop
``--repeats`` times after a warm-up, interleaved; the table reports the median and the speedup
against the uncached median measured in the same process.

    python -m benchmarks.reference --size small --steps 50 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from collections.abc import Callable

import torch

import smoothcache
from benchmarks.common.dit import SCHEDULES, SIZES, build, make_sampler
from benchmarks.common.timing import timed
from smoothcache import Schedule


def main() -> None:
    """Time every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=50, choices=[30, 50, 70])
    parser.add_argument("--batch", type=int, default=4, help="images per call (doubled by CFG)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    from SmoothCache import DiffuserCacheHelper

    dtype = getattr(torch, args.dtype)
    model = build("diffusers", args.size, args.device, dtype)
    run = make_sampler(model, "diffusers", args.steps, args.batch, SIZES[args.size][3])
    paper = Schedule.shipped(f"dit-xl-2-256/{SCHEDULES[args.steps]}")
    row = list(paper.rows["attn"])
    attn1_only = {"attn1": row}
    both = {"attn1": row, "ff": row}

    def reference() -> torch.Tensor:
        helper = DiffuserCacheHelper(model, schedule=attn1_only)
        helper.enable()
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                return run()
        finally:
            helper.disable()

    def ours(schedule: dict[str, list[int]]) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            with smoothcache.enabled(model, schedule):
                return run()

        return go

    configs = {
        "uncached": run,
        "dit-smoothcache (attn1)": reference,
        "smoothcache (attn1)": ours(attn1_only),
        "smoothcache (attn1 + ff)": ours(both),
    }
    times = timed(configs, args.repeats, args.device == "cuda")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(
        f"device {args.device} ({device_name or platform.machine()}), threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, dtype {args.dtype}, "
        f"model {args.size} {SIZES[args.size]}, batch {args.batch} (+CFG = {2 * args.batch}), "
        f"{args.steps} DDIM steps, schedule {paper.metadata['name']} "
        f"({paper.compute_fraction:.0%} computed), median of {args.repeats}"
    )
    print()
    print("| configuration | median s | speedup |")
    print("|---|---|---|")
    base = times["uncached"]
    for label, seconds in times.items():
        print(f"| {label} | {seconds:.3f} | {base / seconds:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
