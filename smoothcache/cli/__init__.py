"""The ``smoothcache`` command line (also ``python -m smoothcache``).

Subcommands:

* ``calibrate PIPELINE_DIR`` — run a diffusers pipeline saved in a local directory under
  :func:`smoothcache.calibrating` and save the error curves (optionally a schedule too);
* ``schedule CURVES (--alpha A | --compute F) [--method M]`` — turn saved curves into a schedule
  file (the paper's rule, or the schedule search on curves with a measured sensitivity);
* ``show FILE`` — print a schedule (a file or a shipped name) or curves file as a compact text
  grid; ``--plot`` draws the curves, or the schedule as a grid;
* ``demo`` — calibrate the shipped reference model, cache it, and compare with no cache;
* ``adapters`` — list every adapter and where it comes from; ``--check MODULE:FACTORY`` shows
  which adapter a model gets and the branches it finds.

Each subcommand is a pair of functions: ``_add_<name>`` declares its arguments and ``_<name>``
runs it and returns the exit status, so a new subcommand is one more pair in :data:`COMMANDS`.
Exit status: 0 success, 2 usage error, 1 failure, with one ``smoothcache: error: ...`` line on
stderr. diffusers, tqdm and matplotlib are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from smoothcache import registry
from smoothcache.binding import model_branches, resolve, timestep_source
from smoothcache.calibration import calibrating
from smoothcache.curves import METHODS, ErrorCurves
from smoothcache.errors import PluginWarning, SmoothCacheError
from smoothcache.jsonfile import parse_json
from smoothcache.schedule import MAX_ORDER, Schedule, shipped_schedules

PROG = "smoothcache"


class UsageError(Exception):
    """Arguments that parse but do not fit together or do not fit the pipeline (exit 2)."""


#: Where the demo writes its PNG unless told otherwise: not the current folder, which may be a
#: repository (the file would show up as untracked).
DEMO_PNG = Path(tempfile.gettempdir()) / "smoothcache-demo.png"


class CommandError(Exception):
    """A subcommand failed for a reason other than a library error (exit 1)."""


# -- argument types ---------------------------------------------------------------------------


#: An integer as a person writes it on a command line: ASCII digits, an optional sign (``int``
#: would also take "1_000", other scripts' digits and thousands of digits).
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,30}\s*", re.ASCII)


def _int_at_least(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
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
_seed = _int_at_least(0, 2**63 - 1)


#: A decimal number in ASCII (``float`` would also take other scripts' digits and "1_0.5").
_NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)


def _number(text: str) -> float:
    """A finite number written with ASCII digits, else an argument error."""
    if not _NUMBER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r:.40}")
    value = float(text)
    if not math.isfinite(value):  # digits past float's range: 1e999
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r:.40}")
    return value


def _path(text: str) -> Path:
    """A file system path that the OS can take (no NUL byte, encodable)."""
    try:
        os.fsencode(text)
        if "\0" in text:
            raise ValueError("embedded NUL byte")
    except (UnicodeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not a usable path ({exc}): {text!r}") from None
    return Path(text)


def _check_outputs(*paths: Path | None) -> None:
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


def _device(name: str | None) -> str:
    """The torch device to run on, checked to exist before any model is loaded."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(
            f"--device {name!r} is not a torch device ({_one_line(exc)}); use e.g. cpu or cuda:0"
        ) from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        raise UsageError(
            f"--device {name!r} is not available on this machine ({_one_line(exc)}); "
            "use --device cpu, or leave it out to use cuda when it is there"
        ) from None
    return str(device)


def _alpha(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"alpha must be a number >= 0, found {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"the compute fraction must be in (0, 1], found {text!r}")
    return value


def _add_rule_options(parser: argparse.ArgumentParser, required: bool, prefix: str = "") -> None:
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
        type=_fraction,
        metavar="F",
        help="budget: the schedule computing the largest share of branch-steps <= F",
    )
    parser.add_argument(
        "--per-block",
        action="store_true",
        help="one schedule row per block instead of one per branch kind (beyond the paper)",
    )


