"""``smoothcache demo``: SmoothCache on the shipped reference model, in under a minute.

The work is :func:`smoothcache.demo.run_demo`; this module declares its options and checks, before
anything runs, that the output can be written and that the demo's extras are installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from smoothcache.cli.validators import (
    CommandError,
    check_outputs,
    fraction_value,
    int_at_least,
    number,
    seed_value,
    usable_path,
)

#: Where the demo writes its PNG unless told otherwise: not the current folder, which may be a
#: repository (the file would show up as untracked).
DEMO_PNG = Path(tempfile.gettempdir()) / "smoothcache-demo.png"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``demo`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "demo",
        help="SmoothCache on the shipped reference model: speed and quality, in under a minute",
        description="Tune a schedule for the shipped digits DiT (smoothcache.tune), sample the "
        "same seeds without caching, with it and with the paper's rule at the same budget, print "
        "time, speedup, branch-steps computed, error and classifier accuracy, and write a PNG of "
        "uncached next to tuned samples.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=usable_path,
        default=DEMO_PNG,
        help=f"PNG of the samples to write (default {DEMO_PNG}, in the temporary folder)",
    )
    parser.add_argument(
        "--samples", type=int_at_least(1), default=40, help="evaluation samples (default 40)"
    )
    parser.add_argument(
        "--calibration-samples",
        type=int_at_least(1),
        default=10,
        help="samples of tune's calibration and held-out batches, apart from the evaluation "
        "ones (default 10)",
    )
    parser.add_argument("--steps", type=int_at_least(2), default=50, help="DDIM steps (default 50)")
    parser.add_argument(
        "--guidance-scale", type=number, default=1.5, help="guidance scale (default 1.5)"
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=3,
        help="timed runs of each variant; the table shows the median (default 3)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1, 256),
        default=1,
        help="torch CPU threads (default 1: the small model gains little from more, and on a "
        "machine busy with other work more threads run many times slower)",
    )
    parser.add_argument("--seed", type=seed_value, default=0, help="seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--compute",
        type=fraction_value,
        default=0.3,
        metavar="F",
        help="budget: the share of branch-steps the schedule may compute (default 0.3)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo with the parsed options; its exit status is the demo's."""
    check_outputs(args.output)
    missing = [name for name in ("diffusers", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(f"the demo needs {' and '.join(missing)}: pip install smoothcache[demo]")
    import torch

    from smoothcache.demo import run_demo

    torch.set_num_threads(args.threads)
    return run_demo(
        out_png=args.output,
        num_samples=args.samples,
        compute_fraction=args.compute,
        calibration_samples=args.calibration_samples,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        repeats=args.repeats,
        progress=not args.no_progress,
    )
