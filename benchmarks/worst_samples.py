"""Where the worst samples of a cached evaluation get their error, on the reference model.

The PSNR of a batch is that of its mean squared error, and on the reference model a handful of
its 1000 evaluation samples carry a third of it (``docs/schedule_search.md``). This script takes
the schedule search at one budget and FORA at the next share at or above it, finds the
evaluation samples with the largest error under each, and samples just those again, once for
every reuse run of the schedule with that run computed instead (every branch computes at its
steps), keeping the rest of the schedule. The ratio of the error with a run computed to the
error without says which reuses a sample's error comes from; a ratio above 1 means computing
*more* made that sample worse. Writes ``docs/worst_samples.md``::

    python -m benchmarks.worst_samples --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import smoothcache
from benchmarks.common.bench import CALIBRATION_SEED, EVAL_SEED, KINDS
from benchmarks.common.calibration import add_curves_option, calibrate, fora_share, shown_arguments
from benchmarks.common.timing import Log, device_line
from smoothcache import Schedule
from smoothcache.reference import initial_noise, load_reference_model, sample


def runs_of(schedule: Schedule) -> list[tuple[int, int]]:
    """The reuse runs ``(first, last)`` step of a schedule: stretches where no branch computes."""
    rows = np.array(list(schedule.rows.values()))
    any_computes = rows.max(axis=0)
    runs, start = [], None
    for step, computes in enumerate(any_computes):
        if not computes and start is None:
            start = step
        elif computes and start is not None:
            runs.append((start, step - 1))
            start = None
    return runs


def with_run_computed(schedule: Schedule, first: int, last: int) -> Schedule:
    """``schedule`` with every branch computing at steps ``first .. last``."""
    rows = {}
    for key, row in schedule.rows.items():
        flags = list(row)
        flags[first : last + 1] = [1] * (last - first + 1)
        rows[key] = flags
    return Schedule(rows=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples (1000)")
    parser.add_argument("--calibration-samples", type=int, default=10, help="(default 10)")
    parser.add_argument("--budget", type=float, default=0.25, help="the search's share (0.25)")
    parser.add_argument("--worst", type=int, default=4, help="worst samples of each row (4)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="default docs/worst_samples.md")
    add_curves_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parents[1] / "docs" / "worst_samples.md"
    log = Log(sys.stderr)

    model = load_reference_model()
    labels = torch.arange(args.samples) % 10
    noise = initial_noise(model, args.samples, EVAL_SEED)
    calibration_labels = torch.arange(args.calibration_samples) % 10
    curves = calibrate(
        model,
        lambda: sample(model, calibration_labels, seed=CALIBRATION_SEED),
        args.curves,
        False,
        log,
    )
    search = curves.schedule(compute_fraction=args.budget, method="sensitivity")
    share = search.metadata["compute_fraction"]
    fora = min(
        (Schedule.uniform(curves.num_steps, every, KINDS) for every in range(2, curves.num_steps)),
        key=lambda s: (fora_share(s) < share, fora_share(s)),
    )
    rows = {
        f"schedule search at {share:.0%}": search,
        f"FORA every {fora.metadata['every']} ({fora_share(fora):.0%})": fora,
    }

    def images(picked: torch.Tensor, schedule: Schedule | None) -> torch.Tensor:
        """The picked evaluation samples, uncached or under ``schedule``."""
        if schedule is None:
            return sample(model, labels[picked], noise=noise[picked])
        with smoothcache.enabled(model, schedule):
            return sample(model, labels[picked], noise=noise[picked])

    def errors(picked: torch.Tensor, schedule: Schedule, reference: torch.Tensor) -> np.ndarray:
        """Mean squared error of each picked sample under ``schedule`` against ``reference``."""
        cached = images(picked, schedule).double()
        return ((cached - reference.double()) ** 2).flatten(1).mean(1).numpy()

    everything = torch.arange(args.samples)
    log(f"uncached and cached samples of {args.samples} evaluation seeds")
    reference = images(everything, None)
    whole = {name: errors(everything, s, reference) for name, s in rows.items()}
    worst = sorted({int(i) for e in whole.values() for i in np.argsort(-e)[: args.worst]})
    picked = torch.tensor(worst)
    alone = images(picked, None)  # the picked samples alone, rounded as they are sampled below
    lines = []
    for name, schedule in rows.items():
        base = errors(picked, schedule, alone)
        median = float(np.median(whole[name]))
        runs = runs_of(schedule)
        lines += [
            f"### {name}",
            "",
            "| sample | label | error / median | share of the row's error | "
            + " | ".join(f"steps {a}-{b}" if a != b else f"step {a}" for a, b in runs)
            + " |",
            "|---:|---:|---:|---:|" + "---:|" * len(runs),
        ]
        ratios = []
        for first, last in runs:
            ratios.append(errors(picked, with_run_computed(schedule, first, last), alone) / base)
        log(f"  {name}: {len(runs)} runs computed in turn")
        for row, index in enumerate(worst):
            cells = " | ".join(f"{r[row]:.2f}" for r in ratios)
            lines.append(
                f"| {index} | {int(labels[index])} | {whole[name][index] / median:.0f} | "
                f"{whole[name][index] / whole[name].sum():.1%} | {cells} |"
            )
        lines.append("")
    command = "python -m benchmarks.worst_samples" + " ".join(["", *shown_arguments(sys.argv[1:])])
    minutes = (time.perf_counter() - log.started) / 60
    header = (
        "# The worst samples of a cached evaluation, and where their error comes from\n\n"
        f"Generated by `python -m benchmarks.worst_samples` in {minutes:.0f} minutes "
        f"({device_line(torch.device('cpu'))}; torch {torch.__version__}):\n\n"
        f"<!-- not run: {minutes:.0f} minutes of benchmarking -->\n```bash\n{command}\n```\n\n"
        f"The reference model (DDIM 50 steps, guidance 1.5), the {args.samples} evaluation "
        f"samples (seed {EVAL_SEED}) of [schedule_search.md](schedule_search.md) and its "
        f"calibration ({args.calibration_samples} samples, seed {CALIBRATION_SEED}). For the "
        f"schedule search at {args.budget:g} of the branch-steps and FORA at the next share at "
        f"or above it: the {args.worst} samples with the largest squared error under each (the "
        "same samples in both tables); their error against the median sample's under that "
        "schedule; their share of the whole evaluation's squared error; and, for each reuse run "
        "of the schedule, the ratio of the sample's error with that run computed (every branch, "
        "the rest of the schedule unchanged) to its error under the schedule. A ratio far below "
        "1 names the reuse the error comes from; a ratio above 1 means that computing more made "
        "the sample worse.\n\n"
    )
    out.write_text(header + "\n".join(lines))
    print("\n".join(lines))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
