"""Latency of forecasting against reusing at the same schedule (eager and compiled).

One process, one random diffusers DiT (DiT-XL/2 shape with ``--size xl``; zero-initialised
gates re-randomised so that branches matter), one DDIM loop with guidance as one doubled
batch. Configurations, timed in interleaved rounds (order reversed every other round):

- ``uncached``: the plain model;
- ``reuse``: the schedule with every skipped step reused (order 0);
- ``forecast k``: the same computed steps, every skipped step forecast with order ``k`` (lower
  where fewer computed steps precede it).

The ratio forecast / reuse is the cost of forecasting (target: at most 1.03 on a GPU). With
``--compile`` the blocks are compiled regionally (graphs shared between blocks) and the same
configurations run again.

    python -m benchmarks.forecast_latency --size xl --dtype bfloat16 --batch 8 --compile
"""

from __future__ import annotations

import argparse
import statistics

import torch

import smoothcache
from benchmarks.common.dit import SIZES, build, make_sampler
from benchmarks.common.timing import timed_rounds
from smoothcache import Schedule


def rerandomise_gates(model: torch.nn.Module) -> None:
    """Give zero-initialised weights (adaLN gates, output layers) random values."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1 and param.abs().max() == 0:
                param.normal_(0.0, 0.02)


def measure(args: argparse.Namespace, compiled: bool) -> list[str]:
    """Table rows for one mode (eager or compiled)."""
    dtype = getattr(torch, args.dtype)
    model = build("diffusers", args.size, args.device, dtype)
    rerandomise_gates(model)
    if compiled:
        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 4096
        for block in model.transformer_blocks:
            block.compile(backend=args.backend)
    run = make_sampler(model, "diffusers", args.steps, args.batch, SIZES[args.size][3])
    schedules = {"reuse": Schedule.uniform(args.steps, args.every, ("attn1", "ff"))}
    for order in args.orders:
        schedules[f"forecast {order}"] = Schedule.uniform(
            args.steps, args.every, ("attn1", "ff"), order=order
        )

    def cached(schedule: Schedule):
        def go() -> torch.Tensor:
            with smoothcache.enabled(model, schedule):
                return run()

        return go

    configs = {"uncached": run, **{name: cached(s) for name, s in schedules.items()}}
    rounds = timed_rounds(configs, args.repeats, args.device == "cuda")
    mode = "compiled" if compiled else "eager"
    base = statistics.median(rounds["uncached"])
    lines = []
    for name, seconds in rounds.items():
        ratio = ""
        if name.startswith("forecast"):  # paired ratios: runs of the same round
            pairs = [f / r for f, r in zip(seconds, rounds["reuse"])]
            ratio = f"{statistics.median(pairs):.3f}"
        median = statistics.median(seconds)
        lines.append(f"| {mode} | {name} | {median * 1e3:.1f} | {base / median:.2f}x | {ratio} |")
    return lines


def main() -> None:
    """Print the table (device, dtype, batch and torch version in its header line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=3, help="compute every N-th step (3)")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=2, help="images (doubled by guidance)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="also measure compiled")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        torch.set_flush_denormal(True)  # denormal arithmetic would make times value-dependent
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"device {args.device} ({name}), torch {torch.__version__}, dtype {args.dtype}, size "
        f"{args.size} {SIZES[args.size]}, batch {args.batch} + guidance, {args.steps} DDIM "
        f"steps computing every {args.every}th, median of {args.repeats} interleaved runs"
    )
    print()
    print("| mode | configuration | ms per run | speedup | forecast / reuse (paired median) |")
    print("|---|---|---:|---:|---:|")
    for line in measure(args, compiled=False):
        print(line, flush=True)
    if args.compile:
        for line in measure(args, compiled=True):
            print(line, flush=True)


if __name__ == "__main__":
    main()
