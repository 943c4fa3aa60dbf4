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
from pathlib import Path

import torch

from benchmarks.common.bench import MODELS, Bench, Row
from benchmarks.common.cache_dit_rows import DEFAULT as CACHE_DIT_DEFAULT
from benchmarks.common.cache_dit_rows import cache_dit_version
from benchmarks.common.checkpoint import Checkpoint
from benchmarks.common.forecast_rows import CALIBRATION_SAMPLES, HELD_OUT
from benchmarks.common.peers import Settings, fewer_steps_rows
from benchmarks.common.plot import quality_plot
from benchmarks.common.protocol import build_rows
from benchmarks.common.report import CLOCKS, RunInfo, report
from benchmarks.common.scoring import evaluate, quality_line, score, targets, time_once
from benchmarks.common.seeds import SPLITS
from benchmarks.common.stats import Bootstrap
from benchmarks.common.tables import targets_table
from benchmarks.common.timing import Log
from smoothcache.reference import digits_classifier

#: The table's sweep: every setting gets a row on the evaluation samples.
FULL = Settings(
    fora=(2, 3, 4, 5, 6),
    alphas=(0.05, 0.08, 0.2),
    paper_budgets=(0.5, 0.35, 0.3, 0.2),
    per_block=(False, True),
    search_budgets=(0.5, 0.35, 0.3, 0.25, 0.2),
    first_block=(0.05, 0.1, 0.2),
    taylor_orders=(1, 2),
    taylor_intervals=(2, 3, 4, 5, 6, 7, 8),  # 7 and 8: peers at 20% and below
    taylor_warmups=(3,),  # diffusers' default
    magcache=(0.02, 0.12),
    pab=((2, (100, 800)), (3, (0, 1000))),
    cache_dit=(CACHE_DIT_DEFAULT, (1, 0, 2, 0.1), (1, 0, 2, 0.2), (1, 0, 2, 0.4)),
    cache_dit_orders=(1,),
)
#: More of each method's documented knobs, run on the held-out samples only: a setting gets a
#: row on the evaluation samples when it is its family's held-out choice at a target budget.
CANDIDATES = Settings(
    fora=(),
    alphas=(),
    paper_budgets=(),
    per_block=(),
    search_budgets=(),
    first_block=(0.3, 0.4),
    taylor_orders=(1, 2),
    taylor_intervals=(3, 4, 5, 6, 7, 8),
    taylor_warmups=(1, 6),
    magcache=(0.06, 0.2),
    pab=((4, (0, 1000)),),
    cache_dit=(
        (8, 0, 8, 0.2),
        (8, 0, 4, 0.12),
        (4, 0, 4, 0.12),
        (2, 0, 4, 0.12),
        (1, 0, 4, 0.3),
        (1, 1, 2, 0.2),
        (2, 2, 2, 0.2),
        (1, 0, 8, 0.3),
    ),
    cache_dit_orders=(1, 2),
)
QUICK = Settings(
    fora=(2, 4),
    alphas=(0.08,),
    paper_budgets=(0.3,),
    per_block=(False,),
    search_budgets=(0.3,),
    first_block=(0.1,),
    taylor_orders=(1,),
    taylor_intervals=(3,),
    taylor_warmups=(3,),
    magcache=(0.12,),
    pab=(),
    cache_dit=((1, 0, 2, 0.2),),
    cache_dit_orders=(1,),
)
QUICK_CANDIDATES = Settings(
    fora=(),
    alphas=(),
    paper_budgets=(),
    per_block=(),
    search_budgets=(),
    first_block=(),
    taylor_orders=(2,),
    taylor_intervals=(4,),
    taylor_warmups=(1,),
    magcache=(),
    pab=(),
    cache_dit=(CACHE_DIT_DEFAULT,),
    cache_dit_orders=(),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default ``sys.argv``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="reference", help="(reference)")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples (1000)")
    parser.add_argument(
        "--timing-samples", type=int, default=100, help="samples per timed run (100)"
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=CALIBRATION_SAMPLES,
        help=f"of every calibrated method, per calibration seed ({CALIBRATION_SAMPLES})",
    )
    parser.add_argument(
        "--held-out",
        type=int,
        default=HELD_OUT,
        help=f"samples every method's setting is chosen on ({HELD_OUT})",
    )
    parser.add_argument(
        "--seeds",
        choices=tuple(SPLITS),
        default="development",
        help="the side of the seed split (docs/evaluation.md): development (default) for "
        "choosing anything, test only for the final tables",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, help="bootstrap replicates (2000, at least 1000)"
    )
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
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
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="save every measurement in this folder as it is made, and read back what an "
        "earlier run of the same command saved (a long run then resumes)",
    )
    parser.add_argument("--out-dir", type=Path, help="default docs/, or /tmp with --quick")
    parser.add_argument(
        "--name",
        help="file name of the .md and .png (quality_speed, or quality_speed_second for the "
        "second model)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50 samples (20 timed), 5 calibration samples, 1 run per row, 1000 bootstrap "
        "replicates, a few settings per method",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.timing_samples, args.calibration_samples = 50, 20, 5
        args.repeats, args.bootstrap, args.held_out = 1, 1000, 20
    if args.bootstrap < 1000:
        parser.error("--bootstrap needs at least 1000 replicates")
    if args.name is None:
        suffix = {"reference": "", "second": "_second", "flow": "_flow"}[args.model]
        args.name = "quality_speed" + suffix + ("_test" if args.seeds == "test" else "")
    return args


def make_bench(args: argparse.Namespace) -> Bench:
    """The bench of the command line ``args``, with its checkpoint (``--checkpoint``)."""
    bench = Bench(
        args.model,
        samples=args.samples,
        timing_samples=args.timing_samples,
        calibration_samples=args.calibration_samples,
        steps=args.steps,
        guidance=args.guidance,
        device=torch.device(args.device),
        seeds=SPLITS[args.seeds],
        held_out_samples=args.held_out,
    )
    if args.checkpoint is not None:
        run = f"{args.model}-{args.seeds}-{args.samples}-{args.held_out}-{args.calibration_samples}"
        run += f"-{args.timing_samples}-{bench.steps}-{bench.guidance:g}" + "-quick" * args.quick
        bench.checkpoint = Checkpoint(args.checkpoint, run)
    return bench


def page_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark built on this page's rows: the page's model, seeds and
    checkpoint, threads and where to write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=MODELS, default="reference")
    parser.add_argument("--seeds", choices=("development", "test"), default="development")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out-dir", type=Path, default=Path("docs"))
    return parser


