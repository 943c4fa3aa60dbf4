"""``smoothcache tune (PIPELINE_DIR | --reference) --compute F``: a schedule in one command.

Runs :func:`smoothcache.tune` on a diffusers pipeline saved with ``save_pretrained`` (offline)
or on the shipped reference model, prints what it will run, the estimated total time after the
first run and a progress bar, then writes the schedule, the report next to it (``.txt``) and,
with ``--plot``, the schedule drawn as a grid. Every option is checked before anything loads.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

from smoothcache.cli.calibrate import load_pipeline
from smoothcache.cli.text import schedule_summary
from smoothcache.cli.validators import (
    UsageError,
    add_pipeline_options,
    check_outputs,
    fraction_value,
    int_at_least,
    seed_value,
    torch_device,
    usable_path,
)
from smoothcache.tuner import BUDGET, Tuned, held_out_snr_db, tune


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``tune`` and its arguments on the subparsers ``sub``."""
    parser = sub.add_parser(
        "tune",
        help="the best schedule for a compute budget, in one command (smoothcache.tune)",
        description="Calibrate on one batch, try the forecast family and the uniform schedules "
        "of the budget on a held-out batch, keep the best whose worst samples hold up, and write "
        "it with a report. Works on a pipeline saved with save_pretrained or, with --reference, "
        "on the shipped digits DiT.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("pipeline_dir", metavar="PIPELINE_DIR", type=usable_path, nargs="?")
    model.add_argument(
        "--reference", action="store_true", help="the shipped digits DiT (no download)"
    )
    parser.add_argument(
        "--compute",
        type=fraction_value,
        required=True,
        help="budget: the share of branch-steps the schedule may compute, e.g. 0.3",
    )
    cond = parser.add_mutually_exclusive_group()
    cond.add_argument("--class-labels", type=int_at_least(0), nargs="+", metavar="LABEL")
    cond.add_argument("--prompts", nargs="+", metavar="PROMPT")
    add_pipeline_options(parser)
    parser.add_argument(
        "--seed", type=seed_value, default=1000, help="calibration seed (default 1000)"
    )
    parser.add_argument(
        "--held-out-seed",
        type=seed_value,
        default=2000,
        help="seed of the batch the choice is made on (default 2000)",
    )
    parser.add_argument(
        "--budget",
        type=int_at_least(1),
        default=BUDGET,
        help=f"sampler runs tune may make in all (default {BUDGET}); more buy more candidates "
        "and held-out rounds",
    )
    parser.add_argument(
        "--fit-weights",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="then fit the chosen schedule's forecast weights through the sampler on N batches "
        "(2N more runs, half with gradients) and keep them if the held-out batches agree "
        "(default 0: off)",
    )
    parser.add_argument(
        "-o", "--output", type=usable_path, default=Path("schedule.json"), help="schedule file"
    )
    parser.add_argument("--plot", type=usable_path, help="also draw the schedule to this PNG")
    return parser


def _reference_run(args: argparse.Namespace) -> tuple[Any, Any]:
    """The shipped model and ``run(seed)`` on it: one sample per label (every digit by default)."""
    from smoothcache.reference import load_reference_model, sample

    model = load_reference_model().to(torch_device(args.device))
    labels = args.class_labels or list(range(10))
    if args.prompts:
        raise UsageError("the reference model takes --class-labels, not --prompts")
    if any(label > 9 for label in labels):
        raise UsageError("the reference model draws digits: class labels 0 to 9")
    guidance = {} if args.guidance_scale is None else {"guidance_scale": args.guidance_scale}

    def run(seed: int) -> Any:
        return sample(model, labels, num_steps=args.steps, seed=seed, **guidance)

    return model, run


def _pipeline_call(args: argparse.Namespace, pipe: Any) -> dict[str, Any]:
    """The pipeline's call arguments from the options."""
    parameters = inspect.signature(pipe.__call__).parameters
    call: dict[str, Any] = {"num_inference_steps": args.steps}
    if args.class_labels is not None:
        name, items = "class_labels", args.class_labels
    elif args.prompts is not None:
        name, items = "prompt", args.prompts
    else:
        raise UsageError("a pipeline needs --class-labels or --prompts to sample")
    if name not in parameters:
        other = "--prompts" if name == "class_labels" else "--class-labels"
        raise UsageError(f"a {type(pipe).__name__} takes no {name!r}; pass {other} instead")
    call[name] = list(items)
    if args.guidance_scale is not None:
        call["guidance_scale"] = args.guidance_scale
    return call


class _Progress:
    """The progress bar, and the estimated total time printed once a plain run is timed."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self.started = time.perf_counter()
        self.bar = tqdm(unit="run", desc="tuning", file=sys.stderr)
        self._last: tuple[int, float] | None = None  # (runs done, seconds) at the last report

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter() - self.started
        if self._last is not None and self.bar.total is not None and self._last[0] < 3 <= done:
            # the first runs (calibration, the sensitivity's) cost more than the rest
            each = (now - self._last[1]) / (done - self._last[0])
            print(
                f"{total} sampler runs in all; {done} done in {now:.0f} s, about "
                f"{now + each * (total - done):.0f} s in all",
                file=sys.stderr,
            )
        self._last = (done, now)
        self.bar.total = total
        self.bar.update(done - self.bar.n)


def _against_paper(
    model: Any, options: dict[str, Any], args: argparse.Namespace, tuned: Tuned
) -> str:
    """The paper's rule at the same budget, from the same curves, on the first held-out batch
    (three more runs: uncached, the tuned schedule and the paper's): what tune bought over the
    method it replaces."""
    paper = tuned.curves.schedule(compute_fraction=args.compute, method="paper")
    snr = held_out_snr_db(
        model,
        {"tuned": tuned.schedule, "paper": paper},
        seed=args.held_out_seed,
        adapter=args.adapter,
        **options,
    )
    tuned_db, paper_db = snr["tuned"], snr["paper"]
    verdict = "beats" if tuned_db > paper_db else "does not beat"
    return (
        f"the paper's rule at the same budget ({paper.compute_fraction:.1%} computed): "
        f"{paper_db:.2f} dB on the first held-out batch; the tuned schedule {tuned_db:.2f} dB "
        f"({verdict} it by {tuned_db - paper_db:+.2f} dB)"
    )


def run(args: argparse.Namespace) -> int:
    """Tune, write the schedule, its report (and plot) and print a summary."""
    report_path = args.output.with_suffix(".txt")
    check_outputs(args.output, report_path, args.plot)
    if args.reference:
        model, sampler = _reference_run(args)
        options: dict[str, Any] = {"run": sampler}
    else:
        model = load_pipeline(args, torch_device(args.device))
        options = {"call": _pipeline_call(args, model)}
    print(
        f"tune makes at most {args.budget} runs of {args.steps} steps: 1 calibration run, 1 run "
        "with gradients for the sensitivity, 2 uncached held-out runs and one held-out run per "
        "candidate schedule, then held-out rounds for the best (the exact number once "
        "calibrated)"
        + (f"; then {2 * args.fit_weights} runs fitting the weights" if args.fit_weights else ""),
        file=sys.stderr,
    )
    progress = _Progress()
    try:
        tuned = tune(
            model,
            compute_fraction=args.compute,
            calibration_seed=args.seed,
            held_out_seed=args.held_out_seed,
            adapter=args.adapter,
            budget=args.budget,
            fit_weights=args.fit_weights,
            on_run=progress,
            **options,
        )
    finally:
        progress.bar.close()
    tuned.schedule.save(args.output)
    report = tuned.report() + "\n" + _against_paper(model, options, args, tuned)
    report_path.write_text(report + "\n", encoding="utf-8")
    print(report)
    print(f"wrote {args.output}: {schedule_summary(tuned.schedule)}; report {report_path}")
    if args.plot is not None:
        from smoothcache.cli.plot import plot

        plot(args.plot, None, tuned.schedule)
        print(f"wrote {args.plot}")
    return 0
