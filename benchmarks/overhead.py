"""Per-call cost of smoothcache's branch wrapper and per-evaluation bookkeeping (CPU).

1. A model of ``--blocks`` blocks, each with two branches that are almost free (a 4x4 linear on
   a 1x4 input), is evaluated for ``--steps`` steps: plain, inside ``enabled`` with a schedule
   that computes everything, and with one that reuses every other step. The difference to the
   plain model, divided by the number of branch calls, is the library's cost per branch call;
   the pre-hook's per-evaluation work is included. Median of ``--repeats`` interleaved runs.
2. The overhead target itself: a diffusers DiT (``benchmarks/speed.py``'s ``small`` model,
   random weights) sampled with DDIM and guidance, plain and inside ``enabled`` with a schedule
   that computes everything, in ``--pairs`` pairs whose order alternates. Reported: the median
   of each configuration and the median of the per-pair ratios (pairs share the machine's
   state, so their ratio is less noisy than a ratio of medians).

    python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import statistics

import torch
from speed import build, make_sampler, timed, timed_rounds  # benchmarks/ is on sys.path
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
    parser.add_argument("--pairs", type=int, default=15, help="pairs of real-model runs (15)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # random weights drift into slow denormal arithmetic
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
    median = timed(configs, args.repeats, cuda=False)
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
    print()
    real_model(args.steps, args.pairs)


def real_model(steps: int, pairs: int) -> None:
    """Plain against computing everything on a diffusers DiT, in pairs of alternating order."""
    model = build("diffusers", "small", "cpu", torch.float32)
    run = make_sampler(model, "diffusers", steps, 1, 16)
    every = {"attn1": [1] * steps, "ff": [1] * steps}

    def cached() -> torch.Tensor:
        with smoothcache.enabled(model, every):
            return run()

    if not torch.equal(run(), cached()):
        raise SystemExit("computing everything changed the output")
    rounds = timed_rounds({"plain": run, "cached": cached}, pairs, cuda=False)
    plain_times, cached_times = rounds["plain"], rounds["cached"]
    ratios = [c / p for c, p in zip(cached_times, plain_times)]
    print(
        f"diffusers DiT (6 blocks, hidden 384, 64 tokens), random weights, {steps} DDIM steps, "
        f"1 image with guidance (batch 2), float32, 1 thread, {pairs} pairs"
    )
    print()
    print("| configuration | ms per run (median) |")
    print("|---|---|")
    print(f"| plain | {statistics.median(plain_times) * 1000:.1f} |")
    print(f"| computing everything | {statistics.median(cached_times) * 1000:.1f} |")
    print()
    low, high = min(ratios), max(ratios)
    print(
        f"computing everything / plain, median of the pairs: {statistics.median(ratios):.4f} "
        f"(pairs ranged {low:.4f} to {high:.4f}); outputs bit-identical"
    )


if __name__ == "__main__":
    main()
