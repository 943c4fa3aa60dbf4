"""Speed against the limit: smoothcache, the reference helper and two hand-written ideals.

Everything runs in one process on one model and the same inputs, with the same schedule:

- ``uncached``: the plain model;
- ``dit-smoothcache``: the reference implementation's ``SmoothCacheHelper`` wrapping the same
  branch modules (its per-call print goes to /dev/null, which favours it);
- ``smoothcache``: this library;
- ``ideal (module)`` and ``ideal (full)``: hand-written block forwards with no library code;
  the first skips only the branch module call on reuse steps, the second also skips the branch's
  input preparation (LayerNorm and adaLN modulation). Their speedups are measured against the
  same hand-written forward computing everything, so a leaner block forward does not count as
  caching gain. ``efficiency`` is a configuration's speedup divided by the ideal's speedup.

Models: diffusers ``DiTTransformer2DModel`` and the original-DiT-structured model of
tests/models (random weights; DiT-XL/2 shape with ``--size xl``). With ``--compile`` the uncached
model, smoothcache and both ideals also run under ``torch.compile`` (whole denoiser).

    python benchmarks/speed.py --size xl --dtype bfloat16 --batch 8 32 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoothcache  # noqa: E402
from smoothcache import Schedule  # noqa: E402

SIZES = {  # layers, heads, head_dim, latent side: DiT-XL/2 at 256px is (28, 16, 72, 32)
    "tiny": (2, 2, 16, 8),
    "small": (6, 6, 64, 16),
    "xl": (28, 16, 72, 32),
}
SCHEDULES = {30: "ddim-30/alpha-0.35", 50: "ddim-50/alpha-0.18", 70: "ddim-70/alpha-0.08"}


class StepState:
    """What the hand-written ideals know: this step's decisions and the cached outputs."""

    def __init__(self, attn_row: list[int], mlp_row: list[int]) -> None:
        self.rows = (attn_row, mlp_row)
        self.plan = (True, True)
        self.cache: dict[tuple[int, int], torch.Tensor] = {}

    def at(self, step: int) -> None:
        self.plan = (bool(self.rows[0][step]), bool(self.rows[1][step]))


