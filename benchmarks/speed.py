"""Speed against the limit: smoothcache, the reference helper and two hand-written ideals.

Everything runs in one process on one model and the same inputs, with the same schedule:

- ``uncached``: the plain model;
- ``dit-smoothcache``: the reference implementation's ``SmoothCacheHelper`` wrapping the same
  branch modules (its per-call print goes to /dev/null, which favours it);
- ``smoothcache``: this library (with the adapter's fast path, then module-level only), and
  with a schedule that computes everything (its overhead);
- ``ideal (module)`` and ``ideal (full)``: hand-written block forwards with no library code;
  the first skips only the branch module call on reuse steps, the second also skips the branch's
  input preparation (LayerNorm and adaLN modulation). Their speedups are measured against the
  same hand-written forward computing everything, so a leaner block forward does not count as
  caching gain. ``efficiency`` is a configuration's speedup divided by the ideal's speedup.

Models: diffusers ``DiTTransformer2DModel`` and the original-DiT-structured model of
``smoothcache.testing.models`` (random weights; DiT-XL/2 shape with ``--size xl``). With
``--compile`` the uncached model, smoothcache and both ideals also run with every block compiled
(regional ``torch.compile``).

    python -m benchmarks.speed --size xl --dtype bfloat16 --batch 8 32 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import smoothcache
from benchmarks.common.dit import SCHEDULES, SIZES, build, make_sampler
from benchmarks.common.timing import timed
from smoothcache import Schedule


class StepState:
    """What the hand-written ideals know: this step's decisions, and whether to skip prep."""

    def __init__(self, attn_row: list[int], mlp_row: list[int], full: bool) -> None:
        self.rows = (attn_row, mlp_row)
        self.plan = (True, True)
        self.full = full

    def at(self, step: int) -> None:
        self.plan = (bool(self.rows[0][step]), bool(self.rows[1][step]))


