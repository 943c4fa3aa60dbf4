"""A tuned schedule at another step count: mapped from 50 steps against tuned there (issue #27).

``smoothcache.tune`` makes a schedule at the model's own step count (50 for the digits DiTs);
``Schedule.remapped(num_steps=N)`` maps it to ``N`` steps by position (compute share kept,
forecast weights recomputed). For ``N`` in 20, 28 and 100 this benchmark scores, on the
evaluation samples of the seed split at ``N`` steps against the uncached model at ``N`` steps:

- **mapped**: the schedule tuned at 50 steps, remapped to ``N``;
- **tuned at N**: ``tune`` run at ``N`` steps (the same seeds and budget);
- **FORA**: reuse every ``k``-th step, the largest share not above the mapped schedule's;
- **diffusers' TaylorSeer** (order 2, its default warm-up of 3 steps) at the two intervals whose
  compute brackets the mapped schedule's.

Batch PSNR with a 90% bootstrap interval (the same replicates for every row of one ``N``), the
worst sample, and the branch-steps each computed. Writes ``docs/portability_<model>[_test].md``::

    python -m benchmarks.portability --threads 1 --model reference --seeds test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import smoothcache
from benchmarks.common.bench import MODELS, Bench, Row
from benchmarks.common.peers import Settings, diffusers_rows
from benchmarks.common.scoring import evaluate
from benchmarks.common.seeds import SPLITS
from benchmarks.common.stats import Bootstrap, interval, psnr_db
from benchmarks.common.timing import Log
from benchmarks.tune_quality import BATCH, runner

STEPS = (20, 28, 100)
BUDGET = 0.3


def _bench(model: str, seeds: str, steps: int | None, samples: int) -> Bench:
    return Bench(
        model,
        samples=samples,
        timing_samples=1,
        calibration_samples=BATCH,
        steps=steps,
        device=torch.device("cpu"),
        seeds=SPLITS[seeds],
        held_out_samples=BATCH,
    )


def _tune(bench: Bench, log: Log) -> smoothcache.Tuned:
    tuned = smoothcache.tune(
        bench.model,
        runner(bench),
        compute_fraction=BUDGET,
        calibration_seed=bench.seeds.calibration[0],
        held_out_seed=bench.seeds.held_out,
    )
    log(f"tuned at {bench.steps} steps in {tuned.seconds:.0f} s: {tuned.runs} runs")
    return tuned


def _taylor_rows(bench: Bench, share: float) -> list[Row]:
    """diffusers' TaylorSeer (order 2, warm-up 3) at the two intervals bracketing ``share``:
    it computes the first 3 steps, then ``floor((N - 3) / k)`` more (measured: 5 of 20 at
    ``k = 8``, 27 of 100 at ``k = 4``)."""

    def computed(k: int) -> float:
        return (3 + (bench.steps - 3) // k) / bench.steps

    above = max((k for k in range(2, bench.steps) if computed(k) >= share), default=2)
    settings = Settings(
        taylor_orders=(2,), taylor_intervals=(above, above + 1), taylor_warmups=(3,)
    )
    return diffusers_rows(bench, settings)


def main() -> None:
    """Tune at 50 steps, map to every ``N``, score against tune at ``N`` and the peers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="reference")
    parser.add_argument("--seeds", choices=tuple(SPLITS), default="development")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out-dir", type=Path, default=Path("docs"))
    parser.add_argument(
        "--from-steps",
        type=int,
        help="the step count tune runs at before mapping (default: the model's own)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    log, started = Log(), time.perf_counter()
    base = _bench(args.model, args.seeds, args.from_steps, args.samples)
    tuned = _tune(base, log)
    lines = [
        f"# A tuned schedule at other step counts: {base.loaded.title.lower()} "
        f"({args.seeds} seeds)",
        "",
        "| steps | schedule | branch-steps computed | batch PSNR (dB) [90% interval] "
        "| worst sample (dB) |",
        "|---|---|---:|---|---:|",
    ]
    for steps in STEPS:
        bench = _bench(args.model, args.seeds, steps, args.samples)
        plain = bench.plain(steps)
        evaluate(plain, None)
        mapped = tuned.schedule.remapped(num_steps=steps)
        at_n = _tune(bench, log).schedule
        kinds = bench.loaded.kinds
        fora_every = next(
            k
            for k in range(2, steps + 1)
            if smoothcache.Schedule.uniform(steps, k, kinds).compute_fraction
            <= mapped.compute_fraction + 1e-12
        )
        rows = [
            bench.cached(f"tuned at {base.steps} steps, mapped", "", mapped),
            bench.cached(f"tuned at {steps} steps", "", at_n),
            bench.cached(
                "FORA",
                f"every {fora_every}",
                smoothcache.Schedule.uniform(steps, fora_every, kinds),
            ),
            *_taylor_rows(bench, mapped.compute_fraction),
        ]
        for row in rows:
            evaluate(row, plain.images)
            log(f"{steps} steps, {row.family} {row.setting}: {psnr_db(row.errors.mean()):.2f} dB")
        boot = Bootstrap.draw(bench.samples, 2000, seed=0)
        reps = boot.batch_psnr(np.stack([row.errors for row in rows]))
        for index, row in enumerate(rows):
            low, high = interval(reps[index])
            name = f"{row.family}, {row.setting}" if row.setting else row.family
            lines.append(
                f"| {steps} | {name} | {row.computed / bench.cells:.1%} "
                f"| {psnr_db(row.errors.mean()):.2f} [{low:.2f}, {high:.2f}] "
                f"| {psnr_db(row.errors).min():.1f} |"
            )
        low, high = interval(reps[0] - reps[1])
        lines.append(
            f"| {steps} | mapped minus tuned at {steps} | | "
            f"{psnr_db(rows[0].errors.mean()) - psnr_db(rows[1].errors.mean()):+.2f} "
            f"[{low:+.2f}, {high:+.2f}] | |"
        )
    minutes = (time.perf_counter() - started) / 60
    seeds = SPLITS[args.seeds]
    from_steps = f" --from-steps {args.from_steps}" if args.from_steps else ""
    lines[1:1] = [
        "",
        f"Written by `python -m benchmarks.portability --threads 1 --model {args.model} --seeds "
        f"{args.seeds}{from_steps}` in {minutes:.0f} minutes (CPU, one thread, float32, torch "
        f"{torch.__version__}). `smoothcache.tune` at {BUDGET:.0%} of the branch-steps, "
        f"{BATCH} calibration samples of seed {seeds.calibration[0]} and {BATCH} held-out of "
        f"seed {seeds.held_out}, at {base.steps} steps ({base.loaded.sampler}, guidance "
        f"{base.guidance:g}), mapped with `Schedule.remapped(num_steps=N)`; every row scored on "
        f"{args.samples} samples of seed {seeds.evaluation} against the uncached model at the "
        "same step count.",
    ]
    name = f"portability_{args.model}" + ("_test" if args.seeds == "test" else "")
    path = args.out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