def diffusers_ideal(block: nn.Module, i: int, state: StepState, full: bool) -> Callable:
    """A lean ada_norm_zero BasicTransformerBlock forward that reuses by the ideal rule."""
    norm1, norm3, attn, ff = block.norm1, block.norm3, block.attn1, block.ff

    def forward(hidden_states, timestep=None, class_labels=None, **_: Any) -> torch.Tensor:
        compute_attn, compute_ff = state.plan
        emb = norm1.linear(
            norm1.silu(norm1.emb(timestep, class_labels, hidden_dtype=hidden_states.dtype))
        )
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
        if compute_attn or not full:
            x = norm1.norm(hidden_states) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        if compute_attn:
            state.cache[i, 0] = attn(x)
        hidden_states = gate_msa.unsqueeze(1) * state.cache[i, 0] + hidden_states
        if compute_ff or not full:
            x = norm3(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        if compute_ff:
            state.cache[i, 1] = ff(x)
        return gate_mlp.unsqueeze(1) * state.cache[i, 1] + hidden_states

    return forward


def original_ideal(block: nn.Module, i: int, state: StepState, full: bool) -> Callable:
    """A DiTBlock forward (original DiT structure) that reuses by the ideal rule."""

    def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    def forward(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        compute_attn, compute_mlp = state.plan
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        if compute_attn or not full:
            h = modulate(block.norm1(x), shift_msa, scale_msa)
        if compute_attn:
            state.cache[i, 0] = block.attn(h)
        x = x + gate_msa.unsqueeze(1) * state.cache[i, 0]
        if compute_mlp or not full:
            h = modulate(block.norm2(x), shift_mlp, scale_mlp)
        if compute_mlp:
            state.cache[i, 1] = block.mlp(h)
        return x + gate_mlp.unsqueeze(1) * state.cache[i, 1]

    return forward


def build(kind: str, size: str, device: str, dtype: torch.dtype) -> nn.Module:
    """A random model of the given family and size."""
    layers, heads, head_dim, side = SIZES[size]
    torch.manual_seed(0)
    if kind == "diffusers":
        from diffusers import DiTTransformer2DModel

        model = DiTTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=4,
            out_channels=8,
            num_layers=layers,
            sample_size=side,
            num_embeds_ada_norm=1000,
        )
    else:
        from tests.models.original_dit import DiT

        model = DiT(
            input_size=side,
            hidden_size=heads * head_dim,
            depth=layers,
            num_heads=heads,
            num_classes=1000,
        )
    return model.to(device=device, dtype=dtype).eval()


def make_sampler(
    model: nn.Module, kind: str, steps: int, batch: int
) -> Callable[[Callable[[int], None] | None], torch.Tensor]:
    """DDIM with guidance as one doubled batch; ``on_step(i)`` runs before each model call."""
    from diffusers import DDIMScheduler

    param = next(model.parameters())
    side = SIZES_BY_MODEL[id(model)]
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, 4, side, side, generator=gen).to(param.device, param.dtype)
    labels = torch.cat([torch.arange(batch) % 1000, torch.full((batch,), 1000)]).to(param.device)
    stamps = [t.to(param.device).expand(2 * batch).contiguous() for t in scheduler.timesteps]

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if kind == "diffusers":
            return model(x, timestep=t, class_labels=labels).sample
        return model(x, t, labels)

    @torch.no_grad()
    def run(on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        x = noise
        for i, (t, tt) in enumerate(zip(scheduler.timesteps, stamps)):
            if on_step is not None:
                on_step(i)
            out = call(torch.cat([x, x]), tt)
            cond, uncond = out[:, :4].chunk(2)
            x = scheduler.step(uncond + 4.0 * (cond - uncond), t, x).prev_sample
        return x

    return run


SIZES_BY_MODEL: dict[int, int] = {}


@contextlib.contextmanager
def patched_blocks(model: nn.Module, kind: str, state: StepState, full: bool):
    """Install the hand-written ideal block forwards; remove them on exit."""
    blocks = model.transformer_blocks if kind == "diffusers" else model.blocks
    make = diffusers_ideal if kind == "diffusers" else original_ideal
    for i, block in enumerate(blocks):
        block.forward = make(block, i, state, full)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def timed(configs: dict[str, Callable[[], Any]], repeats: int, cuda: bool) -> dict[str, float]:
    """Median seconds per configuration; one warm-up each, then interleaved repeats."""
    for fn in configs.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(repeats):
        for label, fn in configs.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            samples[label].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench(kind: str, args: argparse.Namespace, batch: int, compiled: bool) -> list[str]:
    """Measure one model family at one batch; return Markdown table rows."""
    from SmoothCache import SmoothCacheHelper

    dtype = getattr(torch, args.dtype)
    model = build(kind, args.size, args.device, dtype)
    SIZES_BY_MODEL[id(model)] = SIZES[args.size][3]
    paper = Schedule.shipped(f"dit-xl-2-256/{SCHEDULES[args.steps]}")
    row = list(paper.rows["attn"])
    kinds = ("attn1", "ff") if kind == "diffusers" else ("attn", "mlp")
    schedule = {k: row for k in kinds}
    run = make_sampler(model, kind, args.steps, batch)
    target = torch.compile(model) if compiled else model
    if compiled:
        run = make_sampler(target, kind, args.steps, batch)
        SIZES_BY_MODEL[id(target)] = SIZES[args.size][3]

    def ours() -> torch.Tensor:
        with smoothcache.enabled(target, schedule):
            return run()

    def ideal(full: bool, skip: bool) -> Callable[[], torch.Tensor]:
        state = StepState(row if skip else [1] * len(row), row if skip else [1] * len(row))

        def go() -> torch.Tensor:
            with patched_blocks(model, kind, state, full):
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
    configs["smoothcache"] = ours
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
        if label.startswith(("hand", "ideal")):
            speedup = hand / seconds
        else:
            speedup = base / seconds
        eff = ""
        if not label.startswith(("hand", "uncached")):
            eff = f"{speedup / ideal_module:.3f} | {speedup / ideal_full:.3f}"
        else:
            eff = " | "
        lines.append(
            f"| {kind} | {mode} | {batch} | {label} | {seconds * 1000:.1f} | {speedup:.2f}x | {eff} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=50, choices=sorted(SCHEDULES))
    parser.add_argument("--batch", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["diffusers", "original"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="also measure under torch.compile")
    parser.add_argument("--compile-batch", type=int, nargs="+", default=None)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"device {args.device} ({name}), torch {torch.__version__}, dtype {args.dtype}, size "
        f"{args.size} {SIZES[args.size]}, {args.steps} DDIM steps, schedule "
        f"{SCHEDULES[args.steps]} (48% of branch-steps computed at 50 steps), guidance as one "
        f"doubled batch, median of {args.repeats} interleaved runs"
    )
    print()
    print("| model | mode | images | configuration | ms / 50 steps | speedup | eff. vs module "
          "ideal | eff. vs full ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.models:
        for batch in args.batch:
            for line in bench(kind, args, batch, compiled=False):
                print(line, flush=True)
    if args.compile:
        for batch in args.compile_batch or args.batch:
            for line in bench("diffusers", args, batch, compiled=True):
                print(line, flush=True)


if __name__ == "__main__":
    main()
