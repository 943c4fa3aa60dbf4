"""Per-call cost of smoothcache's branch wrapper and per-evaluation bookkeeping (CPU).

1. A model of ``--blocks`` blocks, each with two branches that are almost free (a 4x4 linear on
   a 1x4 input), is evaluated for ``--steps`` steps: plain, inside ``enabled`` with a schedule
   that computes everything, and with one that reuses every other step. The difference to the
   plain model, divided by the number of branch calls, is the library's cost per branch call;
   the pre-hook's per-evaluation work is included. Median of ``--repeats`` interleaved runs.
2. The overhead target itself: a diffusers DiT (``benchmarks.common.dit``'s ``small`` model,
   random weights) sampled with DDIM and guidance, plain and inside ``enabled`` with a schedule
   that computes everything, in ``--pairs`` pairs whose order alternates. Reported: the median
   of each configuration and the median of the per-pair ratios (pairs share the machine's
   state, so their ratio is less noisy than a ratio of medians).
3. Python function calls, which no noise moves (``sys.setprofile``): the original DiT's
   structure at DiT-S/2's shape (12 blocks, hidden 384, 256 tokens), 20 DDIM steps with
   guidance, the ``attn`` and ``mlp`` rows computing every other step, against a hand-written
   ideal that caches the same branches at the same steps with no library (a closure per branch
   module and a step counter). Reported per branch call of a generation in a session already
   held (after one generation of warm-up: the fast path's one-time check is set-up), and the
   calls of set-up (``enable``, the first generation's extra calls, ``disable``).

    python -m benchmarks.overhead
    python -m benchmarks.overhead --only-calls    # section 3 alone, a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from torch import nn

import smoothcache
from benchmarks.common.dit import build, make_sampler
from benchmarks.common.timing import timed, timed_rounds


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
    parser.add_argument("--only-calls", action="store_true", help="section 3 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only_calls:
        python_calls()
        return
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
    print()
    python_calls()


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


def count_calls(run: Callable[[], object]) -> int:
    """Python function calls (profile ``call`` events) made while ``run()`` runs."""
    calls = 0

    def profile(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


def install_ideal(model: nn.Module, row: list[int]) -> Callable[[], None]:
    """Cache ``attn`` and ``mlp`` of every block by hand: one closure per branch module, a step
    counter bumped by a pre-hook on ``t_embedder``. Returns a function that removes it all."""
    step = [-1]
    handle = model.t_embedder.register_forward_pre_hook(
        lambda _m, _a: step.__setitem__(0, step[0] + 1)
    )
    modules = [getattr(block, kind) for block in model.blocks for kind in ("attn", "mlp")]
    for module in modules:
        original, stored = module.forward, [None]

        def forward(x: torch.Tensor, _original=original, _stored=stored) -> torch.Tensor:
            if row[step[0] % len(row)]:
                _stored[0] = _original(x)
            return _stored[0]

        module.forward = forward

    def remove() -> None:
        handle.remove()
        for module in modules:
            del module.forward

    return remove


def python_calls(steps: int = 20) -> None:
    """Section 3: Python calls per branch call, the library against the hand-written ideal."""
    from smoothcache.testing.models.original_dit import DiT, sample_original_dit

    torch.manual_seed(0)
    model = DiT(input_size=32, hidden_size=384, depth=12, num_heads=6).eval()
    row = [1 if i % 2 == 0 or i == steps - 1 else 0 for i in range(steps)]

    def generate() -> torch.Tensor:
        with torch.no_grad():
            return sample_original_dit(model, num_steps=steps, batch=1, cfg_scale=1.5)

    branch_calls = steps * len(model.blocks) * 2
    remove = install_ideal(model, row)
    ideal_out = generate()
    ideal = count_calls(generate)
    remove()
    schedule = {"attn": row, "mlp": row}
    print(
        f"Python calls (sys.setprofile), original DiT structure at DiT-S/2's shape (12 blocks), "
        f"{steps} DDIM steps, batch 1 with guidance, attn and mlp computing every other step, "
        f"{branch_calls} branch calls per generation, torch {torch.__version__}"
    )
    print()
    print("| | Python calls per generation | per branch call | above the ideal, per branch call |")
    print("|---|---:|---:|---:|")
    print(f"| hand-written ideal | {ideal:,} | {ideal / branch_calls:.1f} | |")
    plugins = count_calls(lambda: smoothcache.detect(model))  # once per process
    setups = []
    for fast_path, label in ((True, "with the adapter's fast path"), (False, "wrappers only")):
        sessions: list[smoothcache.Session] = []

        def enable(fp: bool = fast_path, into: list = sessions) -> None:
            into.append(smoothcache.enable(model, schedule, fast_path=fp))

        enabling = count_calls(enable)
        first = count_calls(generate)  # the fast path's one-time checks run here
        held = count_calls(generate)
        library_out = generate()
        setups.append((label, enabling + first - held + count_calls(sessions[0].disable)))
        if not torch.equal(library_out, ideal_out):
            raise SystemExit("the library and the hand-written ideal give different outputs")
        above = (held - ideal) / branch_calls
        print(
            f"| smoothcache {label}, session held | {held:,} | {held / branch_calls:.1f} "
            f"| {above:+.1f} |"
        )
    print()
    print(
        f"loading the adapters (entry points; once per process, before the first enable): "
        f"{plugins:,} calls"
    )
    for label, setup in setups:
        print(
            f"one-time set-up {label} (enable, the first generation's extra calls, disable): "
            f"{setup:,} calls"
        )


if __name__ == "__main__":
    main()
