"""``smoothcache calibrate PIPELINE_DIR``: record a saved diffusers pipeline's error curves.

Runs the pipeline offline under :func:`smoothcache.calibrating`, saves the curves and, with
``--schedule-alpha`` or ``--schedule-compute``, a schedule made from them. Every option is
checked before the pipeline is loaded.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smoothcache.binding import resolve
from smoothcache.calibration import calibrating
from smoothcache.cli.text import schedule_summary
from smoothcache.cli.validators import (
    CommandError,
    UsageError,
    add_pipeline_options,
    add_rule_options,
    check_outputs,
    int_at_least,
    seed_value,
    torch_device,
    usable_path,
)
from smoothcache.errors import SmoothCacheError
from smoothcache.schedule import MAX_ORDER


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``calibrate`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "calibrate",
        help="record error curves of a diffusers pipeline saved in a local directory",
        description="Run a pipeline saved with save_pretrained (offline) under calibration and "
        "save its error curves; optionally derive a schedule from them.",
    )
    parser.add_argument("pipeline_dir", metavar="PIPELINE_DIR", type=usable_path)
    cond = parser.add_mutually_exclusive_group(required=True)
    cond.add_argument(
        "--class-labels",
        type=int_at_least(0),
        nargs="+",
        metavar="LABEL",
        help="class labels (DiT-like)",
    )
    cond.add_argument("--prompts", nargs="+", metavar="PROMPT", help="prompts (text-to-image)")
    add_pipeline_options(parser)
    parser.add_argument(
        "--num-samples",
        type=int_at_least(1),
        help="samples to calibrate on (default: one per label or prompt); labels/prompts cycle",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        help="samples per pipeline call (default: as many as labels or prompts given)",
    )
    parser.add_argument(
        "--seed", type=seed_value, default=0, help="seed of the first run (run r uses seed+r)"
    )
    parser.add_argument(
        "--lookahead", type=int_at_least(1), default=7, help="longest lag to record (default 7)"
    )
    parser.add_argument(
        "--orders",
        type=int,
        choices=range(MAX_ORDER + 1),
        default=MAX_ORDER,
        help=f"highest forecast order whose errors are recorded, for --method forecast "
        f"(default {MAX_ORDER}; 0 records reuse errors only and keeps fewer outputs)",
    )
    parser.add_argument(
        "-o", "--output", type=usable_path, default=Path("curves.safetensors"), help="curves file"
    )
    add_rule_options(parser, required=False, prefix="schedule-")
    parser.add_argument(
        "--schedule-output",
        type=usable_path,
        help="schedule file (default: the curves path with a .json suffix)",
    )
    return parser


def load_pipeline(args: argparse.Namespace, device: str) -> Any:
    """The pipeline in ``args.pipeline_dir``, loaded offline onto ``device``, with the
    scheduler ``args.scheduler`` when one is named."""
    directory: Path = args.pipeline_dir
    if not directory.is_dir():
        raise CommandError(f"pipeline directory {str(directory)!r} does not exist")
    try:
        import diffusers
        import torch
    except ImportError:
        raise CommandError(
            f"{args.command} needs diffusers: pip install smoothcache[diffusers]"
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


def run(args: argparse.Namespace) -> int:
    """Calibrate, save the curves (and the schedule asked for) and print what was written."""
    schedule_output = args.schedule_output
    if args.schedule_alpha is not None or args.schedule_compute is not None:
        schedule_output = schedule_output or args.output.with_suffix(".json")
    check_outputs(args.output, schedule_output)
    pipe = load_pipeline(args, torch_device(args.device))
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

    def on_step(index: int, _step: int) -> None:
        bar.set_postfix_str(f"run {index + 1}/{len(batches)}", refresh=False)
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
            for index, batch in enumerate(batches):
                generator = torch.Generator("cpu").manual_seed((args.seed + index) % 2**63)
                try:
                    pipe(**{name: batch}, generator=generator, **call)
                except SmoothCacheError:
                    raise
                except Exception as exc:  # e.g. a class label the model does not have
                    raise CommandError(
                        f"the pipeline raised during calibration run {index + 1}: {exc!r}; check "
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
        print(f"wrote {schedule_output}: {schedule_summary(schedule)}")
    return 0
