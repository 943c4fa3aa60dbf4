"""Schedules that beat uniform caching: PSNR against compute on the reference model.

One process, one model (``smoothcache.reference``, the digits DiT), one sampler (DDIM, 50 steps,
guidance 1.5 as one doubled batch). Calibration (the error curves and the sensitivity) uses its
own samples (seed 1000); every row is scored on separate evaluation samples (seed 0) against the
uncached samples of the same seeds. Rows:

- FORA, every 2nd to 6th step (``Schedule.uniform``);
- the paper's rule (``method="paper"``), per kind and per block: at each budget (the largest
  share of branch-steps not above it), at the smallest share at or above each of this method's
  shares (the comparison the targets ask for), and at a range of alphas for the curve;
- the schedule search (``method="sensitivity"``), per kind and per block, at several budgets.

Columns: branch-steps computed (counted by the engine), PSNR against the uncached samples, the
accuracy of the reference digits classifier, and for the schedule search the PSNR its model
predicts on the calibration samples. Writes ``docs/schedule_search.md`` and
``docs/schedule_search.png``::

    python -m benchmarks.schedule_search            # the page in the docs
    python -m benchmarks.schedule_search --quick    # a small smoke run, written to /tmp
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import smoothcache
from benchmarks.common.bench import CALIBRATION_SEED, EVAL_SEED, KINDS
from benchmarks.common.calibration import add_curves_option, calibrate, fora_share, shown_arguments
from benchmarks.common.plot import compute_plot
from benchmarks.common.stats import margin_interval
from benchmarks.common.timing import Log, device_line
from smoothcache import ErrorCurves, Schedule, ScheduleError
from smoothcache.reference import digits_classifier, load_reference_model, psnr, sample

BUDGETS = (0.5, 0.35, 0.25)
EQUAL = (2, 3, 4)  # FORA every 2nd, 3rd, 4th step: the search runs at their shares too
CURVE_BUDGETS = (0.2, 0.3, 0.4, 0.6)
ALPHAS = (0.08, 0.1, 0.15, 0.2, 0.3)
FAMILIES = {  # family: (marker, colour) in the plot, in table order
    "FORA": ("s", "tab:orange"),
    "paper rule (per kind)": ("*", "tab:blue"),
    "paper rule (per block)": ("P", "tab:cyan"),
    "sensitivity (per kind)": ("o", "tab:red"),
    "sensitivity (per block)": ("D", "tab:pink"),
}


@dataclass
class Row:
    """One schedule and what it scored on the evaluation samples."""

    family: str
    setting: str
    schedule: Schedule
    computed: float = math.nan
    psnr: float = math.nan
    accuracy: float = math.nan
    errors: np.ndarray | None = None  # mean squared error of each evaluation sample

    @property
    def predicted(self) -> float | None:
        """PSNR the schedule search predicts on the calibration samples (its rows only)."""
        rms = self.schedule.metadata.get("predicted_rms")
        if rms is None:
            return None
        return math.inf if rms == 0 else 10 * math.log10(4.0 / rms**2)


def paper_at_least(curves: ErrorCurves, fraction: float, per_block: bool) -> Schedule:
    """The paper's rule at the alpha whose schedule computes the smallest share >= ``fraction``.

    A rule schedule changes only where alpha crosses an error value of the curves, so scanning
    those values (and 0) reaches every schedule the rule can make.
    """
    values = np.unique(np.concatenate([[0.0], curves.mean[np.isfinite(curves.mean)]]))
    best: Schedule | None = None
    for alpha in values:
        schedule = curves.schedule(alpha=float(alpha), per_block=per_block)
        share = schedule.metadata["compute_fraction"]
        if share >= fraction - 1e-12 and (
            best is None or share < best.metadata["compute_fraction"]
        ):
            best = schedule
    assert best is not None  # alpha 0 computes everything
    return best


def schedules(curves: ErrorCurves, steps: int, per_block: bool) -> list[Row]:
    """Every row of the table, without scores; identical schedules appear once."""
    rows = [
        Row("FORA", f"every {every}", Schedule.uniform(steps, every, KINDS))
        for every in (2, 3, 4, 5, 6)
    ]
    ours = []
    equal = {fora_share(row.schedule) for row in rows if row.schedule.metadata["every"] in EQUAL}
    for budget in sorted({*BUDGETS, *CURVE_BUDGETS, *equal}, reverse=True):
        schedule = curves.schedule(compute_fraction=budget, method="sensitivity")
        ours.append(Row("sensitivity (per kind)", f"compute <= {budget:g}", schedule))
    if per_block:
        for budget in BUDGETS:
            schedule = curves.schedule(
                compute_fraction=budget, method="sensitivity", per_block=True
            )
            ours.append(Row("sensitivity (per block)", f"compute <= {budget:g}", schedule))
    rows += ours
    for blockwise in (False, True):
        family = f"paper rule (per {'block' if blockwise else 'kind'})"
        for alpha in ALPHAS:
            schedule = curves.schedule(alpha=alpha, per_block=blockwise, method="paper")
            rows.append(Row(family, f"alpha={alpha:g}", schedule))
        for budget in BUDGETS:
            try:
                schedule = curves.schedule(
                    compute_fraction=budget, per_block=blockwise, method="paper"
                )
            except ScheduleError:  # below what lookahead 3 allows (the next loop covers it)
                continue
            setting = f"compute <= {budget:g} (alpha={schedule.metadata['alpha']:.3f})"
            rows.append(Row(family, setting, schedule))
        for row in ours:
            share = row.schedule.metadata["compute_fraction"]
            schedule = paper_at_least(curves, share, blockwise)
            setting = f"compute >= {share:.2f} (alpha={schedule.metadata['alpha']:.3f})"
            rows.append(Row(family, setting, schedule))
    unique: dict[tuple, Row] = {}
    for row in rows:
        key = (row.family, tuple(sorted(row.schedule.rows.items())))
        unique.setdefault(key, row)
    return list(unique.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples (1000)")
    parser.add_argument("--calibration-samples", type=int, default=10, help="(default 10)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out-dir", type=Path, help="default docs/, or /tmp with --quick")
    add_curves_option(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="40 samples, 5 calibration samples, no per-block sensitivity",
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.calibration_samples = 40, 5
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.out_dir or (Path("/tmp") if args.quick else Path(__file__).parents[1] / "docs")
    log = Log(sys.stderr)
    started = log.started

    device = torch.device(args.device)
    model = load_reference_model(device=device)
    classifier = digits_classifier()
    labels = torch.arange(args.samples) % 10
    calibration_labels = torch.arange(args.calibration_samples) % 10
    options = {"num_steps": args.steps, "guidance_scale": args.guidance}

    def evaluation() -> torch.Tensor:
        return sample(model, labels, seed=EVAL_SEED, **options).cpu()

    def calibration() -> torch.Tensor:
        return sample(model, calibration_labels, seed=CALIBRATION_SEED, **options)

    # -- calibration -------------------------------------------------------------------------
    read = args.curves is not None and args.curves.exists()
    curves = calibrate(model, calibration, args.curves, not args.quick, log)
    curves_seconds = curves.metadata["seconds"]
    sensitivity_seconds = curves.sensitivity.metadata["seconds"]
    per_block = any(g.startswith("all-but-block-") for g in curves.sensitivity.groups)
    runs = curves.sensitivity.metadata["runs"]
    per_run = sensitivity_seconds / runs
    log(f"sensitivity: {runs} runs in {sensitivity_seconds:.0f} s")

    # -- rows --------------------------------------------------------------------------------
    reference = evaluation()
    reference_accuracy = classifier.accuracy(reference, labels)
    rows = schedules(curves, args.steps, per_block)
    log(f"{len(rows)} schedules on {args.samples} evaluation samples")
    for index, row in enumerate(rows):
        with smoothcache.enabled(model, row.schedule) as session:
            images = evaluation()
        row.computed = 1.0 - session.stats.reuse_fraction
        row.psnr = psnr(images, reference)
        row.errors = ((images.double() - reference.double()) ** 2).flatten(1).mean(1).numpy()
        row.accuracy = classifier.accuracy(images, labels)
        log(f"  {index + 1}/{len(rows)} {row.family}, {row.setting}: {row.psnr:.2f} dB")
    elapsed = time.perf_counter() - started
    if read:  # the calibration read from the file is part of what the command takes
        elapsed += curves_seconds + sensitivity_seconds

    # -- report ------------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / "schedule_search.md", out_dir / "schedule_search.png"
    order = list(FAMILIES)
    table = sorted(rows, key=lambda r: (order.index(r.family), -r.computed, r.setting))
    lines = [
        "| method | setting | branch-steps computed | PSNR (dB) | accuracy | predicted PSNR (dB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in table:
        predicted = "" if r.predicted is None else f"{r.predicted:.1f}"
        lines.append(
            f"| {r.family} | {r.setting} | {r.computed:.1%} | {r.psnr:.2f} | {r.accuracy:.1%} | "
            f"{predicted} |"
        )
    targets = _targets(rows)
    command = "python -m benchmarks.schedule_search" + " ".join(
        ["", *shown_arguments(sys.argv[1:])]
    )
    blocks = len({b.block for b in curves.branches})
    kind_runs = 2 + (1 + len(curves.kinds)) * (args.steps - 2)
    measured = "`per_block=True`" if per_block else "`per_block=False`"
    estimate = (
        f"| sensitivity, `per_block=False` (at the same time per run) | {kind_runs} | "
        f"{kind_runs * per_run:.0f} |\n"
        if per_block
        else ""
    )
    header = f"""# Schedule search: quality per unit of compute on the reference model

