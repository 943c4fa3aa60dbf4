"""``smoothcache demo``: SmoothCache end to end on the shipped reference model, in under a minute.

The demo tunes a schedule for the reference model (:mod:`smoothcache.reference`) with
:func:`smoothcache.tune`, samples the same seeds without caching, with the tuned schedule and
with the paper's rule at the same budget, and prints what caching bought and what it cost:
latency and speedup, branch-steps computed, the error of the cached samples against the uncached
ones, and a digits classifier's accuracy on each. It writes a PNG of the uncached samples next to
the tuned ones. Latencies are the median of a few runs, uncached and cached runs interleaved so
that a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import torch

from smoothcache.engine import enabled
from smoothcache.reference import (
    digits_classifier,
    image_grid,
    load_reference_model,
    psnr,
    relative_l2,
    sample,
)
from smoothcache.tuner import tune


@contextmanager
def _progress(enabled_: bool) -> Iterator[Callable[[str], Callable[[int], None]]]:
    """A tqdm counter of sampler steps on stderr; yields ``phase(name)``, which names the phase
    and returns a step callback for :func:`smoothcache.reference.sample`. Without tqdm it is
    silent."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(unit="step", file=sys.stderr, leave=False) if tqdm is not None and enabled_ else None

    def phase(name: str) -> Callable[[int], None]:
        if bar is None:
            return lambda _step: None
        bar.set_description_str(name, refresh=False)
        return lambda _step: bar.update(1)

    try:
        yield phase
    finally:
        if bar is not None:
            bar.close()


def _panel(images: torch.Tensor, title: str) -> Any:
    """A PIL image: a title line above a grid of ``images``, ten per row (one per class)."""
    from PIL import Image, ImageDraw

    grid = Image.fromarray(image_grid(images, nrow=10, scale=4))
    panel = Image.new("L", (grid.width, grid.height + 14), 255)
    panel.paste(grid, (0, 14))
    ImageDraw.Draw(panel).text((2, 1), title, fill=0)
    return panel


def save_comparison(
    uncached: torch.Tensor, cached: torch.Tensor, path: str | Path, cached_title: str
) -> Path:
    """Write a PNG with the uncached samples on the left and the cached ones on the right."""
    from PIL import Image

    left, right = _panel(uncached, "no cache"), _panel(cached, cached_title)
    gap = 12
    canvas = Image.new("L", (left.width + gap + right.width, max(left.height, right.height)), 255)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    path = Path(path)
    canvas.save(path)
    return path


def run_demo(
    *,
    out_png: str | Path = "smoothcache-demo.png",
    num_samples: int = 40,
    compute_fraction: float = 0.3,
    calibration_samples: int = 10,
    num_steps: int = 50,
    guidance_scale: float = 1.5,
    seed: int = 0,
    repeats: int = 3,
    progress: bool = True,
    out: TextIO | None = None,
) -> int:
    """Tune a schedule, then compare it and the paper's rule with uncached sampling; print a
    table to ``out``.

    :func:`smoothcache.tune` makes the schedule at ``compute_fraction`` of the branch-steps from
    batches of ``calibration_samples`` samples (calibration seed ``seed + 1``, held-out seed
    ``seed + 2``, apart from the ``num_samples`` evaluation samples of seed ``seed``); the
    paper's rule at the same budget comes from the same calibration (``tuned.curves``). Each
    variant is sampled ``repeats`` times, interleaved, and timed by the median. Returns the exit
    status, 0.
    """
    if num_samples < 1 or calibration_samples < 1 or repeats < 1 or num_steps < 2:
        raise ValueError(
            "num_samples, calibration_samples and repeats must be >= 1 and num_steps >= 2, found "
            f"{num_samples}, {calibration_samples}, {repeats} and {num_steps}"
        )
    out = out if out is not None else sys.stdout
    model = load_reference_model()
    classifier = digits_classifier()
    options = {"num_steps": num_steps, "guidance_scale": guidance_scale}
    labels = torch.arange(num_samples) % 10

    with _progress(progress) as phase:
        step = phase("tuning")

        def run(batch_seed: int) -> torch.Tensor:
            batch = torch.arange(calibration_samples) % 10
            return sample(model, batch, seed=batch_seed, on_step=step, **options)

        started = time.perf_counter()
        tuned = tune(
            model,
            run,
            compute_fraction=compute_fraction,
            calibration_seed=seed + 1,
            held_out_seed=seed + 2,
        )
        tune_seconds = time.perf_counter() - started
        schedules = {
            "SmoothCache, the paper's rule": tuned.curves.schedule(
                compute_fraction=compute_fraction, method="paper"
            ),
            "SmoothCache, tuned": tuned.schedule,
        }
        times: dict[str, list[float]] = {name: [] for name in ["no cache", *schedules]}
        results: dict[str, torch.Tensor] = {}
        stats: dict[str, Any] = {}
        for _ in range(repeats):
            begin = time.perf_counter()
            results["no cache"] = sample(
                model, labels, seed=seed, on_step=phase("no cache"), **options
            )
            times["no cache"].append(time.perf_counter() - begin)
            for name, schedule in schedules.items():
                with enabled(model, schedule) as session:
                    begin = time.perf_counter()
                    results[name] = sample(model, labels, seed=seed, on_step=phase(name), **options)
                    times[name].append(time.perf_counter() - begin)
                stats[name] = session.stats

    plain = results["no cache"]
    plain_s = statistics.median(times["no cache"])
    cells = stats["SmoothCache, tuned"].total_computed + stats["SmoothCache, tuned"].total_reused
    rows = [("no cache", plain_s, 1.0, f"{cells}/{cells} (100%)", "-", "-", plain)]
    for name in schedules:
        seconds, computed = statistics.median(times[name]), stats[name].total_computed
        rows.append(
            (
                name,
                seconds,
                plain_s / seconds,
                f"{computed}/{cells} ({computed / cells:.0%})",
                f"{psnr(results[name], plain):.1f} dB",
                f"{relative_l2(results[name], plain):.4f}",
                results[name],
            )
        )
    params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    print(
        f"smoothcache demo: reference model digits-dit ({params / 1e6:.1f}M parameters), DDIM "
        f"{num_steps} steps, guidance {guidance_scale:g}, {num_samples} samples in one batch, "
        f"{device}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}",
        file=out,
    )
    print(
        f"tuned for compute <= {compute_fraction:g} in {tune_seconds:.0f} s ({tuned.runs} runs "
        f"of {calibration_samples} samples): {tuned.candidates[tuned.chosen].label}; the "
        "paper's rule at the same budget, from the same calibration, beside it",
        file=out,
    )
    header = ("", "time", "speedup", "branch-steps computed", "PSNR", "rel L2", "accuracy")
    table = [header] + [
        (
            name,
            f"{seconds:.2f} s",
            f"{speedup:.2f}x",
            computed,
            quality,
            rel,
            f"{classifier.accuracy(images, labels):.1%}",
        )
        for name, seconds, speedup, computed, quality, rel, images in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    print(
        f"time: median of {repeats} runs. PSNR, rel L2: cached against uncached samples, same "
        f"seeds.\naccuracy: a digits classifier ({classifier.test_accuracy:.1%} on held-out real "
        "digits) on the class each sample was drawn for.",
        file=out,
    )
    path = save_comparison(plain, results["SmoothCache, tuned"], out_png, f"tuned ({rows[2][3]})")
    print(f"wrote {path}: uncached samples left, tuned right, one column per class", file=out)
    return 0