# -- calibrate --------------------------------------------------------------------------------


def _add_calibrate(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "calibrate",
        help="record error curves of a diffusers pipeline saved in a local directory",
        description="Run a pipeline saved with save_pretrained (offline) under calibration and "
        "save its error curves; optionally derive a schedule from them.",
    )
    parser.add_argument("pipeline_dir", metavar="PIPELINE_DIR", type=_path)
    cond = parser.add_mutually_exclusive_group(required=True)
    cond.add_argument(
        "--class-labels",
        type=_int_at_least(0),
        nargs="+",
        metavar="LABEL",
        help="class labels (DiT-like)",
    )
    cond.add_argument("--prompts", nargs="+", metavar="PROMPT", help="prompts (text-to-image)")
    parser.add_argument(
        "--steps", type=_int_at_least(2), default=50, help="denoising steps (default 50)"
    )
    parser.add_argument(
        "--num-samples",
        type=_int_at_least(1),
        help="samples to calibrate on (default: one per label or prompt); labels/prompts cycle",
    )
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        help="samples per pipeline call (default: as many as labels or prompts given)",
    )
    parser.add_argument("--guidance-scale", type=_number, help="classifier-free guidance scale")
    parser.add_argument(
        "--scheduler", metavar="CLASS", help="a diffusers scheduler class, e.g. DDIMScheduler"
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, help="seed of the first run (run r uses seed+r)"
    )
    parser.add_argument(
        "--lookahead", type=_int_at_least(1), default=3, help="longest lag to record (default 3)"
    )
    parser.add_argument(
        "--orders",
        type=int,
        choices=range(MAX_ORDER + 1),
        default=MAX_ORDER,
        help=f"highest forecast order whose errors are recorded, for --method forecast "
        f"(default {MAX_ORDER}; 0 records reuse errors only and keeps fewer outputs)",
    )
    parser.add_argument("--adapter", help="force an adapter by name (default: detect)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
    parser.add_argument(
        "-o", "--output", type=_path, default=Path("curves.safetensors"), help="curves file"
    )
    _add_rule_options(parser, required=False, prefix="schedule-")
    parser.add_argument(
        "--schedule-output",
        type=_path,
        help="schedule file (default: the curves path with a .json suffix)",
    )
    return parser


def _load_pipeline(args: argparse.Namespace, device: str) -> Any:
    directory: Path = args.pipeline_dir
    if not directory.is_dir():
        raise CommandError(f"pipeline directory {str(directory)!r} does not exist")
    try:
        import diffusers
        import torch
    except ImportError:
        raise CommandError(
            "calibrate needs diffusers: pip install smoothcache[diffusers]"
        ) from None
    options: dict[str, Any] = {"local_files_only": True}
    if args.dtype is not None:
        options["torch_dtype"] = getattr(torch, args.dtype)
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(directory), **options)
    except (OSError, ValueError) as exc:
        raise CommandError(
            f"cannot load a diffusers pipeline from {str(directory)!r}: {exc}"
        ) from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler is not None:
        scheduler_class = getattr(diffusers, args.scheduler, None)
        if not isinstance(scheduler_class, type) or not hasattr(scheduler_class, "from_config"):
            raise UsageError(
                f"--scheduler {args.scheduler!r} is not a diffusers scheduler class; use a class "
                "name such as DDIMScheduler"
            )
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    return pipe


