"""The quality page: its Markdown (the header, the table, the targets, the notes on the peers).

:func:`report` writes ``docs/quality_speed.md`` (or the second model's page) from the scored rows:
a header that says how the figures were measured (model, sampler, samples, device, latency,
every column), the table (:func:`markdown_table`), the library's forecast rows against the
peer envelope (:func:`targets_table`) and :data:`NOTES`, how each other library's method was
applied.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.bench import CALIBRATION_SEED, EVAL_SEED, HELD_OUT_SEED, Bench
from benchmarks.common.calibration import shown_arguments
from benchmarks.common.forecast_rows import CALIBRATION_SAMPLES as FORECAST_SAMPLES
from benchmarks.common.forecast_rows import HELD_OUT as FORECAST_HELD_OUT
from benchmarks.common.forecast_rows import LOOKAHEAD as FORECAST_LOOKAHEAD
from benchmarks.common.peers import CACHE_DIT_WARMUP
from benchmarks.common.scoring import SECOND_MODEL_FLOOR, TARGETS, Scores
from benchmarks.common.stats import frechet_distance
from benchmarks.common.timing import device_threads
from smoothcache.reference import digits_classifier

#: ``--clock``: the latency the page reports, and the sentence that says how it was measured.
CLOCKS = {
    "wall": "Measured as wall-clock time; other work on the machine adds noise.",
    "cpu": "Measured as the process's CPU time (`time.process_time`) of a single-threaded\n  "
    "run: on an idle core that is its latency. Other processes on a shared machine inflate it\n  "
    "much less than wall-clock time, but still (shared caches and cores): a row measured at\n  "
    "busy moments can read 10-20% slow.",
}


#: How each other library's method was applied (``WARMUP``: cache-dit's warm-up steps).
NOTES = """
## How the other libraries' methods were applied

`DiTTransformer2DModel` does not inherit diffusers' `CacheMixin`, so each diffusers method runs on
a subclass that adds it (`class DiTWithCacheMixin(CacheMixin, DiTTransformer2DModel)`) built from
the model's own config and holding the same weights (checked bit-identical to the plain model
without a cache), and is switched on with `model.enable_cache(config)`. `BasicTransformerBlock`
is in diffusers' transformer-block registry, so the block-level hooks work unchanged. Every
generation runs inside `model.cache_context("cond_uncond")` (one call per step carries both
halves of the guidance batch) and the hooks' state is reset after it, as diffusers' pipelines do.

- **first-block cache** (`FirstBlockCacheConfig(threshold)`): block 0 always runs; the other
  blocks are skipped, as a whole, when block 0's residual changed by less than the threshold.
- **TaylorSeer** (`TaylorSeerCacheConfig(cache_interval, max_order)`): its default module
  patterns (`^transformer_blocks.*attn`, full match) match nothing in a DiT, whose branches are
  `attn1` and `ff`, so `cache_identifiers=[r"transformer_blocks\\.\\d+\\.(attn1|ff)"]`, and
  `taylor_factors_dtype=torch.float32` (the default bfloat16 adds rounding of its own); otherwise
  its defaults (`disable_cache_before_step=3`). Skipped branches are *predicted* by a Taylor
  extrapolation of that order from the last computed outputs, not reused.
- **MagCache** (`MagCacheConfig`): its magnitude ratios are checkpoint-specific; they were
  measured with its own `calibrate=True` mode on the calibration samples (it prints them; the
  benchmark reads that output). Otherwise its defaults (`max_skip_steps=3`,
  `retention_ratio=0.2`). Skipping is per model call: all blocks or none.
- **pyramid attention broadcast** (`PyramidAttentionBroadcastConfig`): needs a
  `current_timestep_callback`; a forward pre-hook on the model records each call's timestep. It
  broadcasts self-attention (`attn1`) only, inside its timestep window (a DiT has no cross or
  temporal attention); the feed-forward branches always compute.