def diffusers_ideal(block: nn.Module, hidden_states, timestep=None, class_labels=None, **_: Any):
    """A lean ada_norm_zero BasicTransformerBlock forward that reuses by the ideal rule.

    One function for every block, with the cached outputs on the block, so that regional
    compilation shares graphs across blocks exactly as it does for the library.
    """
    state = block._ideal
    compute_attn, compute_ff = state.plan
    norm1 = block.norm1
    emb = norm1.linear(
        norm1.silu(norm1.emb(timestep, class_labels, hidden_dtype=hidden_states.dtype))
    )
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
    if compute_attn or not state.full:
        x = norm1.norm(hidden_states) * (1 + scale_msa[:, None]) + shift_msa[:, None]
    if compute_attn:
        block._ideal_attn = block.attn1(x)
    hidden_states = gate_msa.unsqueeze(1) * block._ideal_attn + hidden_states
    if compute_ff or not state.full:
        x = block.norm3(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    if compute_ff:
        block._ideal_ff = block.ff(x)
    return gate_mlp.unsqueeze(1) * block._ideal_ff + hidden_states


def original_ideal(block: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A DiTBlock forward (original DiT structure) that reuses by the ideal rule."""
    state = block._ideal
    compute_attn, compute_mlp = state.plan
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(
        c
    ).chunk(6, dim=1)
    if compute_attn or not state.full:
        h = block.norm1(x) * (1 + scale_msa.unsqueeze(1)) + shift_msa.unsqueeze(1)
    if compute_attn:
        block._ideal_attn = block.attn(h)
    x = x + gate_msa.unsqueeze(1) * block._ideal_attn
    if compute_mlp or not state.full:
        h = block.norm2(x) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
    if compute_mlp:
        block._ideal_mlp = block.mlp(h)
    return x + gate_mlp.unsqueeze(1) * block._ideal_mlp


@contextlib.contextmanager
def patched_blocks(model: nn.Module, kind: str, state: StepState):
    """Install the hand-written ideal block forwards; remove them on exit."""
    blocks = model.transformer_blocks if kind == "diffusers" else model.blocks
    forward = diffusers_ideal if kind == "diffusers" else original_ideal
    for block in blocks:
        block.__dict__["_ideal"] = state
        block.forward = types.MethodType(forward, block)
    try:
        yield
    finally:
        for block in blocks:
            for name in ("forward", "_ideal", "_ideal_attn", "_ideal_ff", "_ideal_mlp"):
                block.__dict__.pop(name, None)


def bench(kind: str, args: argparse.Namespace, steps: int, batch: int, compiled: bool) -> list[str]:
    """Measure one model family at one schedule and batch; return Markdown table rows."""
    from SmoothCache import SmoothCacheHelper

    dtype = getattr(torch, args.dtype)
    model = build(kind, args.size, args.device, dtype)
    paper = Schedule.shipped(f"dit-xl-2-256/{SCHEDULES[steps]}")
    row = list(paper.rows["attn"])
    kinds = ("attn1", "ff") if kind == "diffusers" else ("attn", "mlp")
    schedule = {k: row for k in kinds}
    if compiled:  # regional: every block compiled, graphs shared between blocks
        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 4096
        for block in model.transformer_blocks if kind == "diffusers" else model.blocks:
            block.compile(backend=args.backend)
    run = make_sampler(model, kind, steps, batch, SIZES[args.size][3])

    def ours(
        fast_path: bool = True, rows: dict | None = None, calls: int | None = None
    ) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            rows_ = rows or schedule
            with smoothcache.enabled(model, rows_, fast_path=fast_path, calls_per_step=calls):
                return run()

        return go

    def ideal(full: bool, skip: bool) -> Callable[[], torch.Tensor]:
        rows = row if skip else [1] * len(row)
        state = StepState(rows, rows, full)

        def go() -> torch.Tensor:
            with patched_blocks(model, kind, state):
                return run(state.at)

        return go

    configs: dict[str, Callable[[], Any]] = {"uncached": run}
    if not compiled:
        block_class = type((model.transformer_blocks if kind == "diffusers" else model.blocks)[0])

        def reference() -> torch.Tensor:
            helper = SmoothCacheHelper(model, block_class, list(kinds), schedule)
            helper.enable()
            try:
                with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                    return run()
            finally:
                helper.disable()

        configs["dit-smoothcache"] = reference
    configs["smoothcache"] = ours()
    configs["smoothcache, calls_per_step=1 (no timestep read)"] = ours(calls=1)
    configs["smoothcache, module-level only"] = ours(fast_path=False)
    configs["smoothcache, computing all"] = ours(rows={k: [1] * len(row) for k in kinds})
    configs["hand-written, computing all"] = ideal(full=False, skip=False)
    configs["ideal (module)"] = ideal(full=False, skip=True)
    configs["ideal (full)"] = ideal(full=True, skip=True)
    times = timed(configs, args.repeats, args.device == "cuda")
    base = times["uncached"]
    hand = times["hand-written, computing all"]
    ideal_module = hand / times["ideal (module)"]
    ideal_full = hand / times["ideal (full)"]
    mode = "compiled" if compiled else "eager"
    lines = []
    for label, seconds in times.items():
        speedup = (hand if label.startswith(("hand", "ideal")) else base) / seconds
        eff = " | "
        if not label.startswith(("hand", "uncached")) and "computing all" not in label:
            eff = f"{speedup / ideal_module:.3f} | {speedup / ideal_full:.3f}"
        ms = seconds * 1000
        lines.append(
            f"| {kind} | {mode} | {steps} | {batch} | {label} | {ms:.1f} | {speedup:.3f}x | {eff} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, nargs="+", default=[50], choices=sorted(SCHEDULES))
    parser.add_argument("--batch", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["diffusers", "original"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="also measure under torch.compile")
    parser.add_argument("--compile-batch", type=int, nargs="+", default=None)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--no-eager", action="store_true", help="only the compiled runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        # Random weights drift into denormal floats, whose CPU arithmetic is many times slower
        # and makes run times depend on the values rather than on the work done.
        torch.set_flush_denormal(True)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    shares = {
        steps: statistics.mean(Schedule.shipped(f"dit-xl-2-256/{SCHEDULES[steps]}").rows["attn"])
        for steps in args.steps
    }
    schedules = ", ".join(f"{n} DDIM steps: {SCHEDULES[n]} ({shares[n]:.0%})" for n in args.steps)
    print(
        f"device {args.device} ({name}), torch {torch.__version__}, dtype {args.dtype}, size "
        f"{args.size} {SIZES[args.size]}, {torch.get_num_threads()} CPU threads; the paper's "
        f"DiT-XL/2 schedules (share of branch-steps computed) for {schedules}; guidance as one "
        f"doubled batch; median of {args.repeats} interleaved runs"
    )
    print()
    print(
        "| model | mode | steps | images | configuration | ms per run | speedup | eff. vs module "
        "ideal | eff. vs full ideal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in [] if args.no_eager else args.models:
        for steps in args.steps:
            for batch in args.batch:
                for line in bench(kind, args, steps, batch, compiled=False):
                    print(line, flush=True)
    if args.compile:
        for steps in args.steps:
            for batch in args.compile_batch or args.batch:
                for kind in args.models:
                    for line in bench(kind, args, steps, batch, compiled=True):
                        print(line, flush=True)


if __name__ == "__main__":
    main()
