"""The calibration the quality benchmarks share, and the command-line options around it.

:func:`calibrate` measures the error curves (lookahead 3, for the paper's rule) and the
sensitivity (for the schedule search) of a sampler run, or reads them from the file of
``--curves`` (:func:`add_curves_option`), so that several benchmarks can share one
calibration. :func:`shown_arguments` is the command line a generated page quotes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

import smoothcache
from smoothcache import ErrorCurves, Schedule


def add_curves_option(parser: argparse.ArgumentParser) -> None:
    """``--curves PATH``: where :func:`calibrate` reads or saves the calibration."""
    parser.add_argument(
        "--curves",
        type=Path,
        help="read the calibration (curves and sensitivity) from this file if it exists, else "
        "measure it and save it there",
    )


def calibrate(
    model: torch.nn.Module,
    run: Callable[[], torch.Tensor],
    path: Path | None,
    per_block: bool,
    log: Callable[[str], None],
) -> ErrorCurves:
    """Error curves (lookahead 3, for the paper's rule) and sensitivity of ``run``'s samples.

    Read from ``path`` when that file exists (after checking it fits ``model``), else measured,
    with the seconds each part took in the metadata, and saved to ``path`` when one is given.
    """
    if path is not None and path.exists():
        log(f"reading the calibration from {path}")
        curves = ErrorCurves.load(path)
        curves.check_model(model)
        return curves
    log("calibrating the error curves")
    clock = time.perf_counter()
    with smoothcache.calibrating(model, lookahead=3) as recorder:
        run()
    curves = recorder.curves()
    curves.metadata["seconds"] = round(time.perf_counter() - clock, 3)
    curves = smoothcache.measure_sensitivity(
        model, run, curves, per_block=per_block, on_run=_progress(log)
    )
    if path is not None:
        curves.save(path)
    return curves


def shown_arguments(argv: list[str]) -> list[str]:
    """The command-line arguments without ``--out-dir`` and ``--curves``.

    Where the files go is not what they say, and a calibration read from a file is the one this
    command would measure (the same samples, and the measurement is deterministic).
    """
    hidden = ("--out-dir", "--curves")
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip or arg.startswith(tuple(f"{option}=" for option in hidden)):
            skip = False
            continue
        skip = arg in hidden
        if not skip:
            shown.append(arg)
    return shown


def _progress(log: Callable[[str], None]) -> Callable[[int, int], None]:
    """A callback for ``measure_sensitivity`` that logs every tenth of the runs."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(total // 10, 1) == 0:
            log(f"  sensitivity run {done}/{total}")

    return report


def fora_share(schedule: Schedule) -> float:
    """The share of branch-steps a FORA schedule computes (every kind shares one row)."""
    row = next(iter(schedule.rows.values()))
    return round(sum(row) / len(row), 6)