- **cache-dit DBCache** (`cache_dit.enable_cache`): on a copy of the model, with
  `BlockAdapter(transformer=copy, blocks=copy.transformer_blocks,
  forward_pattern=ForwardPattern.Pattern_3, patch_functor=DiTPatchFunctor())`, what cache-dit's
  own adapter for `DiTPipeline` uses, and `DBCacheConfig(Fn_compute_blocks=1,
  Bn_compute_blocks=0, max_warmup_steps=WARMUP, enable_separate_cfg=False,
  residual_diff_threshold=...)`: the first block always computes, and the other blocks are
  skipped as a whole, their cached residual added, when its residual changed by less than the
  threshold; one doubled guidance batch per call. `+ TaylorSeer` adds
  `TaylorSeerCalibratorConfig(taylorseer_order=1)`, which extrapolates the skipped blocks'
  residual instead. `cache_dit.refresh_context(copy)` runs before every generation (cache-dit
  resets its state only on the next generation's first call, one call late). The copy at
  threshold 0 reproduces the plain model bit for bit; the branch counter sits on the copy.
- Not benchmarked: FasterCache, SeaCache and TextKVCache from diffusers, and cache-dit's other
  calibrators and its DBPrune.
"""


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def markdown_table(table: list[dict[str, Any]], clock: str) -> list[str]:
    """The rows as a Markdown table; with CPU-time latency, the wall-clock speedup beside it."""
    wall = clock == "cpu"
    lines = [
        "| method | setting | branch-steps computed | latency (s) | speedup | "
        + ("wall-clock speedup | " if wall else "")
        + "batch PSNR (dB) | 90% interval | median sample PSNR | worst sample PSNR | rel L2 | "
        "accuracy | FD |",
        "|---|---|---:|---:|---:|"
        + ("---:|" if wall else "")
        + "---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if r["psnr"] is None:
            quality, spread, median, worst = "(reference)", "", "", ""
        else:
            quality, spread = f"{r['psnr']:.2f}", f"{_db(r['low'])} to {_db(r['high'])}"
            median, worst = _db(r["median_psnr"]), _db(r["worst_psnr"])
        differs = abs(r["timing_computed"] - r["computed"]) > 0.0005
        mark = f" († {r['timing_computed']:.1%})" if differs else ""
        extra = f"{r['wall_speedup']:.2f}x | " if wall else ""
        lines.append(
            f"| {r['family']} | {r['setting']} | {r['computed']:.1%}{mark} | {r['latency']:.2f} | "
            f"{r['speedup']:.2f}x | {extra}{quality} | {spread} | {median} | "
            f"{worst} | {r['rel_l2']:.4f} | {r['accuracy']:.1%} | {r['fd']:.2f} |"
        )
    return lines


def _peer_name(entry: dict[str, Any]) -> str:
    return f"{entry['family']} {entry['setting']} ({entry['computed']:.1%}, {entry['psnr']:.2f})"


def targets_table(lines: list[dict[str, Any]], second: bool) -> list[str]:
    """The forecast rows (and targets without one) against the peer envelope, as Markdown.

    ``second``: the second model, which adds a column for its floor of the lower bound.
    """
    floor = f" | lower bound > {SECOND_MODEL_FLOOR:g} dB" if second else ""
    out = [
        "| target | forecast row | computed | batch PSNR (dB) | peer envelope (dB, 90% interval) "
        "| envelope from | margin (dB) | margin 90% interval | lower bound > 0" + floor + " |",
        "|---|---|---:|---:|---|---|---:|---|---" + ("|---" if second else "") + "|",
    ]
    for line in lines:
        target = "" if line["target"] is None else f"{line['target']:.0%}"
        low, high = line["envelope_interval"]
        envelope = f"{line['envelope']:.2f} ({low:.2f} to {high:.2f})"
        spanned = " to ".join(_peer_name(p) for p in line["spanned"])
        if line["clipped"]:
            spanned += " (left of every peer: read at the leftmost)"
        row = line["row"]
        if row is None:
            cells = ["(none)", f"{line['computed']:.1%}", "", envelope, spanned, "", ""]
            checks = ["", ""]
        else:
            m_low, m_high = line["interval"]
            cells = [
                f"{row['family']}, {row['setting']}",
                f"{row['computed']:.1%}",
                f"{row['psnr']:.2f}",
                envelope,
                spanned,
                f"{line['margin']:+.2f}",
                f"{m_low:+.2f} to {m_high:+.2f}",
            ]
            checks = [
                "**yes**" if m_low > 0 else "no",
                "**yes**" if m_low > SECOND_MODEL_FLOOR else "no",
            ]
        if not second:
            checks = checks[:1]
        if line["target"] is None:
            checks = ["" for _ in checks]
        out.append("| " + " | ".join([target, *cells, *checks]) + " |")
    return out


@dataclass(frozen=True)
class RunInfo:
    """What the page's header says about the run besides the rows."""

    minutes: float
    loads: tuple[float, float]
    forecast: bool
    cache_dit: str | None
    draws: int


def report(
    args: argparse.Namespace,
    bench: Bench,
    scores: Scores,
    target_lines: list[dict[str, Any]],
    info: RunInfo,
    path: Path,
) -> list[str]:
    """Write the Markdown page to ``path``; return the table's lines."""
    lines = markdown_table(scores.table, args.clock)
    section = _targets_section(target_lines, bench.model_name == "second", info.draws, path)
    notes = NOTES.replace("WARMUP", str(CACHE_DIT_WARMUP))
    path.write_text(_header(args, bench, info) + "\n".join(lines) + "\n" + section + notes)
    return lines


def _header(args: argparse.Namespace, bench: Bench, info: RunInfo) -> str:
    """The title, the command that regenerates the page, and how every figure was measured."""
    import diffusers

    classifier = digits_classifier()
    real = classifier.real_images
    real_fd = frechet_distance(
        classifier.features(real[: len(real) // 2]), classifier.features(real[len(real) // 2 :])
    )
    model = bench.model
    params = sum(p.numel() for p in model.parameters())
    blocks = len(model.transformer_blocks)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    scheduler = bench.loaded.scheduler(bench.steps).config
    sampler = (
        f"`{scheduler.timestep_spacing}` spacing, `{scheduler.beta_schedule}` betas,"
        f" `{scheduler.prediction_type}` prediction"
    )
    minutes = max(round(info.minutes), 1)
    command = " ".join(["python -m benchmarks.quality_speed", *shown_arguments(sys.argv[1:])])
    cells = bench.counter.branches * bench.steps
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}, " + (
        f"cache-dit {info.cache_dit}" if info.cache_dit else "cache-dit not installed (no rows)"
    )
    forecast_note = (
        f"The library's forecast calibrated (error curves with lookahead {FORECAST_LOOKAHEAD}, "
        f"orders 0-3)\n  on {max(FORECAST_SAMPLES, bench.calibration_samples)} samples of the "
        f"same seed, the first {bench.calibration_samples} of them those of the other methods; "
        "one sampler run; its sensitivity on the same samples; each forecast "
        f"row is the schedule that\n  `smoothcache.select_schedule` chose among "
        f"`curves.forecast_candidates(compute_fraction=f)` on {FORECAST_HELD_OUT} held-out "
        f"samples (seed {HELD_OUT_SEED})."
    )
    calibrated = (
        "The paper's rule and the schedule search (error curves, sensitivity) and MagCache\n"
        "  calibrated"
        if info.forecast
        else "No forecast rows (`--no-forecast`). The paper's rule and the schedule search (error\n"
        "  curves, sensitivity) and MagCache calibrated"
    )
    runs = f"{args.repeats} run{'s' if args.repeats != 1 else ''}"
    return f"""# Quality against speed on the {bench.loaded.title.lower()}

The shape of the SmoothCache paper's Table 1, reproduced on a {blocks}-block digits DiT, with the
library's forecast schedules measured against the best of every other method. Regenerate the page
and the plot (about {minutes} minute{"s" if minutes > 1 else ""} here) with:

<!-- not run: about {minutes} minute{"s" if minutes > 1 else ""} of benchmarking -->
```bash
{command}
```

- **Model**: {bench.loaded.description}, {params:,} parameters, {blocks} blocks with an `attn1`
  and an `ff` branch each, {dtype}.
- **Sampler**: DDIM {bench.steps} steps ({sampler}), guidance {bench.guidance:g} as one
  doubled batch; every row, fewer steps too, samples with the model's own scheduler.
- **Samples**: quality on the same {bench.samples} evaluation samples (classes in turn, seed
  {EVAL_SEED}) for every row, each row in one run of the whole batch ({2 * bench.samples} rows
  with guidance in every model call); latency on the first {bench.timing_samples} of them.
  {calibrated} on {bench.calibration_samples} other samples (seed {CALIBRATION_SEED}).
  {forecast_note if info.forecast else ""}
- **Device**: {device_threads(bench.device)}; {versions}.
- **Latency**: median of {runs} of the timing batch ({bench.timing_samples} samples),
  every row once per round (the order reversed every other round), all in one process; speedup
  against the uncached median. {CLOCKS[args.clock]} Load average at the start and the end:
  {info.loads[0]:.1f} and {info.loads[1]:.1f}.
- **Branch-steps computed**: attention and feed-forward branch calls on the evaluation batch,
  counted the same way for every method (on the copy a library patched, where it patches one),
  out of {cells} ({bench.counter.branches} branches x {bench.steps} steps). † marks a method that
  decides from the batch's own activations, with the different share it computed on the timing
  batch.
- **Batch PSNR**: of the mean squared error over all evaluation samples against the uncached
  samples of the same seeds, pixels in [-1, 1]: one broken sample counts. **90% interval**: 5th to
  95th percentile of the batch PSNR over {info.draws:,} bootstrap resamples of the evaluation
  samples (seed 0, the same resamples for every row). **Median / worst sample PSNR**: of the
  per-sample PSNRs. **rel L2**: of the whole batch.
- **Accuracy**: a scikit-learn MLP trained here on 75% of the real digits (test accuracy on the
  other 25%: {classifier.test_accuracy:.1%}). **FD**: Fréchet distance between its 64
  hidden-layer features of the samples and of all 1,797 real digits (the two halves of the real
  digits are {real_fd:.2f} apart).

"""


def _targets_section(
    target_lines: list[dict[str, Any]], second: bool, draws: int, path: Path
) -> str:
    """The plot, and the library's forecast rows against the peer envelope, with the method."""
    floor = f", and for this model whether it is above {SECOND_MODEL_FLOOR:g} dB" if second else ""
    table = "\n".join(targets_table(target_lines, second))
    return f"""
![batch PSNR against speedup and against compute]({path.with_suffix(".png").name})

## Targets: the library's forecast against its peers

The peers are every row but the library's forecast rows and no cache: fewer steps, FORA, the
paper's rule, the schedule search, and every diffusers and cache-dit row. Their **envelope** is
the upper envelope of their points (branch-steps computed, batch PSNR) with straight lines
between points, where a peer also counts at any larger compute (what computes less can be used
where more is allowed): at the forecast row's compute, the best of every peer computing at most
as much and of every segment between two peers on either side of it (the least concave,
non-decreasing curve above every peer; the dashed line in the plot). The **margin** is the
forecast row's batch PSNR minus the envelope there; its interval is the 5th to 95th percentile
over the same {draws:,} bootstrap resamples, every row's batch PSNR and the envelope
recomputed in each.
The targets are the rows at {" and ".join(f"{t:.0%}" for t in TARGETS)} of the compute: whether
the margin's lower bound is above 0{floor}.

{table}
"""
