"""TaylorSeer against FORA on the second digits DiT: batch, median and worst per-sample PSNR.

Samples the evaluation batch (``--samples`` labels ``arange(n) % 10``, seed 0, DDIM 50,
guidance 1.5) without a cache, then with diffusers' TaylorSeer (order 1, every 4th and every
3rd step, on every block's ``attn1`` and ``ff``) and with FORA (``smoothcache.Schedule.uniform``
every 4th and 3rd step), and prints, against the uncached samples: the share of branch-steps
computed, the batch PSNR (from the mean squared error over all samples), the median and worst
per-sample PSNR, and how many samples fall below 20 dB. Also the digits classifier's accuracy on
the uncached samples. Run::

    python -m benchmarks.second_model.check                      # the weights beside this file
    python -m benchmarks.second_model.check --path smoothcache/reference   # the shipped model
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import smoothcache
from benchmarks.common.bench import BranchCounter
from benchmarks.second_model.model import FOLDER, load, make_scheduler
from smoothcache import Schedule
from smoothcache.reference import digits_classifier, psnr, reference_config, sample

KINDS = ("attn1", "ff")
BROKEN_DB = 20.0


@dataclass
class Result:
    """One caching method's samples, scored against the uncached ones."""

    method: str
    computed: float
    batch_psnr: float
    median_psnr: float
    worst_psnr: float
    broken: int
    worst_samples: list[int]


def per_sample_psnr(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """PSNR in dB of every sample against its reference, pixels in [-1, 1]."""
    diff = (images.double() - reference.double()).flatten(1)
    mse = diff.pow(2).mean(1).numpy()
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(4.0 / mse)


def taylorseer_model(model: torch.nn.Module, folder: Path, interval: int) -> torch.nn.Module:
    """A copy of ``model`` with diffusers' ``CacheMixin`` and TaylorSeer (order 1) enabled."""
    from diffusers import DiTTransformer2DModel
    from diffusers.hooks import TaylorSeerCacheConfig
    from diffusers.models.cache_utils import CacheMixin

    class DiTWithCacheMixin(CacheMixin, DiTTransformer2DModel):
        """DiTTransformer2DModel with the caching interface of diffusers' newer models."""

    copy = DiTWithCacheMixin(**reference_config(folder)["model"])
    copy.load_state_dict(model.state_dict())
    for module in copy.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0
    copy = copy.to(next(model.parameters()).device).eval().requires_grad_(False)
    copy.enable_cache(
        TaylorSeerCacheConfig(
            cache_interval=interval,
            max_order=1,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|ff)"],
        )
    )
    return copy


def evaluate(
    folder: str | Path = FOLDER,
    samples: int = 200,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 1.5,
    device: str = "cpu",
    intervals: tuple[int, ...] = (4, 3),
    log: Callable[[str], None] = print,
) -> tuple[float, list[Result]]:
    """The uncached samples' classifier accuracy, and one :class:`Result` per caching method.

    Each of ``intervals`` gives a TaylorSeer row (``cache_interval``) and a FORA row (every
    that many steps).
    """
    from diffusers.hooks import HookRegistry

    folder = Path(folder)
    model = load(device=device, folder=folder)
    labels = torch.arange(samples) % 10

    def run(net: torch.nn.Module) -> torch.Tensor:
        images = sample(
            net,
            labels,
            num_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            scheduler=make_scheduler(folder, steps),
        )
        return images.detach().cpu()

    start = time.perf_counter()
    reference = run(model)
    accuracy = digits_classifier().accuracy(reference, labels)
    log(f"uncached: accuracy {accuracy:.1%} ({time.perf_counter() - start:.0f} s)")

    methods: list[tuple[str, torch.nn.Module, Callable[[], Any]]] = []
    for interval in intervals:
        copy = taylorseer_model(model, folder, interval)
        registry = HookRegistry.check_if_exists_or_initialize(copy)

        def cached(copy: torch.nn.Module = copy, registry: Any = registry) -> torch.Tensor:
            try:
                with copy.cache_context("cond_uncond"):
                    return run(copy)
            finally:
                registry.reset_stateful_hooks()  # what pipelines do after every generation

        methods.append((f"TaylorSeer interval {interval}, order 1", copy, cached))
    for every in intervals:
        schedule = Schedule.uniform(steps, every, KINDS)

        def fora(schedule: Schedule = schedule) -> torch.Tensor:
            with smoothcache.enabled(model, schedule):
                return run(model)

        methods.append((f"FORA every {every}", model, fora))

    results = []
    for name, net, method in methods:
        counter = BranchCounter(net)
        images = method()
        values = per_sample_psnr(images, reference)
        order = np.argsort(values)
        result = Result(
            method=name,
            computed=counter.calls / (counter.branches * steps),
            batch_psnr=psnr(images, reference),
            median_psnr=float(statistics.median(values.tolist())),
            worst_psnr=float(values.min()),
            broken=int((values < BROKEN_DB).sum()),
            worst_samples=[int(i) for i in order[:3]],
        )
        results.append(result)
        log(f"{name}: batch {result.batch_psnr:.1f} dB ({time.perf_counter() - start:.0f} s)")
    return accuracy, results


def table(results: list[Result]) -> list[str]:
    """The results as a Markdown table."""
    lines = [
        "| method | branch-steps computed | batch PSNR (dB) | median per-sample PSNR (dB) | "
        f"worst per-sample PSNR (dB) | samples < {BROKEN_DB:g} dB | worst samples |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        worst = ", ".join(str(i) for i in r.worst_samples)
        lines.append(
            f"| {r.method} | {r.computed:.0%} | {r.batch_psnr:.1f} | {r.median_psnr:.1f} | "
            f"{r.worst_psnr:.1f} | {r.broken} | {worst} |"
        )
    return lines


def main() -> None:
    """Parse the flags, evaluate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=FOLDER, help="model folder (this one)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument(
        "--intervals", default="4,3", help="cache intervals of the TaylorSeer and FORA rows (4,3)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    accuracy, results = evaluate(
        args.path,
        args.samples,
        args.seed,
        args.steps,
        args.guidance,
        args.device,
        tuple(int(i) for i in args.intervals.split(",")),
    )
    print(
        f"\n{args.path}: {args.samples} samples, seed {args.seed}, DDIM {args.steps}, "
        f"guidance {args.guidance:g}; classifier accuracy of the uncached samples "
        f"{accuracy:.1%}\n"
    )
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
