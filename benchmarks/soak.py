"""Soak: 1,000 mixed generations under caching; memory and cache bytes must stay flat.

Runs the shipped reference model (``smoothcache.reference``) through generations that mix step
counts (6, 8, 10), batch sizes (1-3), guidance modes (none, one doubled batch, two calls per
step), schedules (reuse and forecast), ``session.reset()`` calls, model calls that raise (a
class label out of range, caught), fresh sessions and ``copy.deepcopy`` of the model inside a
session. After a warm-up it samples, every 50 generations, the process's resident memory, the
Python objects alive, the tensors alive and the session's cache bytes between generations, and
prints them with their spread. A leak of one output per generation would add a multiple of
``1000 * output bytes`` to them; the pass criteria are printed next to the figures.

    python -m benchmarks.soak [--generations 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import random
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

import smoothcache
from smoothcache import Schedule
from smoothcache.reference import load_reference_model, make_scheduler, sample

WARMUP = 100
EVERY = 50


def rss_mib() -> float:
    """Resident memory now (Linux /proc), else the peak (``ru_maxrss``), in MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() touches deprecated torch module attributes
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


@torch.no_grad()
def two_calls(model: torch.nn.Module, labels: list[int], steps: int, seed: int) -> torch.Tensor:
    """DDIM with guidance as two model calls per step (cond, then uncond)."""
    scheduler = make_scheduler(steps)
    classes = int(model.config.num_embeds_ada_norm)
    cond = torch.tensor(labels)
    null = torch.full_like(cond, classes)
    x = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        timestep = t.expand(len(labels))
        eps_c = model(x, timestep=timestep, class_labels=cond).sample
        eps_u = model(x, timestep=timestep, class_labels=null).sample
        eps = eps_u + 1.5 * (eps_c - eps_u)
        x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def schedule_for(steps: int, forecast: bool) -> Schedule:
    schedule = Schedule.uniform(steps, 2, ["attn1", "ff"])
    return schedule.forecasting(1) if forecast else schedule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    model = load_reference_model()
    session = None
    peak = 0
    samples: list[tuple[int, float, int, int, int]] = []
    counts = {"raised": 0, "resets": 0, "sessions": 0, "copies": 0}
    start = time.perf_counter()
    for gen in range(args.generations):
        steps = rng.choice((6, 8, 10))
        if session is None or session.schedule.num_steps != steps or rng.random() < 0.05:
            if session is not None:
                session.disable()
                peak = max(peak, session.stats.peak_cache_bytes)
            session = smoothcache.enable(model, schedule_for(steps, rng.random() < 0.5))
            counts["sessions"] += 1
        labels = [rng.randrange(10) for _ in range(rng.randint(1, 3))]
        mode = rng.choice(("none", "batch", "two-calls"))
        if rng.random() < 0.03:  # a model call that raises mid-session
            try:
                model(torch.zeros(1, 1, 8, 8), timestep=torch.tensor([999]),
                      class_labels=torch.tensor([10**6]))  # fmt: skip
            except IndexError:
                counts["raised"] += 1
        if mode == "two-calls":
            two_calls(model, labels, steps, seed=gen)
        else:
            sample(model, labels, num_steps=steps, guidance_scale=1.5 if mode == "batch" else 1.0,
                   seed=gen)  # fmt: skip
        if rng.random() < 0.05:
            session.reset()
            counts["resets"] += 1
        if rng.random() < 0.01:
            copy.deepcopy(model)  # a clean copy (inside the session), dropped at once
            counts["copies"] += 1
        if gen + 1 >= WARMUP and (gen + 1) % EVERY == 0:
            gc.collect()
            stats = session.stats
            samples.append((gen + 1, rss_mib(), len(gc.get_objects()), live_tensors(),
                            stats.cache_bytes))  # fmt: skip
    assert session is not None
    session.disable()
    peak = max(peak, session.stats.peak_cache_bytes)
    seconds = time.perf_counter() - start
    print(
        f"soak: {args.generations} generations in {seconds:.0f} s on {platform.machine()} CPU, "
        f"float32, torch {torch.__version__}, Python {sys.version.split()[0]}; "
        f"{counts['sessions']} sessions, {counts['resets']} resets, {counts['raised']} model "
        f"calls that raised, {counts['copies']} deep copies; largest peak cache of a session "
        f"{peak} bytes"
    )
    print(f"{'generation':>10}  {'RSS MiB':>8}  {'objects':>8}  {'tensors':>7}  {'cache B':>8}")
    for gen, rss, objects, tensors, cache in samples:
        print(f"{gen:>10}  {rss:>8.1f}  {objects:>8}  {tensors:>7}  {cache:>8}")
    rss = [s[1] for s in samples]
    objects = [s[2] for s in samples]
    tensors = [s[3] for s in samples]
    caches = [s[4] for s in samples]
    flat_rss = max(rss) - min(rss) < 16
    flat_objects = max(objects) - min(objects) < 500
    flat_tensors = max(tensors) - min(tensors) <= 8
    no_cache = max(caches) == 0
    print(
        f"after warm-up: RSS spread {max(rss) - min(rss):.1f} MiB (pass < 16: {flat_rss}), "
        f"objects spread {max(objects) - min(objects)} (pass < 500: {flat_objects}), tensors "
        f"spread {max(tensors) - min(tensors)} (pass <= 8: {flat_tensors}), cache bytes between "
        f"generations max {max(caches)} (pass == 0: {no_cache})"
    )
    return 0 if flat_rss and flat_objects and flat_tensors and no_cache else 1


if __name__ == "__main__":
    sys.exit(main())
