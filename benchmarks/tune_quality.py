"""``smoothcache.tune`` on the quality pages' models: quality, robustness and cost (issue #27).

It reads the rows of ``benchmarks.quality_speed`` from that benchmark's checkpoint (the same
model, seeds and evaluation samples; run it first with the same ``--model``, ``--seeds`` and
``--checkpoint``), and adds, per calibration seed and at 30% and 20% of the branch-steps:

- **tune**: ``smoothcache.tune(model, run, compute_fraction=f, calibration_seed=s,
  held_out_seed=h)`` with its defaults: ``run(seed)`` samples 16 samples of ``seed`` (the first
  16 of the calibration and held-out batches the full recipe uses 50 and 200 of);
- **the plain forecast search**: ``curves.schedule(compute_fraction=f, method="forecast")`` of
  the quality page's calibration (50 samples), which tune must not lose to.

Every row is scored on the page's 1000 evaluation samples. The page compares tune with the
envelope of the peers (every method but the library's, as on the quality page), with today's
full recipe (the page's forecast rows: sensitivity measured on 50 samples, choice on 200), with
the plain search and with the best peer at equal compute; batch PSNR with 90% bootstrap
intervals (the same replicates for every row), and the worst sample. Then the cost of each: the
evaluations tune counted and its seconds, against the full recipe's evaluations (from its
recorded runs) and seconds. Writes ``docs/tune_quality_<model>[_test].md``::

    python -m benchmarks.tune_quality --threads 1 --model reference --seeds test \\
        --checkpoint .bench-checkpoints
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch

import smoothcache
from benchmarks import quality_speed
from benchmarks.common.bench import Bench, Row
from benchmarks.common.checkpoint import Checkpoint
from benchmarks.common.forecast_rows import FAMILY, shared_curves
from benchmarks.common.peers import fewer_steps_rows
from benchmarks.common.scoring import TARGETS, Scores, evaluate, targets
from benchmarks.common.stats import Bootstrap, interval, psnr_db
from benchmarks.common.timing import Log

TUNED = f"{FAMILY}, tuned"
PLAIN = f"{FAMILY}, plain search"
#: samples of tune's calibration and held-out batches
BATCH = 16


def runner(bench: Bench) -> Any:
    """``run(seed)``: the first :data:`BATCH` samples of ``seed`` with the bench's sampler,
    keeping gradients only when they are on (tune turns them on for its sensitivity run)."""
    labels = torch.arange(BATCH) % bench.classes
    if bench.model_name != "flow":
        return lambda seed: bench.loaded.draw(
            bench.model, labels, bench.steps, bench.guidance, seed
        )
    from benchmarks.flow_model import model as module

    pipe = bench.loaded.pipeline(bench.model)
    return lambda seed: module.sample(
        pipe,
        labels,
        seed=seed,
        num_steps=bench.steps,
        guidance_scale=bench.guidance,
        keep_gradients=torch.is_grad_enabled(),
    )


def tune_rows(
    bench: Bench, saved: Checkpoint, log: Log, runs: int
) -> tuple[list[Row], dict[tuple[int, float], dict[str, Any]]]:
    """Per calibration seed and target: tune's row (at most ``runs`` sampler runs) and the plain
    forecast search's row; and by ``(seed, target)`` how tune chose (its schedule's ``tuned``
    metadata)."""
    run = runner(bench)
    rows, how = [], {}
    for seed in bench.seeds.calibration:
        curves = shared_curves(bench, log, seed)
        for budget in TARGETS:

            def choose(b: float = budget, s: int = seed) -> smoothcache.Schedule:
                log(f"tune at {b:g}, calibration seed {s}")
                tuned = smoothcache.tune(
                    bench.model,
                    run,
                    compute_fraction=b,
                    calibration_seed=s,
                    held_out_seed=bench.seeds.held_out,
                    budget=runs,
                )
                log(tuned.report())
                return tuned.schedule

            schedule = saved.schedule(f"tune|runs={runs}|{seed}|{budget}", choose)
            how[seed, budget] = schedule.metadata["tuned"]
            plain = curves.schedule(compute_fraction=budget, method="forecast")
            for family, chosen in ((TUNED, schedule), (PLAIN, plain)):
                row = bench.cached(family, f"compute <= {budget:g}", chosen, budget=budget)
                row.calibration_seed = seed
                rows.append(row)
    return rows, how


def _table(rows: list[Row], bench: Bench) -> list[dict[str, Any]]:
    """What :func:`benchmarks.common.scoring.targets` reads of every row."""
    table = []
    for index, row in enumerate(rows):
        assert row.errors is not None
        table.append(
            {
                "family": row.family,
                "setting": row.setting,
                "budget": row.budget,
                "computed": row.computed / bench.cells,
                "psnr": None if index == 0 else float(psnr_db(row.errors.mean())),
                "worst_psnr": float(psnr_db(row.errors).min()),
                "calibration_seed": row.calibration_seed,
                "chosen": [],
            }
        )
    return table


def _full_recipe_cost(bench: Bench, seed: int, target: float) -> tuple[int, float]:
    """Evaluations (model calls x batch rows) and seconds of the full recipe at one budget: the
    calibration run and the sensitivity's runs on the calibration samples, then the held-out
    runs of ``select_schedule``, from the runs the curves and the chosen schedule recorded (read
    back from the quality page's checkpoint)."""
    curves = shared_curves(bench, lambda _: None, seed)
    meta = curves.sensitivity.metadata

    def missing() -> smoothcache.Schedule:
        raise SystemExit(f"the full recipe's schedule at {target:g} is not in the checkpoint")

    schedule = bench.checkpoint.schedule(f"forecast|{seed}|{target}", missing)
    rows_per_sample = 2  # guidance: one doubled batch, or two calls of one batch
    per_run = bench.steps * rows_per_sample
    calibration = (1 + int(meta["runs"])) * bench.calibration_samples * per_run
    selection = (2 + len(schedule.metadata["selection_mse"])) * bench.held_out_samples * per_run
    return calibration + selection, float(meta["seconds"])


def main() -> None:
    """Read the quality page's rows, add tune's and the plain search's, write the page."""
    parser = quality_speed.page_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget",
        type=int,
        default=smoothcache.tuner.BUDGET,
        help="tune's budget in sampler runs (default: tune's own); another writes its own page",
    )
    parser.add_argument(
        "--tune-only",
        action="store_true",
        help="measure tune's rows only (into their own checkpoint), while the quality page's run "
        "is still going: a later run without it reads them back and writes the page",
    )
    args, started = parser.parse_args(), time.perf_counter()
    bench, saved, rows, log = quality_speed.read_page(args, "-tune")
    if args.tune_only:
        for row in tune_rows(bench, saved, log, args.budget)[0]:
            evaluate(row, rows[0].images, saved)
        log(f"tune's rows are in {saved.folder}")
        return
    for row in rows[1:]:
        evaluate(row, rows[0].images, bench.checkpoint)
    fewer = fewer_steps_rows(bench, rows[1:])
    for row in fewer:
        evaluate(row, rows[0].images, bench.checkpoint)
    if bench.checkpoint.read == 0:
        raise SystemExit("nothing was read back: run benchmarks.quality_speed with --checkpoint")
    extra, how = tune_rows(bench, saved, log, args.budget)
    for row in extra:
        evaluate(row, rows[0].images, saved)
    everything = [rows[0], *fewer, *rows[1:], *extra]
    boot = Bootstrap.draw(bench.samples, 2000, seed=0)
    errors = np.stack([row.errors for row in everything])
    scores = Scores(_table(everything, bench), boot.batch_psnr(errors))
    lines = _page(bench, scores, how, args, time.perf_counter() - started)
    name = f"tune_quality_{args.model}" + ("_test" if args.seeds == "test" else "")
    if args.budget != smoothcache.tuner.BUDGET:
        name += f"_budget{args.budget}"
    path = args.out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    log(f"wrote {path}")


