"""Forecast schedules chosen in closed loop on held-out samples, beside the plain search.

For each budget of ``benchmarks.common.forecast_rows.BUDGETS``: the curves of the library's
forecast rows (``shared_curves``: 50 calibration samples, seed 1000, lookahead ``--lookahead``,
the sensitivity on the same samples, so the candidates' computes are placed by it),
and the schedule that ``smoothcache.select_schedule`` chooses among
``curves.forecast_candidates(compute_fraction=f)`` on ``--held-out`` held-out samples (seed
2000, disjoint from the evaluation samples, seed 0, and the calibration samples): the table's
forecast row. It and the plain search's schedule (``method="forecast"``) are then sampled on
the evaluation samples: batch, median and worst per-sample PSNR against the uncached samples,
and the batch PSNR's 90% bootstrap interval.

The margin is over the peer envelope of the model's table (docs/quality_speed*.md, the library's
forecast rows left out), with the peers at their table values: its interval is this row's
resampling only (the table's margins also resample the peers, on the same draws).

    python -m benchmarks.forecast_selection --model reference
    python -m benchmarks.forecast_selection --model second
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import smoothcache
from benchmarks.common.bench import CALIBRATION_SEED, HELD_OUT_SEED, Bench
from benchmarks.common.forecast_rows import (
    BUDGETS,
    CALIBRATION_SAMPLES,
    FAMILY,
    HELD_OUT,
    LOOKAHEAD,
    select,
    shared_curves,
)
from benchmarks.common.stats import Bootstrap, interval, psnr_db, sample_errors, upper_envelope

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"reference": "quality_speed.md", "second": "quality_speed_second.md"}


def table_peers(model: str) -> tuple[np.ndarray, np.ndarray]:
    """(compute fractions, batch PSNRs) of every row of the model's table but this library's
    forecast rows and the uncached reference."""
    xs, ys = [], []
    header: list[str] | None = None
    for line in (ROOT / "docs" / TABLES[model]).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["method", "setting"] and "batch PSNR (dB)" in cells:
            header = cells
            continue
        if header is None or len(cells) != len(header) or not cells[2].endswith("%"):
            continue
        if cells[0] in (FAMILY, "no cache"):
            continue
        xs.append(float(cells[2][:-1]) / 100)
        ys.append(float(cells[header.index("batch PSNR (dB)")]))
    return np.array(xs), np.array(ys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=tuple(TABLES), default="reference")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument(
        "--lookahead", type=int, default=LOOKAHEAD, help=f"of the calibration ({LOOKAHEAD})"
    )
    parser.add_argument(
        "--held-out", type=int, default=HELD_OUT, help=f"samples to choose on ({HELD_OUT})"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    bench = Bench(
        args.model, samples=args.samples, timing_samples=100,
        calibration_samples=CALIBRATION_SAMPLES, steps=50, guidance=1.5,
        device=torch.device("cpu"), held_out_samples=args.held_out,
    )  # fmt: skip
    model = bench.model
    curves = shared_curves(bench, lambda _: None, CALIBRATION_SEED, args.lookahead)
    reference = bench.sample(model, bench.steps)
    boot = Bootstrap.draw(args.samples, 2000, seed=0)
    peer_x, peer_y = table_peers(args.model)
    runs = 0
    print(
        f"{args.model} model, DDIM {bench.steps}, CPU, float32, one thread, torch "
        f"{torch.__version__}; {args.samples} evaluation samples (seed 0), {args.held_out} "
        f"held-out (seed {HELD_OUT_SEED}), curves from {CALIBRATION_SAMPLES} (seed 1000, lookahead "
        f"{args.lookahead}), sensitivity from the same samples"
    )
    print(
        "| compute | schedule | candidates (runs) | chosen: cap, prior, weighted | "
        "held-out batch PSNR | batch PSNR | 90% interval | median | worst | "
        "margin over the peers' envelope | its 90% interval |"
    )
    print("|---:|---|---:|---|---:|---:|---|---:|---:|---:|---|")
    for budget in BUDGETS:
        candidates = curves.forecast_candidates(compute_fraction=budget)
        chosen = select(bench, candidates)
        runs += 2 + len(candidates)
        held_db = [float(psnr_db(e)) for e in chosen.metadata["selection_mse"]]
        for name, schedule, index in (
            ("plain search", candidates[0], 0),
            ("selected", chosen, chosen.metadata["selected"]),
        ):
            with smoothcache.enabled(model, schedule):
                errors = sample_errors(bench.sample(model, bench.steps), reference)
            batch = float(psnr_db(errors.mean()))
            replicates = boot.batch_psnr(errors)
            per_sample = psnr_db(errors)
            low, high = interval(replicates)
            margin = ""
            if budget < 0.5:
                envelope = upper_envelope(peer_x, peer_y, schedule.compute_fraction).value[0]
                m_low, m_high = interval(replicates - envelope)
                margin = f"{batch - envelope:+.2f} | {m_low:+.2f} to {m_high:+.2f}"
            else:
                margin = "- | -"
            meta = schedule.metadata
            print(
                f"| {schedule.compute_fraction:.0%} | {name} | {len(candidates)} | "
                f"{meta['order_cap']}, {meta['order_prior']:g}, "
                f"{'yes' if meta['weighted'] else 'no'} | {held_db[index]:.2f} | "
                f"{batch:.2f} | {low:.2f} to {high:.2f} | {np.median(per_sample):.2f} | "
                f"{per_sample.min():.2f} | {margin} |"
            )
    minutes = (time.perf_counter() - started) / 60
    print(f"\nselection: {runs} held-out sampler runs; whole script {minutes:.1f} min")
    return 0 if math.isfinite(minutes) else 1


if __name__ == "__main__":
    sys.exit(main())
