"""Quality against speed of caching methods on a digits DiT (SmoothCache Table 1), with targets.

One process, one model (``--model reference``: ``smoothcache.reference``; ``--model second``: the
model of ``benchmarks/second_model/model.py``), one sampler (DDIM, 50 steps, guidance 1.5 as one
doubled batch) and the same evaluation samples for every row:

- no cache at 50 steps (the reference every error is measured against), and DDIM at ``k`` steps
  for ``k = round(50 x compute)`` of each caching row ("just use fewer steps");
- FORA, every 2nd to 5th step (``Schedule.uniform``);
- SmoothCache's rule at several alphas and compute budgets, per kind and per block, and this
  library's schedule search (``method="sensitivity"``) at 50%, 35% and 25% of the branch-steps,
  calibrated here on a separate set of samples;
- the library's forecast schedules, chosen on held-out samples
  (``benchmarks/common/forecast_rows.py``; ``--no-forecast`` leaves them out);
- the caching methods built into diffusers, applied to the same weights: first-block cache,
  TaylorSeer (orders 1 and 2, intervals 2 to 8), MagCache (its ratios calibrated here with its
  own calibration mode) and pyramid attention broadcast;
- cache-dit's DBCache, with and without its TaylorSeer calibrator (left out when cache-dit is
  not installed).

Quality comes from one run of every row on ``--samples`` evaluation samples: the batch PSNR
against the uncached samples (of the mean squared error over all samples), its 90% bootstrap
interval, the median and the worst per-sample PSNR, relative L2, the accuracy of a digits
classifier and a Fréchet distance of its features. Latency comes from the first
``--timing-samples`` of them: the median of ``--repeats`` runs, rows interleaved. Every library
forecast row is compared with the upper envelope of all other methods' rows (its peers) at its
compute, with a bootstrap interval of the margin. Writes
``docs/quality_speed.md`` and ``.png`` (``docs/quality_speed_second.*`` for the second model)::

    python -m benchmarks.quality_speed --threads 1                  # the page in the docs
    python -m benchmarks.quality_speed --threads 1 --model second   # the second model's page
    python -m benchmarks.quality_speed --quick --no-forecast        # a small run, to /tmp

The rows, their scoring, the page and the plot are in :mod:`benchmarks.common`; this script is
the settings (:data:`FULL`, :data:`QUICK`) and the run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from benchmarks.common.bench import MODELS, Bench
from benchmarks.common.calibration import add_curves_option
from benchmarks.common.forecast_rows import forecast_rows
from benchmarks.common.peers import (
    Settings,
    cache_dit_rows,
    cache_dit_version,
    diffusers_rows,
    fewer_steps_rows,
    smoothcache_rows,
)
from benchmarks.common.plot import quality_plot
from benchmarks.common.report import CLOCKS, RunInfo, report, targets_table
from benchmarks.common.scoring import evaluate, quality_line, score, targets, time_once
from benchmarks.common.stats import Bootstrap
from benchmarks.common.timing import Log
from smoothcache.reference import digits_classifier

FULL = Settings(
    fora=(2, 3, 4, 5, 6),
    alphas=(0.05, 0.08, 0.2),
    paper_budgets=(0.5, 0.35),
    per_block=(False, True),
    search_budgets=(0.5, 0.35, 0.25),
    first_block=(0.05, 0.1, 0.2),
    taylor_orders=(1, 2),
    taylor_intervals=(2, 3, 4, 5, 6, 7, 8),  # 7 and 8: peers at 20% and below
    magcache=(0.02, 0.12),
    pab=((2, (100, 800)), (3, (0, 1000))),
    cache_dit=(0.1, 0.2, 0.4),
    cache_dit_taylor=(0.1, 0.2, 0.4),
)
QUICK = Settings(
    fora=(2, 4),
    alphas=(0.08,),
    paper_budgets=(0.35,),
    per_block=(False,),
    search_budgets=(0.35,),
    first_block=(0.1,),
    taylor_orders=(1, 2),
    taylor_intervals=(3,),
    magcache=(0.12,),
    pab=(),
    cache_dit=(0.2,),
    cache_dit_taylor=(0.2,),
)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="reference", help="(reference)")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples (1000)")
    parser.add_argument(
        "--timing-samples", type=int, default=100, help="samples per timed run (100)"
    )
    parser.add_argument("--calibration-samples", type=int, default=10, help="(default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, help="bootstrap replicates (2000, at least 1000)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="latency as process CPU time (the default; with --threads 1) or wall-clock time",
    )
    parser.add_argument(
        "--no-forecast",
        action="store_true",
        help="leave out the library's forecast rows (benchmarks/common/forecast_rows.py)",
    )
    parser.add_argument("--out-dir", type=Path, help="default docs/, or /tmp with --quick")
    parser.add_argument(
        "--name",
        help="file name of the .md and .png (quality_speed, or quality_speed_second for the "
        "second model)",
    )
    add_curves_option(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50 samples (20 timed), 5 calibration samples, 1 run per row, 1000 bootstrap "
        "replicates, a few settings per method",
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.timing_samples, args.calibration_samples = 50, 20, 5
        args.repeats, args.bootstrap = 1, 1000
    if args.bootstrap < 1000:
        parser.error("--bootstrap needs at least 1000 replicates")
    if args.name is None:
        args.name = "quality_speed" + ("_second" if args.model == "second" else "")
    return args


def main() -> None:
    """Build the rows, score their quality, time them, compare the forecast, write the page."""
    args = parse_args()
    out_dir = args.out_dir or (Path("/tmp") if args.quick else Path("docs"))
    if args.threads:
        torch.set_num_threads(args.threads)
    log, load_start = Log(), os.getloadavg()[0]
    settings = QUICK if args.quick else FULL

    bench = Bench(
        args.model,
        samples=args.samples,
        timing_samples=args.timing_samples,
        calibration_samples=args.calibration_samples,
        steps=args.steps,
        guidance=args.guidance,
        device=torch.device(args.device),
    )
    digits_classifier()
    rows = [bench.plain(bench.steps)]
    rows += smoothcache_rows(bench, settings, log, args.curves)
    if not args.no_forecast:
        rows += forecast_rows(bench, log, args.curves)
    rows += diffusers_rows(bench, settings, log)
    rows += cache_dit_rows(bench, log, settings.cache_dit, settings.cache_dit_taylor)

    log(f"quality: {len(rows)} rows, {bench.samples} samples each, then fewer steps")
    evaluate(rows[0], None)
    log(f"  no cache: {rows[0].quality_seconds:.0f} s")
    for row in rows[1:]:
        evaluate(row, rows[0].images)
        log(quality_line(bench, row))
    fewer = fewer_steps_rows(bench, rows[1:])  # DDIM at the compute of every row scored
    for row in fewer:
        evaluate(row, rows[0].images)
        log(quality_line(bench, row))
    rows[1:1] = fewer

    bench.sample(bench.model, 5, timing=True)  # warm-up
    for repeat in range(args.repeats):
        log(f"latency: round {repeat + 1} of {args.repeats}, {bench.timing_samples} samples a row")
        for row in rows[::-1] if repeat % 2 else rows:  # alternate the order against drift
            time_once(row, bench.device)

    boot = Bootstrap.draw(bench.samples, args.bootstrap, seed=0)
    scores = score(rows, bench, args.clock, boot)
    target_lines = targets(scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{args.name}.md", out_dir / f"{args.name}.png"
    info = RunInfo(
        minutes=(time.perf_counter() - log.started) / 60,
        loads=(load_start, os.getloadavg()[0]),
        forecast=not args.no_forecast,
        cache_dit=cache_dit_version(),
        draws=args.bootstrap,
    )
    lines = report(args, bench, scores, target_lines, info, md_path)
    quality_plot(scores, bench.loaded.title, png_path, args.clock, bench.steps)
    print("\n".join(lines))
    print()
    print("\n".join(targets_table(target_lines, args.model == "second")))
    log(f"wrote {md_path} and {png_path} after {info.minutes:.1f} minutes")


if __name__ == "__main__":
    main()
