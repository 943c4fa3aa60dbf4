"""Argument types, the checks run before any work, and the options several subcommands share.

Numbers are parsed as a person writes them on a command line (ASCII digits only), bounds are
stated as "at least" / "at most", and output paths and the device are checked before a model is
loaded, so a mistake costs one ``error:`` line, not a calibration run. The two exceptions here
are what :func:`smoothcache.cli.main` turns into exit statuses 2 and 1.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from smoothcache.searches import METHODS


class UsageError(Exception):
    """Arguments that parse but do not fit together or do not fit the pipeline (exit 2)."""


class CommandError(Exception):
    """A subcommand failed for a reason other than a library error (exit 1)."""


def one_line(exc: BaseException) -> str:
    """The exception's message with every run of whitespace made one space."""
    return " ".join(str(exc).split())


#: An integer as a person writes it on a command line: ASCII digits, an optional sign (``int``
#: would also take "1_000", other scripts' digits and thousands of digits).
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,30}\s*", re.ASCII)


def int_at_least(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argument type taking an ASCII integer in ``[low, high]``."""

    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r:.40}")
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, found {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, found {value}")
        return value

    return parse


#: Seeds torch accepts (``torch.Generator.manual_seed`` takes a 64-bit value).
seed_value = int_at_least(0, 2**63 - 1)


#: A decimal number in ASCII (``float`` would also take other scripts' digits and "1_0.5").
_NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)


def number(text: str) -> float:
    """A finite number written with ASCII digits, else an argument error."""
    if not _NUMBER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r:.40}")
    value = float(text)
    if not math.isfinite(value):  # digits past float's range: 1e999
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r:.40}")
    return value


def usable_path(text: str) -> Path:
    """A file system path that the OS can take (no NUL byte, encodable)."""
    try:
        os.fsencode(text)
        if "\0" in text:
            raise ValueError("embedded NUL byte")
    except (UnicodeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not a usable path ({exc}): {text!r}") from None
    return Path(text)


def check_outputs(*paths: Path | None) -> None:
    """Refuse, before any work, output paths that cannot be written (a missing folder ...)."""
    for path in paths:
        if path is None:
            continue
        folder = path.parent
        if not folder.is_dir():
            raise UsageError(
                f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist; create it "
                "or choose another output path"
            )
        if path.is_dir():
            raise UsageError(f"cannot write {str(path)!r}: it is a folder; name a file")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"cannot write {str(path)!r}: the folder is not writable")


def torch_device(name: str | None) -> str:
    """The torch device to run on, checked to exist before any model is loaded."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(
            f"--device {name!r} is not a torch device ({one_line(exc)}); use e.g. cpu or cuda:0"
        ) from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        raise UsageError(
            f"--device {name!r} is not available on this machine ({one_line(exc)}); "
            "use --device cpu, or leave it out to use cuda when it is there"
        ) from None
    return str(device)


def _alpha(text: str) -> float:
    """An error threshold: a finite number >= 0."""
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"alpha must be a number >= 0, found {text!r}")
    return value


def fraction_value(text: str) -> float:
    """A compute budget: a number in (0, 1]."""
    value = number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"the compute fraction must be in (0, 1], found {text!r}")
    return value


def add_rule_options(parser: argparse.ArgumentParser, required: bool, prefix: str = "") -> None:
    """``--alpha`` / ``--compute`` (mutually exclusive) and ``--per-block``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        f"--{prefix}alpha",
        type=_alpha,
        metavar="A",
        help="error threshold: reuse while the relative L1 error stays <= A",
    )
    group.add_argument(
        f"--{prefix}compute",
        type=fraction_value,
        metavar="F",
        help="budget: the schedule computing the largest share of branch-steps <= F",
    )
    parser.add_argument(
        "--per-block",
        action="store_true",
        help="one schedule row per block instead of one per branch kind (beyond the paper)",
    )


def add_method_option(parser: argparse.ArgumentParser) -> None:
    """``--method``: which schedule search turns curves into a schedule (default: the best the
    curves allow, as :meth:`smoothcache.ErrorCurves.schedule` chooses)."""
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="default: the best the curves allow (forecast for a --compute when they carry "
        "forecast errors, as calibration records by default; paper for an --alpha). paper: the "
        "SmoothCache rule; sensitivity: the schedule search (--compute, curves from "
        "smoothcache.measure_sensitivity); forecast: reuse or extrapolate each skipped step as "
        "calibrated (--compute)",
    )


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """How a saved pipeline is loaded and samples: ``--steps``, ``--guidance-scale``,
    ``--scheduler``, ``--adapter``, ``--device``, ``--dtype``."""
    parser.add_argument(
        "--steps", type=int_at_least(2), default=50, help="denoising steps (default 50)"
    )
    parser.add_argument("--guidance-scale", type=number, help="classifier-free guidance scale")
    parser.add_argument(
        "--scheduler", metavar="CLASS", help="a diffusers scheduler class, e.g. DDIMScheduler"
    )
    parser.add_argument("--adapter", help="force an adapter by name (default: detect)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