def _runs(items: Sequence[Any], num_samples: int, batch_size: int) -> list[list[Any]]:
    """Split ``num_samples`` samples, cycling through ``items``, into batches of ``batch_size``."""
    samples = [items[i % len(items)] for i in range(num_samples)]
    return [samples[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def _calibrate(args: argparse.Namespace) -> int:
    schedule_output = args.schedule_output
    if args.schedule_alpha is not None or args.schedule_compute is not None:
        schedule_output = schedule_output or args.output.with_suffix(".json")
    _check_outputs(args.output, schedule_output)
    pipe = _load_pipeline(args, _device(args.device))
    import torch
    from tqdm.auto import tqdm

    resolve(pipe, args.adapter)  # no matching denoiser is a failure, whatever the flags say
    parameters = inspect.signature(pipe.__call__).parameters
    if args.class_labels is not None:
        name, items = "class_labels", args.class_labels
    else:
        name, items = "prompt", args.prompts
    if name not in parameters:
        other = "--prompts" if name == "class_labels" else "--class-labels"
        raise UsageError(f"a {type(pipe).__name__} takes no {name!r}; pass {other} instead")
    num_samples = args.num_samples or len(items)
    batches = _runs(items, num_samples, min(args.batch_size or len(items), num_samples))
    call: dict[str, Any] = {"num_inference_steps": args.steps}
    if args.guidance_scale is not None:
        call["guidance_scale"] = args.guidance_scale
    if "output_type" in parameters:
        call["output_type"] = "latent"
    metadata = {
        "pipeline": type(pipe).__name__,
        "solver": type(pipe.scheduler).__name__,
        "guidance_scale": args.guidance_scale,
        "seed": args.seed,
        name: list(items),
    }
    bar = tqdm(total=len(batches) * args.steps, unit="step", desc="calibrating", file=sys.stderr)

    def on_step(run: int, _step: int) -> None:
        bar.set_postfix_str(f"run {run + 1}/{len(batches)}", refresh=False)
        bar.update(1)

    try:
        with calibrating(
            pipe,
            args.lookahead,
            args.adapter,
            on_step=on_step,
            metadata=metadata,
            orders=args.orders,
        ) as recorder:
            for run, batch in enumerate(batches):
                generator = torch.Generator("cpu").manual_seed((args.seed + run) % 2**63)
                try:
                    pipe(**{name: batch}, generator=generator, **call)
                except SmoothCacheError:
                    raise
                except Exception as exc:  # e.g. a class label the model does not have
                    raise CommandError(
                        f"the pipeline raised during calibration run {run + 1}: {exc!r}; check "
                        f"the {name.replace('_', '-')} and the other options"
                    ) from None
    finally:
        bar.close()
    curves = recorder.curves()
    curves.save(args.output)
    print(
        f"wrote {args.output}: {curves.metadata['runs']} runs, {num_samples} samples, "
        f"{curves.num_steps} steps, {len(curves.branches)} branches, lookahead {curves.lookahead}"
    )
    if args.schedule_alpha is not None or args.schedule_compute is not None:
        schedule = curves.schedule(
            args.schedule_alpha,
            compute_fraction=args.schedule_compute,
            per_block=args.per_block,
        )
        schedule.save(schedule_output)
        print(f"wrote {schedule_output}: {_schedule_summary(schedule)}")
    return 0


# -- schedule ---------------------------------------------------------------------------------


def _add_schedule(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "schedule",
        help="make a schedule from saved error curves",
        description="Apply the SmoothCache rule to saved curves: by an error threshold "
        "(--alpha) or a compute budget (--compute); with --method sensitivity, the schedule "
        "of least predicted error for a budget (curves with a measured sensitivity); with "
        "--method forecast, the budget's computed steps and, for every skipped step, reuse or "
        "a forecast of the order that the calibration found best.",
    )
    parser.add_argument("curves", metavar="CURVES", type=_path, help="a curves .safetensors file")
    _add_rule_options(parser, required=True)
    _add_method_option(parser)
    parser.add_argument("-o", "--output", type=_path, required=True, help="schedule JSON to write")
    return parser


def _add_method_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="paper",
        help="paper: the SmoothCache rule (default); sensitivity: the schedule search, which "
        "takes --compute and curves from smoothcache.measure_sensitivity; forecast: reuse or "
        "extrapolate each skipped step as calibrated (takes --compute)",
    )


def _schedule_summary(schedule: Schedule) -> str:
    meta = schedule.metadata
    how = f"alpha={meta['alpha']:.4g}" if "alpha" in meta else f"method {meta.get('method')}"
    return (
        f"{len(schedule.rows)} rows x {schedule.num_steps} steps, {how}, "
        f"computes {meta['compute_fraction']:.1%} of the model's branch-steps"
    )


def _schedule(args: argparse.Namespace) -> int:
    _check_outputs(args.output)
    curves = ErrorCurves.load(args.curves)
    schedule = curves.schedule(
        args.alpha, compute_fraction=args.compute, per_block=args.per_block, method=args.method
    )
    schedule.save(args.output)
    print(f"wrote {args.output}: {_schedule_summary(schedule)}")
    return 0


# -- show -------------------------------------------------------------------------------------


def _add_show(sub: Any) -> argparse.ArgumentParser:
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
        type=_path,
        help="a schedule .json, a curves .safetensors file, or a shipped schedule's name "
        "(e.g. dit-xl-2-256/ddim-50/alpha-0.18)",
    )
    _add_rule_options(parser, required=False)
    _add_method_option(parser)
    parser.add_argument(
        "--plot",
        type=_path,
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


def _ruler(num_steps: int, indent: int) -> list[str]:
    """Two ruler lines: the tens digit every 10 steps, then the units digit of every step."""
    tens = "".join(str(i // 10 % 10) if i % 10 == 0 else " " for i in range(num_steps))
    units = "".join(str(i % 10) for i in range(num_steps))
    return [" " * indent + tens, "step".ljust(indent) + units]


def _grid(schedule: Schedule) -> list[str]:
    """Rows of ``#`` (compute), ``.`` (reuse) and ``k`` (forecast of order k) under a step
    ruler, with per-row totals."""
    width = max(len(key) for key in schedule.rows) + 2
    width = max(width, 6)
    n = schedule.num_steps
    lines = _ruler(n, width)
    for key, row in schedule.rows.items():
        orders = schedule.orders.get(key) or (0,) * n
        flags = "".join("#" if f else (str(k) if k else ".") for f, k in zip(row, orders))
        lines.append(f"{key.ljust(width)}{flags}  {sum(row)}/{n} {sum(row) / n:6.1%}")
    if schedule.orders:
        lines.append("('#' compute, '.' reuse, k: forecast of order k from the last k+1 computes)")
    computed = sum(sum(r) for r in schedule.rows.values())
    total = n * len(schedule.rows)
    lines.append(f"total: {computed}/{total} row-steps compute ({computed / total:.1%})")
    fraction = schedule.metadata.get("compute_fraction")
    if isinstance(fraction, (int, float)):
        lines.append(f"model branch-steps that compute: {fraction:.1%}")
    return lines


_SCHEDULE_KEYS = (
    "name",
    "model",
    "adapter",
    "solver",
    "method",
    "alpha",
    "compute_fraction_target",
    "lookahead",
    "per_block",
    "every",
)


def _describe_schedule(path: Path, schedule: Schedule) -> list[str]:
    meta = schedule.metadata
    facts = ", ".join(f"{k} {meta[k]}" for k in _SCHEDULE_KEYS if meta.get(k) is not None)
    head = f"schedule {path}: {schedule.num_steps} steps, {len(schedule.rows)} rows"
    return [head + (f"; {facts}" if facts else ""), *_grid(schedule)]


def _spark_levels() -> str:
    """Eight rising glyphs, Unicode blocks where stdout can encode them."""
    blocks = "▁▂▃▄▅▆▇█"
    try:
        blocks.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ".:-=+*#%"
    return blocks


def _sparkline(values: np.ndarray, top: float, levels: str) -> str:
    """One glyph per step, scaled to ``top``; a blank where the value is unknown."""
    chars = []
    for v in values:
        if not np.isfinite(v):
            chars.append(" ")
        else:
            level = 0 if top <= 0 else round(float(v) / top * (len(levels) - 1))
            chars.append(levels[min(max(level, 0), len(levels) - 1)])
    return "".join(chars)


def _describe_curves(path: Path, curves: ErrorCurves) -> list[str]:
    meta = curves.metadata
    lines = [
        f"curves {path}: {meta.get('model')} (adapter {meta.get('adapter')}), "
        f"{len(curves.branches)} branches, {curves.num_steps} steps, {curves.passes} pass(es), "
        f"lookahead {curves.lookahead}, {meta.get('num_samples')} sample rows in "
        f"{meta.get('runs')} runs" + (f", solver {meta['solver']}" if meta.get("solver") else ""),
        "mean relative L1 error of reusing step t-j at step t, per kind and lag j "
        "(blank: no data; scale 0..max of the kind):",
    ]
    levels = _spark_levels()
    width = max(max(len(k) for k in curves.kinds) + 8, 12)
    lines.extend(_ruler(curves.num_steps, width))
    for kind in curves.kinds:
        mean = curves.curve(kind)[0]
        finite = mean[np.isfinite(mean)]
        top = float(finite.max()) if finite.size else 0.0
        for lag in range(1, curves.lookahead + 1):
            row = mean[lag - 1]
            known = row[np.isfinite(row)]
            numbers = f"  {known.min():.3g}..{known.max():.3g}" if known.size else "  no data"
            label = f"{kind} j={lag}".ljust(width)
            lines.append(label + _sparkline(row, top, levels) + numbers)
    forecast = curves.forecast
    if forecast is None:
        return lines
    g = forecast.lookahead + 1
    lines.append(
        f"mean relative L1 error of a forecast of order k (k=0: reuse) at the last skipped step "
        f"of runs computing every {g}th step (lag {g - 1}), per kind (scale 0..max of the kind):"
    )
    lines.extend(_ruler(curves.num_steps, width))
    for kind in curves.kinds:
        rows = np.array([b.kind == kind for b in curves.branches])
        curves_k = [forecast.curve(rows, k, g - 1, g) for k in range(forecast.max_order + 1)]
        finite = np.concatenate([c[np.isfinite(c)] for c in curves_k])
        top = float(finite.max()) if finite.size else 0.0
        for k, row in enumerate(curves_k):
            known = row[np.isfinite(row)]
            numbers = f"  {known.min():.3g}..{known.max():.3g}" if known.size else "  no data"
            lines.append(f"{kind} k={k}".ljust(width) + _sparkline(row, top, levels) + numbers)
    return lines


def _plot(path: Path, curves: ErrorCurves | None, schedule: Schedule | None) -> None:
    """Error curves (mean ± std per lag, one panel per kind) over the schedule raster.

    Like Figure 2 of the paper: with curves and a schedule made from them, the panels also
    draw the schedule's alpha as a dashed line.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install smoothcache[plot]") from None
    kinds = curves.kinds if curves is not None else ()
    alpha = schedule.metadata.get("alpha") if curves is not None and schedule is not None else None
    forecast = curves.forecast if curves is not None else None
    panels = len(kinds) * (2 if forecast is not None else 1)
    heights = [2.2] * panels + ([0.4 + 0.25 * len(schedule.rows)] if schedule else [])
    fig = Figure(figsize=(8, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds):
        assert curves is not None
        mean, std, _ = curves.curve(kind)
        steps = np.arange(curves.num_steps)
        for lag in range(1, curves.lookahead + 1):
            (line,) = ax.plot(steps, mean[lag - 1], marker=".", label=f"lag {lag}")
            low, high = mean[lag - 1] - std[lag - 1], mean[lag - 1] + std[lag - 1]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if alpha is not None:
            ax.axhline(
                alpha, color="black", linestyle="--", linewidth=1, label=f"alpha {alpha:.3g}"
            )
        ax.set_ylabel(f"{kind}\nrel. L1 error")
        ax.legend(loc="upper right", fontsize="small")
    if forecast is not None:
        assert curves is not None
        steps = np.arange(curves.num_steps)
        g = forecast.lookahead + 1
        for ax, kind in zip(axes[len(kinds) :], kinds):
            rows = np.array([b.kind == kind for b in curves.branches])
            for k in range(forecast.max_order + 1):
                for lag, style in ((1, "-"), (g - 1, "--")):
                    values = forecast.curve(rows, k, lag, g)
                    label = f"order {k}, lag {lag}" if k else f"reuse, lag {lag}"
                    ax.plot(steps, values, linestyle=style, color=f"C{k}", label=label)
            ax.set_yscale("log")
            ax.set_ylabel(f"{kind}\nforecast error")
            ax.set_title(f"runs computing every {g}th step", fontsize="small")
            ax.legend(loc="upper right", fontsize="x-small", ncol=2)
    if schedule is not None:
        ax = axes[-1]
        raster = np.array(list(schedule.rows.values()), dtype=float)
        for r, key in enumerate(schedule.rows):
            orders = schedule.orders.get(key)
            if orders:
                raster[r] += np.array(orders) / (2 * MAX_ORDER)  # grey: forecast, darker: higher
        ax.imshow(raster, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(schedule.rows)), list(schedule.rows))
        ax.set_title(
            "schedule (black: compute, white: reuse, grey: forecast, darker for higher orders)",
            fontsize="small",
        )
    axes[-1].set_xlabel("denoising step")
    fig.savefig(path, dpi=120)


def _show(args: argparse.Namespace) -> int:
    _check_outputs(args.plot)
    loaded = _load_any(args.file)
    wants_schedule = args.alpha is not None or args.compute is not None
    if isinstance(loaded, Schedule):
        if wants_schedule or args.per_block or args.method != "paper":
            raise UsageError(
                "--alpha, --compute, --per-block and --method apply to curves files only"
            )
        print("\n".join(_describe_schedule(args.file, loaded)))
        curves, schedule = None, loaded
    else:
        if args.per_block and not wants_schedule:
            raise UsageError("--per-block needs --alpha or --compute")
        curves, schedule = loaded, None
        print("\n".join(_describe_curves(args.file, curves)))
        if wants_schedule:
            schedule = curves.schedule(
                args.alpha,
                compute_fraction=args.compute,
                per_block=args.per_block,
                method=args.method,
            )
            print(f"schedule: {_schedule_summary(schedule)}")
            print("\n".join(_grid(schedule)))
    if args.plot is not None:
        _plot(args.plot, curves, schedule)
        print(f"wrote {args.plot}")
    return 0


# -- demo -------------------------------------------------------------------------------------


def _add_demo(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "demo",
        help="SmoothCache on the shipped reference model: speed and quality, in about a minute",
        description="Calibrate the shipped digits DiT on a few samples, build a schedule, sample "
        "the same seeds with and without it, print time, speedup, branch-steps computed, error "
        "and classifier accuracy, and write a PNG of uncached next to cached samples.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=_path,
        default=DEMO_PNG,
        help=f"PNG of the samples to write (default {DEMO_PNG}, in the temporary folder)",
    )
    parser.add_argument(
        "--samples", type=_int_at_least(1), default=40, help="evaluation samples (default 40)"
    )
    parser.add_argument(
        "--calibration-samples",
        type=_int_at_least(1),
        default=5,
        help="samples the schedule is calibrated on, apart from the evaluation ones (default 5)",
    )
    parser.add_argument(
        "--steps", type=_int_at_least(2), default=50, help="DDIM steps (default 50)"
    )
    parser.add_argument(
        "--guidance-scale", type=_number, default=1.5, help="guidance scale (default 1.5)"
    )
    parser.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=3,
        help="timed runs of each variant; the table shows the median (default 3)",
    )
    parser.add_argument(
        "--threads",
        type=_int_at_least(1, 256),
        default=1,
        help="torch CPU threads (default 1: the small model gains little from more, and on a "
        "machine busy with other work more threads run many times slower)",
    )
    parser.add_argument("--seed", type=_seed, default=0, help="seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_rule_options(parser, required=False)
    return parser


def _demo(args: argparse.Namespace) -> int:
    _check_outputs(args.output)
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
        alpha=args.alpha,
        per_block=args.per_block,
        calibration_samples=args.calibration_samples,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        repeats=args.repeats,
        progress=not args.no_progress,
    )


# -- adapters ---------------------------------------------------------------------------------


def _add_adapters(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "adapters",
        help="list the adapters and where they come from, or check which one fits a model",
        description="List every adapter (built-in or from a plugin package) with its origin, "
        "the classes it targets, its priority and its branch kinds, and every plugin that "
        "failed to load. With --check, build a model and show the adapter detection picks, the "
        "branches it finds and the timestep source.",
    )
    parser.add_argument(
        "--check",
        metavar="MODULE:FACTORY",
        help="import MODULE (the current directory is searched first) and call FACTORY() for a "
        "model or pipeline to check",
    )
    return parser


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _load_adapters() -> tuple[list[registry.AdapterInfo], dict[str, str]]:
    """The adapters and the failed plugins; the failures are printed, not warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return registry.REGISTRY.infos(), registry.REGISTRY.failures


def _adapters(args: argparse.Namespace) -> int:
    infos, failures = _load_adapters()
    if args.check is not None:
        return _check_factory(args.check, {i.adapter.name: i.source for i in infos})
    rows = [("name", "origin", "classes", "priority", "kinds")]
    for info in infos:
        adapter = info.adapter
        classes = ", ".join(getattr(adapter, "model_classes", ())) or "(by structure)"
        kinds = ", ".join(getattr(adapter, "kinds", ())) or "-"
        rows.append(
            (adapter.name, info.source, classes, str(getattr(adapter, "priority", 0)), kinds)
        )
    print("\n".join(_table(rows)))
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load and were skipped:")
        for message in failures.values():
            print(f"  {message}")
    print(f"\nDetection: most specific class first, then priority; see {registry.GUIDE}")
    return 0


def _factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``MODULE:FACTORY`` (``FACTORY`` may be dotted: ``Class.build``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--check takes MODULE:FACTORY (e.g. mymodels:tiny_dit), found {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(f"cannot import module {module_name!r}: {exc!r}") from None
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise CommandError(f"{spec!r} does not name a callable factory in {module_name!r}")
    return factory


def _check_factory(spec: str, origins: dict[str, str]) -> int:
    factory = _factory(spec)
    try:
        obj = factory()
    except Exception as exc:
        raise CommandError(f"the factory {spec} raised {exc!r}") from None
    matches = registry.REGISTRY.matching(obj)
    adapter = registry.REGISTRY.detect(obj)  # no match, or a tie: an error on one line
    best = matches[0]
    root = best.root
    source = timestep_source(root, adapter)  # an AdapterError, reported like a CommandError
    pairs = model_branches(root, adapter)
    model = f"{type(root).__module__}.{type(root).__qualname__}"
    lines = [
        f"model: {model}" + ("" if root is obj else f" (inside a {type(obj).__name__})"),
        f"adapter: {best.describe()} from {origins.get(adapter.name, 'runtime')}",
    ]
    lines += [f"also matches, ranked lower: {m.describe()}" for m in matches[1:]]
    reader = getattr(source.read, "__qualname__", repr(source.read))
    lines.append(f"timestep source: {source.path or '<root>'}, read with {reader}")
    kinds: dict[str, int] = {}
    for branch, _ in pairs:
        kinds[branch.kind] = kinds.get(branch.kind, 0) + 1
    counts = ", ".join(f"{kind} x{n}" for kind, n in kinds.items())
    lines.append(f"branches: {len(pairs)} ({counts})")
    rows = [("path", "kind", "block", "module")]
    rows += [(b.path, b.kind, str(b.block), type(m).__name__) for b, m in pairs]
    lines += ["  " + line for line in _table(rows)]
    describe = getattr(adapter, "describe", None)
    if callable(describe):
        lines += [f"{key}: {value}" for key, value in describe(root).items()]
    fast = list(registry.call_adapter(adapter, "fast_forwards", root))
    lines.append(f"fast path: {len(fast)} block(s)" if fast else "fast path: none")
    print("\n".join(lines))
    return 0


# -- entry point ------------------------------------------------------------------------------

Command = tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]

#: Subcommands in the order ``--help`` lists them: (declare arguments, run).
COMMANDS: dict[str, Command] = {
    "calibrate": (_add_calibrate, _calibrate),
    "schedule": (_add_schedule, _schedule),
    "show": (_add_show, _show),
    "demo": (_add_demo, _demo),
    "adapters": (_add_adapters, _adapters),
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (SmoothCacheError, CommandError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
