"""``smoothcache show FILE``: print a schedule or curves file as text, and plot it on request.

``FILE`` is a schedule (JSON), a curves file (safetensors, told apart by its first bytes) or a
shipped schedule's name, as :meth:`smoothcache.Schedule.shipped` takes it.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from smoothcache.cli.plot import plot
from smoothcache.cli.text import describe_curves, describe_schedule, grid, schedule_summary
from smoothcache.cli.validators import (
    CommandError,
    UsageError,
    add_method_option,
    add_rule_options,
    check_outputs,
    usable_path,
)
from smoothcache.curves import ErrorCurves
from smoothcache.jsonfile import parse_json
from smoothcache.schedule import Schedule, shipped_schedules


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``show`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "show",
        help="print a schedule or curves file as a text grid (and plot it)",
        description="Print a schedule (branches x steps, '#' compute, '.' reuse, a digit k: "
        "forecast of order k) or a curves file (error per step as sparklines, for reuse and for "
        "each forecast order); for curves, --alpha/--compute (and --method) also show the "
        "schedule they give. FILE may be a shipped schedule's name, as in Python.",
    )
    parser.add_argument(
        "file",
        metavar="FILE",
        type=usable_path,
        help="a schedule .json, a curves .safetensors file, or a shipped schedule's name "
        "(e.g. dit-xl-2-256/ddim-50/alpha-0.18)",
    )
    add_rule_options(parser, required=False)
    add_method_option(parser)
    parser.add_argument(
        "--plot",
        type=usable_path,
        metavar="OUT.png",
        help="also draw it: a curves file's error curves (and the schedule --alpha/--compute "
        "gives), or a schedule's grid (needs matplotlib: pip install smoothcache[plot])",
    )
    return parser


def _is_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors: an 8-byte header length, then a JSON object."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _load_any(path: Path) -> ErrorCurves | Schedule:
    """The shipped schedule named ``path``, or the schedule or curves in the file ``path``."""
    shipped = shipped_schedules()
    if not path.exists() and str(path) in shipped:
        return Schedule.shipped(str(path))
    if not path.exists():
        folder = resources.files("smoothcache.schedules")
        raise CommandError(
            f"file {str(path)!r} does not exist, and no shipped schedule has that name "
            f"(shipped: {', '.join(shipped)}; their files are in {folder})"
        )
    if not path.is_file():
        raise CommandError(f"{str(path)!r} is not a file; pass a schedule or curves file")
    if _is_safetensors(path):
        return ErrorCurves.load(path)
    try:
        parse_json(path.read_text(encoding="utf-8"))
    except ValueError:  # undecodable text, not JSON, or JSON no schedule could be
        raise CommandError(
            f"{str(path)!r} is neither a schedule file (JSON) nor a curves file (safetensors)"
        ) from None
    return Schedule.load(path)


def run(args: argparse.Namespace) -> int:
    """Print the file (and, for curves with --alpha/--compute, the schedule they give); plot."""
    check_outputs(args.plot)
    loaded = _load_any(args.file)
    wants_schedule = args.alpha is not None or args.compute is not None
    if isinstance(loaded, Schedule):
        if wants_schedule or args.per_block or args.method is not None:
            raise UsageError(
                "--alpha, --compute, --per-block and --method apply to curves files only"
            )
        print("\n".join(describe_schedule(args.file, loaded)))
        curves, schedule = None, loaded
    else:
        if args.per_block and not wants_schedule:
            raise UsageError("--per-block needs --alpha or --compute")
        curves, schedule = loaded, None
        print("\n".join(describe_curves(args.file, curves)))
        if wants_schedule:
            schedule = curves.schedule(
                args.alpha,
                compute_fraction=args.compute,
                per_block=args.per_block,
                method=args.method,
            )
            print(f"schedule: {schedule_summary(schedule)}")
            print("\n".join(grid(schedule)))
    if args.plot is not None:
        plot(args.plot, curves, schedule)
        print(f"wrote {args.plot}")
    return 0