Generated by `python -m benchmarks.schedule_search`; the method is explained in
[schedule-search-method.md](schedule-search-method.md). Regenerate (about
{elapsed / 60:.0f} minutes here) with:

<!-- not run: about {elapsed / 60:.0f} minutes of benchmarking -->
```bash
{command}
```

- **Model**: `smoothcache.reference` (digits-dit, 6 blocks, 12 branches: `attn1` and `ff` per
  block), float32. **Sampler**: DDIM {args.steps} steps (`trailing`), guidance {args.guidance:g}
  as one doubled batch.
- **Calibration**: {args.calibration_samples} samples (classes 0-9 in turn, seed
  {CALIBRATION_SEED}); error curves with lookahead 3 for the paper's rule, and
  `smoothcache.measure_sensitivity` for the schedule search. **Evaluation**: {args.samples} other
  samples (seed {EVAL_SEED}), the same for every row.
- **PSNR**: of each row's samples against the uncached samples of the same seeds, pixels in
  [-1, 1]. **Accuracy**: the reference digits classifier on the samples, against the labels they
  were sampled for (uncached: {reference_accuracy:.1%}). **Predicted PSNR**: what the schedule
  search's model predicts on the calibration samples, from the sensitivity alone.
- **Device**: {device_line(device)}; torch {torch.__version__}.

