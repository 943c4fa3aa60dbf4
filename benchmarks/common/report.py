"""The quality page: its Markdown (the header, the tables, the targets, the notes on the peers).

:func:`report` writes ``docs/quality_speed*.md`` from the scored rows: a header that says how the
figures were measured (model, sampler, seeds, samples, device, latency, every column), the table,
the library's forecast rows against the peer envelope per calibration seed, the spread over
seeds, the library against each peer's held-out choice (:mod:`.tables`), and :data:`NOTES`, how
each other library's method was applied.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.bench import Bench
from benchmarks.common.calibration import shown_arguments
from benchmarks.common.forecast_rows import LOOKAHEAD
from benchmarks.common.scoring import FLOOR, TARGETS, Scores, choice_margins, over_seeds
from benchmarks.common.stats import frechet_distance
from benchmarks.common.tables import choices_table, markdown_table, seeds_table, targets_table
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

#: How each other library's method was applied.
NOTES = """
## How the other libraries' methods were applied

Every method that calibrates calibrated on the same samples as the library's forecast (the
calibration batch of each calibration seed), and every method's setting at each target was
chosen on the same held-out samples by the library's criterion, the lowest held-out batch mean
squared error among the settings whose branch-steps fit the budget (the `chosen for` column).

- Digits DiTs: `DiTTransformer2DModel` does not inherit diffusers' `CacheMixin`, so each diffusers
  method runs on a subclass that adds it, built from the model's own config and holding the same
  weights (checked bit-identical to the plain model without a cache); every generation runs
  inside `model.cache_context("cond_uncond")` (one call per step carries both halves of the
  guidance batch). Flow model: `FluxTransformer2DModel` has `CacheMixin`; `FluxPipeline` enters
  `cache_context("cond")` and `("uncond")` around its two calls per step itself. The hooks'
  state is reset after every generation, as diffusers' pipelines do.
- **first-block cache** (`FirstBlockCacheConfig(threshold)`): block 0 always runs; the other
  blocks are skipped, as a whole, when block 0's residual changed by less than the threshold.
- **TaylorSeer** (`TaylorSeerCacheConfig(cache_interval, max_order, disable_cache_before_step)`):
  `cache_identifiers` name the branches the library caches (its default patterns match nothing
  in a digits DiT, whose branches are `attn1` and `ff`; in the flow model the double-stream
  `attn`, `ff`, `ff_context` and whole single-stream blocks), `taylor_factors_dtype=torch.float32`
  (the default bfloat16 adds rounding of its own); `disable_cache_before_step` swept (3, its
  default, in the table; 1 and 6 among the held-out candidates).
- **MagCache** (`MagCacheConfig`): its magnitude ratios are checkpoint-specific; they were
  measured with its own `calibrate=True` mode on each calibration seed's samples. Otherwise its
  defaults (`max_skip_steps=3`, `retention_ratio=0.2`).
- **pyramid attention broadcast** (`PyramidAttentionBroadcastConfig`): a forward pre-hook on the
  model records each call's timestep for its `current_timestep_callback` (in 0-1000); it
  broadcasts self-attention only, inside its timestep window.
