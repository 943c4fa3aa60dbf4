"""The ``smoothcache`` command line (also ``python -m smoothcache``).

Subcommands, one module each:

* ``tune (PIPELINE_DIR | --reference) --compute F`` (:mod:`.tune`) — the best schedule for a
  budget in one command (:func:`smoothcache.tune`), with its report;
* ``calibrate PIPELINE_DIR`` (:mod:`.calibrate`) — run a diffusers pipeline saved in a local
  directory under :func:`smoothcache.calibrating` and save the error curves (optionally a
  schedule too);
* ``schedule CURVES (--alpha A | --compute F) [--method M]`` (:mod:`.schedule`) — turn saved
  curves into a schedule file (the paper's rule, or a search such as the one on curves with a
  measured sensitivity);
* ``show FILE`` (:mod:`.show`) — print a schedule (a file or a shipped name) or curves file as a
  compact text grid; ``--plot`` draws the curves, or the schedule as a grid (:mod:`.plot`);
* ``demo`` (:mod:`.demo`) — calibrate the shipped reference model, cache it, and compare with no
  cache;
* ``adapters`` (:mod:`.adapters`) — list every adapter and where it comes from;
  ``--check MODULE:FACTORY`` shows which adapter a model gets and the branches it finds.

Each subcommand module has ``add_parser(sub)``, which declares its arguments, and ``run(args)``,
which runs it and returns the exit status; a new subcommand is one more module and one entry in
:data:`COMMANDS` (see docs/design.md). Argument types and the checks made before any work are in
:mod:`.validators`, the printed text in :mod:`.text`. Exit status: 0 success, 2 usage error,
1 failure, with one ``smoothcache: error: ...`` line on stderr. diffusers, tqdm and matplotlib
are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from smoothcache.cli import adapters, calibrate, demo, schedule, show, tune
from smoothcache.cli.validators import CommandError, UsageError, one_line
from smoothcache.errors import SmoothCacheError

__all__ = ["COMMANDS", "PROG", "CommandError", "UsageError", "build_parser", "main"]

PROG = "smoothcache"

Command = tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]

#: Subcommands in the order ``--help`` lists them: (declare arguments, run).
COMMANDS: dict[str, Command] = {
    "tune": (tune.add_parser, tune.run),
    "calibrate": (calibrate.add_parser, calibrate.run),
    "schedule": (schedule.add_parser, schedule.run),
    "show": (show.add_parser, show.run),
    "demo": (demo.add_parser, demo.run),
    "adapters": (adapters.add_parser, adapters.run),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SmoothCache for Diffusion Transformers: calibrate, make and show schedules.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, run in COMMANDS.values():
        add(sub).set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (SmoothCacheError, CommandError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
