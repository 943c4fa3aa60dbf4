"""``smoothcache schedule CURVES``: turn saved error curves into a schedule file.

By the best search the curves allow for a ``--compute`` budget, or the one ``--method`` names
(:data:`smoothcache.searches.METHODS`; the paper's rule also takes ``--alpha``).
"""

from __future__ import annotations

import argparse
from typing import Any

from smoothcache.cli.text import schedule_summary
from smoothcache.cli.validators import (
    add_method_option,
    add_rule_options,
    check_outputs,
    usable_path,
)
from smoothcache.curves import ErrorCurves


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``schedule`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "schedule",
        help="make a schedule from saved error curves",
        description="Make a schedule from saved curves: for a compute budget (--compute), by "
        "default the best search the curves allow (the forecast search: the budget's computed "
        "steps and, for every skipped step, reuse or a forecast of the order that calibration "
        "found best); --method paper applies the SmoothCache rule (also by an error threshold, "
        "--alpha); --method sensitivity the schedule of least predicted error (curves with a "
        "measured sensitivity).",
    )
    parser.add_argument(
        "curves", metavar="CURVES", type=usable_path, help="a curves .safetensors file"
    )
    add_rule_options(parser, required=True)
    add_method_option(parser)
    parser.add_argument(
        "-o", "--output", type=usable_path, required=True, help="schedule JSON to write"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the curves, make the schedule, save it and print a one-line summary."""
    check_outputs(args.output)
    curves = ErrorCurves.load(args.curves)
    schedule = curves.schedule(
        args.alpha, compute_fraction=args.compute, per_block=args.per_block, method=args.method
    )
    schedule.save(args.output)
    print(f"wrote {args.output}: {schedule_summary(schedule)}")
    return 0