- **cache-dit DBCache** (`cache_dit.enable_cache`, `benchmarks/common/cache_dit_rows.py` says
  how it is attached to each model): its defaults (`Fn_compute_blocks=8`, `Bn_compute_blocks=0`,
  8 warm-up steps, threshold 0.08; the front blocks capped at the model's blocks minus one) and
  a sweep of front and back blocks, warm-up and threshold, without and with its TaylorSeer
  calibrator (orders 1 and 2). The copy at threshold 0 reproduces the plain model bit for bit;
  the branch counter sits on the copy.
- Not benchmarked: FasterCache, SeaCache and TextKVCache from diffusers, and cache-dit's other
  calibrators and its DBPrune.
"""


@dataclass(frozen=True)
class RunInfo:
    """What the page's header says about the run besides the rows."""

    minutes: float
    loads: tuple[float, float]
    forecast: bool
    cache_dit: str | None
    draws: int
    #: measurements read back from an earlier sitting (``--checkpoint``)
    resumed: int = 0


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
    floor = bench.model_name in ("second", "flow")
    section = _targets_section(scores, target_lines, floor, info.draws, path)
    path.write_text(_header(args, bench, info) + "\n".join(lines) + "\n" + section + NOTES)
    return lines


def _model_line(bench: Bench) -> str:
    """The model in words: parameters, blocks, branches, dtype."""
    model = bench.model
    params = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if bench.model_name == "flow":
        double, single = len(model.transformer_blocks), len(model.single_transformer_blocks)
        return (
            f"{bench.loaded.description}, {params:,} parameters, {double} double-stream blocks "
            f"(`attn`, `ff`, `ff_context` branches) and {single} single-stream blocks (one "
            f"`single` group each), {dtype}"
        )
    blocks = len(model.transformer_blocks)
    return (
        f"{bench.loaded.description}, {params:,} parameters, {blocks} blocks with an `attn1` and "
        f"an `ff` branch each, {dtype}"
    )


def _sampler_line(bench: Bench) -> str:
    """The sampler in words."""
    if bench.loaded.scheduler is None:
        return (
            f"`FluxPipeline` with `FlowMatchEulerDiscreteScheduler`, {bench.steps} steps, "
            "FLUX.1-dev's resolution-dependent shift (e^1.15 at this model's full resolution), "
            f"true CFG {bench.guidance:g} (a conditional and an unconditional call per step)"
        )
    scheduler = bench.loaded.scheduler(bench.steps).config
    return (
        f"DDIM {bench.steps} steps (`{scheduler.timestep_spacing}` spacing, "
        f"`{scheduler.beta_schedule}` betas, `{scheduler.prediction_type}` prediction), guidance "
        f"{bench.guidance:g} as one doubled batch"
    )


def _header(args: argparse.Namespace, bench: Bench, info: RunInfo) -> str:
    """The title, the command that regenerates the page, and how every figure was measured."""
    import diffusers

    classifier = digits_classifier()
    real = classifier.real_images
    real_fd = frechet_distance(
        classifier.features(real[: len(real) // 2]), classifier.features(real[len(real) // 2 :])
    )
    seeds = bench.seeds
    minutes = max(round(info.minutes), 1)
    command = " ".join(["python -m benchmarks.quality_speed", *shown_arguments(sys.argv[1:])])
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}, " + (
        f"cache-dit {info.cache_dit}" if info.cache_dit else "cache-dit not installed (no rows)"
    )
    cal_seeds = ", ".join(str(s) for s in seeds.calibration)
    forecast_note = (
        "Each library forecast row is the schedule that `smoothcache.select_schedule` chose among\n"
        "  `curves.forecast_candidates(compute_fraction=f)` on the held-out samples."
        if info.forecast
        else "No forecast rows (`--no-forecast`)."
    )
    runs = f"{args.repeats} run{'s' if args.repeats != 1 else ''}"
    if info.resumed:
        runs += f" (resumed: {info.resumed} measurements come from earlier sittings of the run)"
    calls = " x 2 calls" if bench.cells != bench.counter.branches * bench.steps else ""
    split = (
        "**test** seeds, used for nothing but regenerating this table"
        if seeds.name == "test"
        else "**development** seeds (every choice of the project was made on them: these are "
        "development results, not a test)"
    )
    return f"""# Quality against speed on the {bench.loaded.title.lower()} ({seeds.name} seeds)

The shape of the SmoothCache paper's Table 1 on a small trained model, with the library's
forecast schedules measured against the best of every other method. Seeds: {split}; the split
and the protocol are in [evaluation.md](evaluation.md). Regenerate the page and the plot (about
{minutes} minute{"s" if minutes > 1 else ""} here) with:

<!-- not run: about {minutes} minute{"s" if minutes > 1 else ""} of benchmarking -->
```bash
{command}
```

- **Model**: {_model_line(bench)}.
- **Sampler**: {_sampler_line(bench)}; every row, fewer steps too, samples with it.
- **Samples**: quality on the same {bench.samples} evaluation samples (classes in turn, seed
  {seeds.evaluation}) for every row, each row in one run of the whole batch; latency on the
  first {bench.timing_samples} of them. Calibration: {bench.calibration_samples} samples per
  calibration seed ({cal_seeds}), the same for the library and every method that calibrates
  (error curves with lookahead {LOOKAHEAD}, orders 0-3, and the sensitivity, shared by the
  library's forecast, the paper's rule and the schedule search; MagCache's ratios); every
  calibrated row is repeated per seed (`cal. seed`). Settings chosen on {bench.held_out_samples}
  held-out samples (seed {seeds.held_out}). {forecast_note}
- **Device**: {device_threads(bench.device)}; {versions}.
- **Latency**: median of {runs} of the timing batch ({bench.timing_samples} samples),
  every row once per round (the order reversed every other round), all in one process; speedup
  against the uncached median. {CLOCKS[args.clock]} Load average at the start and the end:
  {info.loads[0]:.1f} and {info.loads[1]:.1f}.
- **Branch-steps computed**: branch calls on the evaluation batch, counted the same way for
  every method (on the copy a library patched, where it patches one), out of {bench.cells}
  ({bench.counter.branches} branches x {bench.steps} steps{calls}). † marks a method that
  decides from the batch's own activations, with the different share it computed on the timing
  batch.
- **Batch PSNR**: of the mean squared error over all evaluation samples against the uncached
  samples of the same seeds, pixels in [-1, 1]: one broken sample counts. It measures
  *fidelity to the uncached {bench.steps}-step output*: for the fewer-steps rows that is not
  quality (a different, valid trajectory scores low). **90% interval**: 5th to 95th percentile
  of the batch PSNR over {info.draws:,} bootstrap resamples of the evaluation samples (the same
  resamples for every row). **Median / worst sample PSNR**: of the per-sample PSNRs. **rel
  L2**: of the whole batch.
- **Accuracy**: a scikit-learn MLP trained here on 75% of the real digits (test accuracy on the
  other 25%: {classifier.test_accuracy:.1%}). **FD**: Fréchet distance between its 64
  hidden-layer features of the samples and of all 1,797 real digits (the two halves of the real
  digits are {real_fd:.2f} apart). Both saturate on these models: a cached sample is still the
  same digit. **C2ST**: a classifier two-sample test, the accuracy with which a logistic
  regression trained here (5 folds over the sample pairs) tells the row's samples from the
  uncached ones, on the pixels and the digits classifier's features: 50% when they cannot be told
  apart (about ±1.1% is chance at 1000 samples). It is trained on exactly the difference between
  the two sets, so its features discriminate whatever a method changes, class or not.

"""


def _targets_section(
    scores: Scores, target_lines: list[dict[str, Any]], floor: bool, draws: int, path: Path
) -> str:
    """The plot, the forecast rows against the peer envelope (per calibration seed and over
    seeds), and against each peer's held-out choice."""
    bound = f", and whether it is above {FLOOR:g} dB" if floor else ""
    table = "\n".join(targets_table(target_lines, floor))
    spread = "\n".join(seeds_table(over_seeds(target_lines), floor))
    choices = "\n".join(choices_table(choice_margins(scores)))
    return f"""
![batch PSNR against speedup and against compute]({path.with_suffix(".png").name})

## Targets: the library's forecast against its peers

The peers are every row but the library's forecast rows and no cache: fewer steps, FORA, the
paper's rule, the schedule search, and every diffusers and cache-dit row; of the methods that
calibrate, the rows of the forecast row's own calibration seed. Their **envelope** is the upper
envelope of their points (branch-steps computed, batch PSNR) with straight lines between points,
where a peer also counts at any larger compute: at the forecast row's compute, the best of every
peer computing at most as much and of every segment between two peers on either side of it (the
dashed line in the plot). It is the peers' best case: a choice among their whole sweep made on
the evaluation samples themselves. The **margin** is the forecast row's batch PSNR minus the
envelope there; its interval is the 5th to 95th percentile over the same {draws:,} bootstrap
resamples, every row's batch PSNR and the envelope recomputed in each. The targets are the rows
at {" and ".join(f"{t:.0%}" for t in TARGETS)} of the compute: whether the margin's lower bound
is above 0{bound}.

{table}

### Over calibration seeds

The margin at every calibration seed and the lowest lower bound of their intervals: the bound
over evaluation samples *and* calibration seeds.

{spread}

### Against each peer's held-out choice

What a user of each method who tuned it on the held-out samples would run, against the
library's forecast row of the same target and calibration seed (margin of batch PSNR, 90%
bootstrap interval over evaluation samples).

{choices}
"""
