"""Fitted forecasts against Lagrange's, and budgets down to 10% of the compute (issue #28).

It reads the rows of ``benchmarks.quality_speed`` from that benchmark's checkpoint (the same
model, seeds and evaluation samples: run it first with the same ``--model``, ``--seeds`` and
``--checkpoint``) and adds:

- per calibration seed, a calibration of the page's calibration samples with lookahead
  :data:`LOOKAHEAD` (one sampler run: 10% of the compute needs runs of up to 12 skipped steps),
  and from those curves, at every budget of :data:`BUDGETS`, the plain forecast search
  (``method="forecast"``, Lagrange weights) and the fitted search (``method="fitted"``: the
  same search scoring and answering forecasts with weights fitted to the calibration);
- at :data:`CLOSED_BUDGETS`, the :data:`CLOSED_BASE` search's schedule with its weights fitted
  through the sampler (:func:`smoothcache.fit_closed_loop`, one fresh 16-sample batch per
  iteration, seeds derived from the calibration seed: ``seed * 100 + i``);
- the peers that reach 15% and 10%: FORA and diffusers' TaylorSeer (orders 1 and 2) at longer
  intervals than the quality page's, and the sampler at as few steps.

Every row is scored on the page's evaluation samples: batch PSNR against the uncached samples
with 90% bootstrap intervals (the same replicates for every row), the worst sample, the fitted
row's margin over the Lagrange row and both rows' margins over the envelope of every peer at
their compute (the quality page's peers and the ones added here; the library's rows are not
peers). Also the CPU seconds of fitting. Writes ``docs/fitted_quality_<model>[_test].md``::

    python -m benchmarks.fitted_quality --threads 1 --model reference --seeds test \\
        --checkpoint .bench-checkpoints
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import smoothcache
from benchmarks import quality_speed
from benchmarks.common.bench import Bench, Row
from benchmarks.common.checkpoint import Checkpoint
from benchmarks.common.forecast_rows import FAMILY
from benchmarks.common.peers import Settings, diffusers_rows, fewer_steps_rows, fora_rows
from benchmarks.common.scoring import PeerEnvelope, Scores, evaluate
from benchmarks.common.stats import Bootstrap, interval
from benchmarks.common.timing import Log
from benchmarks.tune_quality import _table, runner
from smoothcache import closedloop
from smoothcache.engine import low_precision

LAGRANGE = f"{FAMILY}, Lagrange"
FITTED = f"{FAMILY}, fitted"
BUDGETS = (0.3, 0.2, 0.15, 0.1)
#: The Lagrange rows again with their stored outputs in 16 bits, at these budgets.
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
HALF_BUDGETS = (0.3, 0.2)
LOOKAHEAD = 12
CLOSED = f"{FAMILY}, closed-loop fitted"
CLOSED_BUDGETS = (0.3, 0.2)
#: The search whose schedule the closed-loop fit starts from ("forecast": Lagrange weights).
CLOSED_BASE = "fitted"
#: Peers at the longer intervals that reach 15% and 10% of the compute.
LOW = Settings(
    fora=(8, 10, 13), taylor_orders=(1, 2), taylor_intervals=(10, 13), taylor_warmups=(3,)
)


def library_rows(
    bench: Bench, saved: Checkpoint, log: Log
) -> tuple[list[Row], dict[int, float], dict[tuple[int, float], dict[str, Any]]]:
    """Per calibration seed and budget: the Lagrange, fitted and closed-loop fitted rows; per
    seed the CPU seconds fitting added to the search (all budgets); per seed and budget what
    the closed-loop fit recorded."""
    rows, fit_seconds, closed = [], {}, {}
    for seed in bench.seeds.calibration:

        def measure(s: int = seed) -> smoothcache.ErrorCurves:
            log(
                f"calibrating (lookahead {LOOKAHEAD}) on {bench.calibration_samples} samples of {s}"
            )
            with smoothcache.calibrating(bench.model, lookahead=LOOKAHEAD) as recorder:
                bench.sample(bench.model, bench.steps, calibration=True, calibration_seed=s)
            return recorder.curves()

        curves = saved.curves(f"fitted-curves|{seed}|{LOOKAHEAD}", measure)
        fit_seconds[seed] = 0.0
        for budget in BUDGETS:
            made = []
            for method in ("forecast", "fitted"):
                started = time.process_time()
                try:
                    made.append(curves.schedule(compute_fraction=budget, method=method))
                except smoothcache.ScheduleError as exc:
                    log(f"  {method} at {budget:g}: {exc}")
                    break
                seconds = time.process_time() - started
                fit_seconds[seed] += seconds if method == "fitted" else -seconds
            families = [LAGRANGE, FITTED][: len(made)]
            if made and budget in HALF_BUDGETS:
                made += [low_precision(made[0], dtype) for dtype in HALF.values()]
                families += [f"{LAGRANGE}, {name} anchors" for name in HALF]
            if len(made) > 1 and budget in CLOSED_BUDGETS:
                made.append(_closed_loop(bench, saved, log, made, seed, budget))
                families.append(CLOSED)
                closed[seed, budget] = made[-1].metadata["closed_loop"]
            for family, schedule in zip(families, made):
                row = bench.cached(family, f"compute <= {budget:g}", schedule, budget=budget)
                row.calibration_seed = seed
                rows.append(row)
    return rows, fit_seconds, closed


def _closed_loop(
    bench: Bench, saved: Checkpoint, log: Log, made: list[Any], seed: int, budget: float
) -> Any:
    """The :data:`CLOSED_BASE` search's schedule fitted through the sampler (read back from the
    checkpoint when it was fitted before)."""
    base = made[0] if CLOSED_BASE == "forecast" else made[1]

    def fit() -> Any:
        seeds = range(seed * 100, seed * 100 + closedloop.ITERATIONS)
        log(f"  closed-loop fit at {budget:g}: {len(seeds)} batches from seed {seeds[0]}")
        return smoothcache.fit_closed_loop(bench.model, base, runner(bench), seeds=seeds)

    return saved.schedule(f"closed-loop|{CLOSED_BASE}|{seed}|{budget}", fit)


def main() -> None:
    """Read the quality page's rows, add the fitted and Lagrange rows and the low-budget peers,
    write the page."""
    parser = quality_speed.page_parser(__doc__.split("\n\n")[0])
    args, started = parser.parse_args(), time.perf_counter()
    bench, saved, rows, log = quality_speed.read_page(args, "-fitted")
    for row in rows[1:]:
        evaluate(row, rows[0].images, bench.checkpoint)
    if bench.checkpoint.read == 0:
        raise SystemExit("nothing was read back: run benchmarks.quality_speed with --checkpoint")
    ours, fit_seconds, closed = library_rows(bench, saved, log)
    low = fora_rows(bench, LOW) + diffusers_rows(bench, LOW)
    for row in ours + low:
        evaluate(row, rows[0].images, saved)
        log(f"  {row.family}, {row.setting}: {row.computed / bench.cells:.3f} of the compute")
    fewer = fewer_steps_rows(bench, rows[1:] + ours + low)
    for row in fewer:  # the page's own are in its checkpoint; the new ones join them there
        evaluate(row, rows[0].images, bench.checkpoint)
    everything = [rows[0], *fewer, *rows[1:], *low, *ours]
    boot = Bootstrap.draw(bench.samples, 2000, seed=0)
    errors = np.stack([row.errors for row in everything])
    scores = Scores(_table(everything, bench), boot.batch_psnr(errors))
    lines = _page(bench, scores, fit_seconds, args, time.perf_counter() - started)
    lines += _closed_page(bench, scores, closed)
    name = f"fitted_quality_{args.model}" + ("_test" if args.seeds == "test" else "")
    path = args.out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    log(f"wrote {path}")


def _page(
    bench: Bench, scores: Scores, fit_seconds: dict[int, float], args: Any, seconds: float
) -> list[str]:
    """Per budget and seed: Lagrange and fitted, their margins; then the low-budget peers."""
    table, reps = scores.table, scores.replicates
    found = _indices(table, lambda family: family in (LAGRANGE, FITTED))
    halves = _indices(table, lambda family: family.endswith(" anchors"))
    envelopes = {seed: PeerEnvelope(scores, seed) for seed in bench.seeds.calibration}

    def over(i: int, seed: int) -> str:
        return _over(envelopes[seed], table, i)

    def cell(i: int) -> str:
        return _cell(table, i)

    seeds = args.seeds
    out = [
        f"# Fitted forecasts on the {bench.loaded.title.lower()} ({seeds} seeds)",
        "",
        f"Written by `python -m benchmarks.fitted_quality --threads 1 --model {bench.model_name} "
        f"--seeds {seeds} --checkpoint .bench-checkpoints` (the quality page's rows read back from "
        f"its checkpoint) in {seconds / 60:.0f} minutes. Model: {bench.loaded.description}; "
        f"{bench.loaded.sampler} {bench.steps} steps, guidance {bench.guidance:g}; "
        f"{bench.samples} evaluation samples of seed {bench.seeds.evaluation}; CPU, float32, "
        f"batch {bench.samples}, torch {torch.__version__}.",
        "",
        f"Both searches read the same curves per calibration seed ({bench.calibration_samples} "
        f"samples, lookahead {LOOKAHEAD}, one sampler run). Cells: batch PSNR in dB (worst "
        "sample), compute fraction. Margins in dB with 90% bootstrap intervals over the "
        "evaluation samples; the envelope is every peer's (the quality page's and the low-budget "
        "peers below) at the row's compute, of the same calibration seed for methods that "
        "calibrate.",
        "",
        "| budget | seed | Lagrange | fitted | fitted - Lagrange | fitted over envelope "
        "| Lagrange over envelope |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget in BUDGETS:
        for seed in bench.seeds.calibration:
            lag = found.get((LAGRANGE, seed, round(budget, 3)))
            fit = found.get((FITTED, seed, round(budget, 3)))
            if lag is None or fit is None:
                out.append(f"| {budget:.0%} | {seed} | not reachable | | | | |")
                continue
            out.append(
                f"| {budget:.0%} | {seed} | {cell(lag)} | {cell(fit)} "
                f"| {_difference(table, reps, fit, lag)} | {over(fit, seed)} | {over(lag, seed)} |"
            )
    out += ["", "## Stored outputs in 16 bits", ""]
    out += [
        "The Lagrange rows again with every stored output kept in bfloat16 or float16 "
        "(`smoothcache.engine.low_precision`): half the stored bytes of these float32 models. "
        "Differences from the float32 row in dB with 90% intervals.",
        "",
        "| budget | seed | float32 | bfloat16 anchors | float16 anchors |",
        "|---|---|---|---|---|",
    ]
    for budget in HALF_BUDGETS:
        for seed in bench.seeds.calibration:
            lag = found.get((LAGRANGE, seed, round(budget, 3)))
            if lag is None:
                continue
            cells = [
                _difference(
                    table, reps, halves[f"{LAGRANGE}, {name} anchors", seed, round(budget, 3)], lag
                )
                for name in HALF
            ]
            out.append(f"| {budget:.0%} | {seed} | {cell(lag)} | {' | '.join(cells)} |")
    out += ["", "## Peers at 20% of the compute and below", ""]
    out += ["| method | setting | cal. seed | compute | dB (worst) |", "|---|---|---|---|---|"]
    peers = [
        r
        for r in table[1:]
        if not str(r["family"]).startswith(FAMILY) and r["computed"] <= 0.205 and r["psnr"]
    ]
    for r in sorted(peers, key=lambda r: -r["computed"]):
        seed = r["calibration_seed"] or ""
        out.append(
            f"| {r['family']} | {r['setting']} | {seed} | {r['computed']:.3f} "
            f"| {r['psnr']:.2f} ({r['worst_psnr']:.1f}) |"
        )
    out += ["", "## Cost of fitting", ""]
    out += [
        f"- calibration seed {seed}: {fit_seconds[seed]:.2f} s of CPU (the fitted searches minus "
        f"the Lagrange ones, {len(BUDGETS)} budgets); no sampler run besides the calibration's"
        for seed in bench.seeds.calibration
    ]
    return out


def _closed_page(
    bench: Bench, scores: Scores, closed: dict[tuple[int, float], dict[str, Any]]
) -> list[str]:
    """The closed-loop fitted rows against the Lagrange search's and the envelope."""
    table, reps = scores.table, scores.replicates
    found = _indices(table, lambda family: family in (LAGRANGE, CLOSED))
    out = ["", "## Closed-loop fitted forecasts", ""]
    out += [
        f"The {CLOSED_BASE} search's schedule with its weights fitted to the final output "
        f"through the sampler (`smoothcache.fit_closed_loop`: {closedloop.ITERATIONS} iterations, "
        f"one fresh batch of 16 samples each, seeds `calibration seed x 100 + i`, Adam step "
        f"{closedloop.LEARNING_RATE:g}). Cost: {2 * closedloop.ITERATIONS} sampler runs of 16 "
        "samples, half of them with a reverse pass. Margins in dB with 90% intervals.",
        "",
        "| budget | seed | Lagrange | closed-loop fitted | closed - Lagrange "
        "| closed over envelope | fit: first -> last batch (dB), wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget in CLOSED_BUDGETS:
        for seed in bench.seeds.calibration:
            lag = found.get((LAGRANGE, seed, round(budget, 3)))
            fit = found.get((CLOSED, seed, round(budget, 3)))
            if lag is None or fit is None:
                continue
            how = closed[seed, budget]
            out.append(
                f"| {budget:.0%} | {seed} | {_cell(table, lag)} | {_cell(table, fit)} "
                f"| {_difference(table, reps, fit, lag)} "
                f"| {_over(PeerEnvelope(scores, seed), table, fit)} "
                f"| {how['first_batch_snr_db']:.1f} -> {how['last_batch_snr_db']:.1f}, "
                f"{how['seconds']:.0f} |"
            )
    return out


def _indices(
    table: list[dict[str, Any]], keep: Callable[[str], bool]
) -> dict[tuple[Any, Any, float], int]:
    """Rows of the families ``keep`` accepts, by (family, calibration seed, budget)."""
    return {
        (r["family"], r["calibration_seed"], round(r["budget"], 3)): i
        for i, r in enumerate(table)
        if keep(str(r["family"]))
    }


def _difference(table: list[dict[str, Any]], reps: Any, a: int, b: int) -> str:
    """Row ``a``'s batch PSNR minus row ``b``'s, with its 90% interval."""
    low, high = interval(reps[a] - reps[b])
    return f"{table[a]['psnr'] - table[b]['psnr']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _over(envelope: PeerEnvelope, table: list[dict[str, Any]], i: int) -> str:
    """Row ``i``'s margin over the peers' envelope at its compute, with its interval."""
    line = envelope.line(table[i]["computed"], i, None)
    low, high = line["interval"]
    return f"{line['margin']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _cell(table: list[dict[str, Any]], i: int) -> str:
    return f"{table[i]['psnr']:.2f} ({table[i]['worst_psnr']:.1f}), {table[i]['computed']:.3f}"


if __name__ == "__main__":
    main()
