"""``smoothcache demo``: SmoothCache end to end on the shipped reference model, in about a minute.

The demo calibrates the reference model (:mod:`smoothcache.reference`) on a few samples, turns
the error curves into a schedule, samples the same seeds with and without the schedule, and
prints what caching bought and what it cost: latency and speedup, branch-steps computed, the
error of the cached samples against the uncached ones, and a digits classifier's accuracy on
both. It writes a PNG of the uncached samples next to the cached ones. Latencies are the median
of a few runs, uncached and cached runs interleaved so that a busy machine slows both alike.
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

from smoothcache.calibration import calibrating
from smoothcache.engine import enabled
from smoothcache.reference import (
    digits_classifier,
    image_grid,
    load_reference_model,
    psnr,
    relative_l2,
    sample,
)
from smoothcache.schedule import Schedule


@contextmanager
def _progress(total: int, enabled_: bool) -> Iterator[Callable[[str], Callable[[int], None]]]:
    """A tqdm bar on stderr; yields ``phase(name)``, which names the phase and returns a step
    callback for :func:`smoothcache.reference.sample`. Without tqdm the bar is silent."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    bar = (
        tqdm(total=total, unit="step", file=sys.stderr, leave=False)
        if tqdm is not None and enabled_
        else None
    )

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
    compute_fraction: float | None = None,
    alpha: float | None = None,
    per_block: bool = False,
    calibration_samples: int = 5,
    num_steps: int = 50,
    guidance_scale: float = 1.5,
    seed: int = 0,
    repeats: int = 3,
    progress: bool = True,
    out: TextIO | None = None,
) -> int:
    """Calibrate, schedule and compare cached with uncached sampling; print a table to ``out``.

    The schedule is built with the paper's rule from ``calibration_samples`` samples (seed
    ``seed + 1``, separate from the ``num_samples`` evaluation samples, seed ``seed``), either at
    error threshold ``alpha`` or at the largest share of branch-steps not above
    ``compute_fraction`` (the default, 0.5, when neither is given). Each variant is sampled
    ``repeats`` times, interleaved, and timed by the median. Returns the exit status, 0.
    """
    if alpha is not None and compute_fraction is not None:
        raise ValueError("give alpha or compute_fraction, not both")
    if alpha is None and compute_fraction is None:
        compute_fraction = 0.5
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
    total = num_steps * (1 + 2 * repeats)

    with _progress(total, progress) as phase:
        with calibrating(model, lookahead=3) as recorder:
            sample(
                model,
                torch.arange(calibration_samples) % 10,
                seed=seed + 1,
                on_step=phase("calibrating"),
                **options,
            )
        schedule: Schedule = recorder.curves().schedule(
            alpha, compute_fraction=compute_fraction, per_block=per_block, method="paper"
        )
        times: dict[str, list[float]] = {"plain": [], "cached": []}
        results: dict[str, torch.Tensor] = {}
        stats = None
        for _ in range(repeats):
            start = time.perf_counter()
            results["plain"] = sample(
                model, labels, seed=seed, on_step=phase("no cache"), **options
            )
            times["plain"].append(time.perf_counter() - start)
            with enabled(model, schedule) as session:
                start = time.perf_counter()
                results["cached"] = sample(
                    model, labels, seed=seed, on_step=phase("SmoothCache"), **options
                )
                times["cached"].append(time.perf_counter() - start)
            stats = session.stats
    assert stats is not None

    plain_s = statistics.median(times["plain"])
    cached_s = statistics.median(times["cached"])
    cells = stats.total_computed + stats.total_reused
    plain, cached = results["plain"], results["cached"]
    rows = [
        ("no cache", plain_s, 1.0, f"{cells}/{cells} (100%)", "-", "-", plain),
        (
            "SmoothCache",
            cached_s,
            plain_s / cached_s,
            f"{stats.total_computed}/{cells} ({stats.total_computed / cells:.0%})",
            f"{psnr(cached, plain):.1f} dB",
            f"{relative_l2(cached, plain):.4f}",
            cached,
        ),
    ]
    params = sum(p.numel() for p in model.parameters())
    how = (
        f"alpha={schedule.metadata['alpha']:.4g}"
        if alpha is not None
        else f"compute fraction <= {compute_fraction:g} (alpha={schedule.metadata['alpha']:.4g})"
    )
    device = next(model.parameters()).device
    print(
        f"smoothcache demo: reference model digits-dit ({params / 1e6:.1f}M parameters), DDIM "
        f"{num_steps} steps, guidance {guidance_scale:g}, {num_samples} samples in one batch, "
        f"{device}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}",
        file=out,
    )
    print(
        f"schedule: SmoothCache, {how}, {'per block' if per_block else 'per kind'}, "
        f"calibrated on {calibration_samples} samples",
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
    path = save_comparison(plain, cached, out_png, f"SmoothCache ({rows[1][3]})")
    print(f"wrote {path}: uncached samples left, cached right, one column per class", file=out)
    return 0
