"""smoothcache against the reference implementation (dit-smoothcache) on a diffusers DiT.

Runs in one process, on one model and the same inputs: the uncached transformer, the reference
``DiffuserCacheHelper`` (caches ``attn1`` only; it prints on every branch call, so its stdout is
sent to /dev/null, which favours it), and smoothcache with the same ``attn1`` schedule and with
the schedule applied to ``attn1`` and ``ff``. Each configuration runs a full sampling loop
``--repeats`` times after a warm-up, interleaved; the table reports the median and the speedup
against the uncached median measured in the same process.

    python benchmarks/reference.py --size small --steps 50 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

import smoothcache
from smoothcache import Schedule

SIZES = {  # (layers, heads, head_dim, sample_size): DiT-XL/2 at 256px is (28, 16, 72, 32)
    "tiny": (2, 2, 16, 8),
    "small": (6, 6, 64, 16),
    "xl": (28, 16, 72, 32),
}


def build(size: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A DiT-XL/2-shaped diffusers DiTTransformer2DModel with random weights."""
    from diffusers import DiTTransformer2DModel

    layers, heads, head_dim, sample = SIZES[size]
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        sample_size=sample,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    return model.to(device=device, dtype=dtype).eval()


def sampler(model: torch.nn.Module, steps: int, batch: int) -> Callable[[], torch.Tensor]:
    """A DDIM loop with guidance as one doubled batch (as DiTPipeline calls the model)."""
    from diffusers import DDIMScheduler

    param = next(model.parameters())
    sample = model.config.sample_size
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(steps)
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(batch, 4, sample, sample, generator=gen).to(param.device, param.dtype)
    labels = torch.cat([torch.arange(batch) % 1000, torch.full((batch,), 1000)]).to(param.device)
    timesteps = [t.to(param.device).expand(2 * batch) for t in scheduler.timesteps]

    @torch.no_grad()
    def run() -> torch.Tensor:
        x = noise
        for t, tt in zip(scheduler.timesteps, timesteps):
            out = model(torch.cat([x, x]), timestep=tt, class_labels=labels).sample
            cond, uncond = out[:, :4].chunk(2)
            eps = uncond + 4.0 * (cond - uncond)
            x = scheduler.step(eps, t, x).prev_sample
        return x

    return run


def timed(configs: dict[str, Callable[[], torch.Tensor]], repeats: int, device: str) -> dict:
    """Median wall time of each configuration; runs interleave so drift hits all alike."""
    for run in configs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in configs}
    for _ in range(repeats):
        for label, run in configs.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def main() -> None:
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
    model = build(args.size, args.device, dtype)
    run = sampler(model, args.steps, args.batch)
    name = {30: "ddim-30/alpha-0.35", 50: "ddim-50/alpha-0.18", 70: "ddim-70/alpha-0.08"}
    paper = Schedule.shipped(f"dit-xl-2-256/{name[args.steps]}")
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
    times = timed(configs, args.repeats, args.device)
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