## Calibration cost, measured here

| measurement | sampler runs | seconds |
|---|---:|---:|
| error curves (the paper's rule) | 1 | {curves_seconds:.1f} |
| sensitivity, {measured} | {runs} | {sensitivity_seconds:.0f} |
{estimate}
One sampler run is {per_run:.2f} s here ({args.calibration_samples} samples, {args.steps} steps).
The sensitivity takes 2 runs plus {args.steps - 2} (one per step between the first and the last)
for every branch reusing at once, for all but each of the {len(curves.kinds)} kinds, and with
`per_block=True` for all but each of the {blocks} blocks.

## Against the targets

At each budget, the schedule search against the baselines at equal or greater compute: FORA
at the smallest share at or above the search's, and the paper's rule at the alpha whose share is
the smallest at or above it. The last column is the PSNR margin over that FORA row, with the
5th to 95th percentile of the margin over 2,000 bootstrap resamples of the evaluation samples.

{targets}

Where each margin comes from: the PSNR of a batch is that of its mean squared error, which a few
samples can dominate. Below, the same comparisons for the typical sample (the median of the
per-sample squared errors) and with each row's worst 1% of samples left out:

{_bulk_and_tail(rows)}

## Against FORA at equal compute

The schedule search (per kind) at exactly the share each FORA row computes:

{_equal_compute(rows)}

## Every row

"""
    md_path.write_text(
        header + "\n".join(lines) + "\n\n![PSNR against compute](schedule_search.png)\n"
    )
    compute_plot(
        rows, FAMILIES, "Reference model, DDIM 50 steps: fidelity against compute", png_path
    )
    print(targets)
    log(f"wrote {md_path} and {png_path}")


def _targets(rows: list[Row]) -> str:
    """The comparison at each budget: the search against each baseline's closest row above it."""
    lines = [
        "| schedule search | computed | PSNR | FORA (computed, PSNR) | paper per kind "
        "(computed, PSNR) | paper per block (computed, PSNR) | accuracy | beats all | margin over "
        "FORA (90% interval) |",
        "|---|---:|---:|---|---|---|---:|---|---|",
    ]
    rivals = ("FORA", "paper rule (per kind)", "paper rule (per block)")
    for family in ("sensitivity (per kind)", "sensitivity (per block)"):
        for budget in BUDGETS:
            setting = f"compute <= {budget:g}"
            ours = [r for r in rows if r.family == family and r.setting == setting]
            if not ours:
                continue
            row = ours[0]
            cells, wins, margin = [], True, ""
            for rival in rivals:
                best = closest_above(rows, rival, row.computed)
                name = f"{best.setting}: " if rival == "FORA" else ""
                cells.append(f"{name}{best.computed:.0%}, {best.psnr:.2f}")
                wins = wins and row.psnr > best.psnr
                if rival == "FORA":
                    low, high = margin_interval(row.errors, best.errors)
                    margin = f"{row.psnr - best.psnr:+.2f} dB ({low:+.2f} to {high:+.2f})"
            lines.append(
                f"| {family.split(' ', 1)[1]} at {budget:.0%} | {row.computed:.0%} | "
                f"{row.psnr:.2f} | {' | '.join(cells)} | {row.accuracy:.1%} | "
                f"{'yes' if wins else '**no**'} | {margin} |"
            )
    return "\n".join(lines)


def closest_above(rows: list[Row], family: str, computed: float) -> Row:
    """The row of ``family`` with the least share at or above ``computed`` (best PSNR on ties)."""
    above = [r for r in rows if r.family == family and r.computed >= computed - 1e-9]
    return min(above, key=lambda r: (r.computed, -r.psnr))


def _equal_compute(rows: list[Row]) -> str:
    """The search (per kind) against FORA at the very share each FORA row computes."""
    lines = [
        "| FORA | computed | FORA PSNR | search PSNR | margin (90% interval) |",
        "|---|---:|---:|---:|---|",
    ]
    for fora in sorted((r for r in rows if r.family == "FORA"), key=lambda r: -r.computed):
        ours = [
            r
            for r in rows
            if r.family == "sensitivity (per kind)" and abs(r.computed - fora.computed) < 1e-9
        ]
        if not ours:
            continue
        low, high = margin_interval(ours[0].errors, fora.errors)
        lines.append(
            f"| {fora.setting} | {fora.computed:.0%} | {fora.psnr:.2f} | {ours[0].psnr:.2f} | "
            f"{ours[0].psnr - fora.psnr:+.2f} dB ({low:+.2f} to {high:+.2f}) |"
        )
    return "\n".join(lines)


def _bulk_and_tail(rows: list[Row]) -> str:
    """Each target margin over FORA split into what the typical sample and the worst ones say.

    The PSNR of a batch is that of its mean squared error, which a few samples can dominate;
    the margin of the median sample and the margin with each row's worst 1% left out show
    whether the bulk of the samples agrees with the headline margin.
    """
    lines = [
        "| schedule search | against | margin | margin of the median sample | margin without "
        "each row's worst 1% | worst 1%'s share of the squared error (search, FORA) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for budget in BUDGETS:
        ours = [
            r
            for r in rows
            if r.family == "sensitivity (per kind)" and r.setting == f"compute <= {budget:g}"
        ]
        if not ours:
            continue
        row = ours[0]
        fora = closest_above(rows, "FORA", row.computed)
        assert row.errors is not None and fora.errors is not None
        worst = max(len(row.errors) // 100, 1)
        a, b = np.sort(row.errors), np.sort(fora.errors)
        share_a, share_b = (float(e[-worst:].sum() / e.sum()) for e in (a, b))
        lines.append(
            f"| at {budget:.0%} ({row.computed:.0%}) | FORA {fora.setting} ({fora.computed:.0%}) | "
            f"{row.psnr - fora.psnr:+.2f} dB | "
            f"{10 * math.log10(np.median(b) / np.median(a)):+.2f} dB | "
            f"{10 * math.log10(b[:-worst].mean() / a[:-worst].mean()):+.2f} dB | "
            f"{share_a:.0%}, {share_b:.0%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
