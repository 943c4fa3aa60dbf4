"""Per-call cost of smoothcache's branch wrapper and per-evaluation bookkeeping (CPU).

A model of ``--blocks`` blocks, each with two branches that are almost free (a 4x4 linear on a
1x4 input), is evaluated for ``--steps`` steps: plain, inside ``enabled`` with a schedule that
computes everything, and with one that reuses every other step. The difference to the plain
model, divided by the number of branch calls, is the library's cost per branch call; the
pre-hook's per-evaluation work is included. Median of ``--repeats`` interleaved runs.

    python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import smoothcache


class Net(nn.Module):
    """Blocks with two residual branches each, driven by a scalar timestep."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)}) for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        for block in self.blocks:
            x = x + block["a"](x)
            x = x + block["b"](x)
        return x


class NetAdapter(smoothcache.Adapter):
    """Adapter for :class:`Net` (branch kinds ``a`` and ``b``; the root reads ``t``)."""

    name = "overhead-benchmark-net"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Net)

    def branches(self, model: nn.Module) -> list[smoothcache.Branch]:
        return [
            smoothcache.Branch(f"blocks.{i}.{k}", k, i)
            for i in range(len(model.blocks))
            for k in "ab"
        ]

    def timestep_source(self, model: nn.Module) -> smoothcache.TimestepSource:
        return smoothcache.TimestepSource("", smoothcache.argument("t", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=28)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = Net(args.blocks).eval()
    x = torch.randn(1, 4)
    steps = args.steps
    every = {"a": [1] * steps, "b": [1] * steps}
    half = {k: [1 if i % 2 == 0 or i == steps - 1 else 0 for i in range(steps)] for k in "ab"}

    @torch.no_grad()
    def sample() -> None:
        for i in range(steps):
            net(x, float(steps - i))

    def cached(schedule: dict[str, list[int]], **kw: object):
        def run() -> None:
            with smoothcache.enabled(net, schedule, adapter=NetAdapter(), **kw):
                sample()

        return run

    configs = {
        "plain": sample,
        "computing everything": cached(every),
        "computing everything, calls_per_step=1": cached(every, calls_per_step=1),
        "reusing every other step": cached(half),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for fn in configs.values():
        fn()
    for _ in range(args.repeats):
        for label, fn in configs.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    calls = steps * args.blocks * 2
    print(
        f"CPU, 1 thread, torch {torch.__version__}, float32, batch 1, {args.blocks} blocks x 2 "
        f"branches, {steps} steps ({calls} branch calls), median of {args.repeats}"
    )
    print()
    print("| configuration | ms per run | extra us per branch call |")
    print("|---|---|---|")
    for label, seconds in median.items():
        extra = (seconds - median["plain"]) / calls * 1e6
        print(f"| {label} | {seconds * 1000:.2f} | {extra:+.2f} |")


if __name__ == "__main__":
    main()