def _db(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "n/a"


def _page(
    bench: Bench,
    scores: Scores,
    how: dict[tuple[int, float], dict[str, Any]],
    args: argparse.Namespace,
    seconds: float,
) -> list[str]:
    """The page: per target and seed, tune against the envelope, the full recipe, the plain
    search; then the cost."""
    table, reps = scores.table, scores.replicates
    lines_by_row = {id(line["row"]): line for line in targets(scores) if line["row"] is not None}

    def find(family: str, target: float, seed: int) -> int:
        return next(
            i
            for i, r in enumerate(table)
            if r["family"] == family
            and r["calibration_seed"] == seed
            and r["budget"] is not None
            and math.isclose(r["budget"], target)
        )

    def paired(i: int, j: int) -> str:
        low, high = interval(reps[i] - reps[j])
        return f"{table[i]['psnr'] - table[j]['psnr']:+.2f} [{low:+.2f}, {high:+.2f}]"

    seeds = args.seeds
    budget = "" if args.budget == smoothcache.tuner.BUDGET else f" --budget {args.budget}"
    out = [
        f"# `smoothcache.tune` on the {bench.loaded.title.lower()} ({seeds} seeds)",
        "",
        f"Written by `python -m benchmarks.tune_quality --threads 1 --model {bench.model_name} "
        f"--seeds {seeds}{budget} --checkpoint .bench-checkpoints` (the quality page's rows read "
        "back from "
        f"its checkpoint; tune's rows measured here) in {seconds / 60:.0f} minutes. Model: "
        f"{bench.loaded.description}; {bench.loaded.sampler} {bench.steps} steps, guidance "
        f"{bench.guidance:g}; {bench.samples} evaluation samples of seed "
        f"{bench.seeds.evaluation}; CPU, float32, torch {torch.__version__}.",
        "",
        f"tune (at most {args.budget} sampler runs) calibrates on the first {BATCH} samples of "
        f"each calibration seed and chooses on the first {BATCH} of held-out seed "
        f"{bench.seeds.held_out} (and of the next seeds, when its budget buys more held-out "
        "rounds); the full recipe uses "
        f"{bench.calibration_samples} and {bench.held_out_samples} of the same seeds. Margins are "
        "batch PSNR differences in dB with 90% bootstrap intervals over the evaluation samples.",
        "",
        "| target | seed | tune dB (worst) | over peers' envelope | vs full recipe "
        "| vs plain search | plain search dB (worst) | full recipe dB (worst) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        for seed in bench.seeds.calibration:
            t, p = find(TUNED, target, seed), find(PLAIN, target, seed)
            f = find(FAMILY, target, seed)
            envelope = lines_by_row[id(table[t])]
            low, high = envelope["interval"]
            out.append(
                f"| {target:.0%} | {seed} | {table[t]['psnr']:.2f} ({table[t]['worst_psnr']:.1f}) "
                f"| {_db(envelope['margin'])} [{low:+.2f}, {high:+.2f}] | {paired(t, f)} "
                f"| {paired(t, p)} | {table[p]['psnr']:.2f} ({table[p]['worst_psnr']:.1f}) "
                f"| {table[f]['psnr']:.2f} ({table[f]['worst_psnr']:.1f}) |"
            )
    out += ["", "## Cost", ""]
    out += [
        "| target | seed | tune: runs, evaluations, seconds | full recipe: evaluations, "
        "seconds of its sensitivity | ratio of evaluations | tune's sensitivity |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        for seed in bench.seeds.calibration:
            tuned = how[seed, target]
            full, full_seconds = _full_recipe_cost(bench, seed, target)
            out.append(
                f"| {target:.0%} | {seed} | {tuned['runs']}, {tuned['evaluations']:,}, "
                f"{tuned['seconds']:.0f} s | {full:,}, {full_seconds:.0f} s "
                f"| 1/{full / tuned['evaluations']:.0f} | {tuned['sensitivity']} |"
            )
    return out


if __name__ == "__main__":
    main()