def read_page(args: argparse.Namespace, suffix: str) -> tuple[Bench, Checkpoint, list[Row], Log]:
    """For a benchmark built on this page (``args`` from :func:`page_parser`): the threads set,
    this page's bench and rows with the uncached row scored, read back from its checkpoint (run
    it first with the same ``--model``, ``--seeds`` and ``--checkpoint``), a checkpoint of the
    page's name plus ``suffix`` for the rows the benchmark adds, and its log."""
    if args.threads:
        torch.set_num_threads(args.threads)
    log = Log()
    page = parse_args(
        ["--model", args.model, "--seeds", args.seeds, "--checkpoint", str(args.checkpoint)]
    )
    bench = make_bench(page)
    assert bench.checkpoint.folder is not None
    saved = Checkpoint(args.checkpoint, bench.checkpoint.folder.name + suffix)
    log("the quality page's rows, read back from its checkpoint")
    rows, _ = build_rows(bench, FULL, CANDIDATES, log, True)
    evaluate(rows[0], None, bench.checkpoint)
    return bench, saved, rows, log


def main() -> None:
    """Build the rows, score their quality, time them, compare the forecast, write the page."""
    args = parse_args()
    out_dir = args.out_dir or (Path("/tmp") if args.quick else Path("docs"))
    if args.threads:
        torch.set_num_threads(args.threads)
    log, load_start = Log(), os.getloadavg()[0]
    settings, candidates = (QUICK, QUICK_CANDIDATES) if args.quick else (FULL, CANDIDATES)
    bench = make_bench(args)
    digits_classifier()
    rows, chosen = build_rows(bench, settings, candidates, log, not args.no_forecast)

    log(f"quality: {len(rows)} rows, {bench.samples} samples each, then fewer steps")
    saved = bench.checkpoint
    evaluate(rows[0], None, saved)
    log(f"  no cache: {rows[0].quality_seconds:.0f} s")
    for row in rows[1:]:
        evaluate(row, rows[0].images, saved)
        log(quality_line(bench, row))
    fewer = fewer_steps_rows(bench, rows[1:])  # DDIM at the compute of every row scored
    for row in fewer:
        evaluate(row, rows[0].images, saved)
        log(quality_line(bench, row))
    rows[1:1] = fewer

    bench.sample(bench.model, 5, timing=True)  # warm-up
    for repeat in range(args.repeats):
        log(f"latency: round {repeat + 1} of {args.repeats}, {bench.timing_samples} samples a row")
        for row in rows[::-1] if repeat % 2 else rows:  # alternate the order against drift
            time_once(row, bench.device, saved, repeat)

    boot = Bootstrap.draw(bench.samples, args.bootstrap, seed=0)
    scores = score(rows, bench, args.clock, boot, chosen)
    target_lines = targets(scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{args.name}.md", out_dir / f"{args.name}.png"
    info = RunInfo(
        minutes=bench.checkpoint.total_minutes(),
        loads=(load_start, os.getloadavg()[0]),
        forecast=not args.no_forecast,
        cache_dit=cache_dit_version(),
        draws=args.bootstrap,
        resumed=bench.checkpoint.read,
    )
    lines = report(args, bench, scores, target_lines, info, md_path)
    quality_plot(scores, bench.loaded.title, png_path, args.clock, bench.steps)
    print("\n".join(lines))
    print()
    print("\n".join(targets_table(target_lines, args.model in ("second", "flow"))))
    if bench.checkpoint.read:
        log(f"read {bench.checkpoint.read} measurements back from {bench.checkpoint.folder}")
    log(f"wrote {md_path} and {png_path} after {info.minutes:.1f} minutes")


if __name__ == "__main__":
    main()
