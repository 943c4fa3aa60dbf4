"""Quality against speed of caching methods on a digits DiT (SmoothCache Table 1), with targets.

One process, one model (``--model reference``: ``smoothcache.reference``; ``--model second``: the
model of ``benchmarks/second_model/model.py``), one sampler (DDIM, 50 steps, guidance 1.5 as one
doubled batch) and the same evaluation samples for every row:

- no cache at 50 steps (the reference every error is measured against), and DDIM at ``k`` steps
  for ``k = round(50 x compute)`` of each caching row ("just use fewer steps");
- FORA, every 2nd to 5th step (``Schedule.uniform``);
- SmoothCache's rule at several alphas and compute budgets, per kind and per block, and this
  library's schedule search (``method="sensitivity"``) at 50%, 35% and 25% of the branch-steps,
  calibrated here on a separate set of samples;
- the library's forecast schedules, chosen on held-out samples (``benchmarks/forecast_rows.py``;
  ``--no-forecast`` leaves them out);
- the caching methods built into diffusers, applied to the same weights: first-block cache,
  TaylorSeer (orders 1 and 2, intervals 2 to 8), MagCache (its ratios calibrated here with its
  own calibration mode) and pyramid attention broadcast;
- cache-dit's DBCache, with and without its TaylorSeer calibrator (``cache_dit_rows.py``; left
  out when cache-dit is not installed).

Quality comes from one run of every row on ``--samples`` evaluation samples: the batch PSNR
against the uncached samples (of the mean squared error over all samples), its 90% bootstrap
interval, the median and the worst per-sample PSNR, relative L2, the accuracy of a digits
classifier and a Fréchet distance of its features. Latency comes from the first
``--timing-samples`` of them: the median of ``--repeats`` runs, rows interleaved. Every library
forecast row is compared with the upper envelope of all other methods' rows (its peers) at its
compute, with a bootstrap interval of the margin (``quality_stats.py``). Writes
``docs/quality_speed.md`` and ``.png`` (``docs/quality_speed_second.*`` for the second model)::

    python benchmarks/quality_speed.py --threads 1                   # the page in the docs
    python benchmarks/quality_speed.py --threads 1 --model second    # the second model's page
    python benchmarks/quality_speed.py --quick --no-forecast         # a small run, to /tmp
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cache_dit_rows import CALIBRATED_FAMILY, WARMUP_STEPS, cache_dit_rows
from cache_dit_rows import FAMILY as CACHE_DIT_FAMILY
from cache_dit_rows import version as cache_dit_version
from forecast_rows import CALIBRATION_SAMPLES as FORECAST_SAMPLES
from forecast_rows import FAMILY as FORECAST_FAMILY
from forecast_rows import HELD_OUT as FORECAST_HELD_OUT
from forecast_rows import LOOKAHEAD as FORECAST_LOOKAHEAD
from quality_bench import CALIBRATION_SEED, EVAL_SEED, HELD_OUT_SEED, MODELS, Bench, Row
from quality_stats import Bootstrap, interval, psnr_db, upper_envelope
from schedule_search import (  # benchmarks/ is on sys.path as the script's folder
    add_curves_option,
    calibrate,
    shown_arguments,
)

from smoothcache import Schedule
from smoothcache.reference import digits_classifier, relative_l2

KINDS = ("attn1", "ff")
TARGETS = (0.3, 0.2)  # compute fractions at which the forecast must beat its peers
SECOND_MODEL_FLOOR = -0.3  # dB: the second model's target for the margin's lower bound
FAMILIES = {  # family: (marker, colour) in the plot
    "fewer steps": ("o", "0.45"),
    "FORA": ("s", "tab:orange"),
    "SmoothCache (per kind)": ("*", "tab:blue"),
    "SmoothCache (per block)": ("P", "tab:cyan"),
    "schedule search": ("h", "tab:olive"),
    FORECAST_FAMILY: ("*", "black"),
    "first-block cache": ("^", "tab:green"),
    "TaylorSeer (order 1)": ("D", "tab:purple"),
    "TaylorSeer (order 2)": ("d", "tab:pink"),
    "MagCache": ("v", "tab:red"),
    "pyramid attention broadcast": ("X", "tab:brown"),
    CACHE_DIT_FAMILY: ("<", "tab:gray"),
    CALIBRATED_FAMILY: (">", "darkslateblue"),
}
SPARE_MARKERS = ("p", "8", "H", "1", "2", "3", "4")

CLOCKS = {
    "wall": "Measured as wall-clock time; other work on the machine adds noise.",
    "cpu": "Measured as the process's CPU time (`time.process_time`) of a single-threaded\n  "
    "run: on an idle core that is its latency. Other processes on a shared machine inflate it\n  "
    "much less than wall-clock time, but still (shared caches and cores): a row measured at\n  "
    "busy moments can read 10-20% slow.",
}


@dataclass(frozen=True)
class Settings:
    """Which settings of each method get a row."""

    fora: tuple[int, ...]
    alphas: tuple[float, ...]
    paper_budgets: tuple[float, ...]
    per_block: tuple[bool, ...]
    search_budgets: tuple[float, ...]
    first_block: tuple[float, ...]
    taylor_orders: tuple[int, ...]
    taylor_intervals: tuple[int, ...]
    magcache: tuple[float, ...]
    pab: tuple[tuple[int, tuple[int, int]], ...]
    cache_dit: tuple[float, ...]
    cache_dit_taylor: tuple[float, ...]


FULL = Settings(
    fora=(2, 3, 4, 5, 6),
    alphas=(0.05, 0.08, 0.2),
    paper_budgets=(0.5, 0.35),
    per_block=(False, True),
    search_budgets=(0.5, 0.35, 0.25),
    first_block=(0.05, 0.1, 0.2),
    taylor_orders=(1, 2),
    taylor_intervals=(2, 3, 4, 5, 6, 7, 8),  # 7 and 8: peers at 20% and below
    magcache=(0.02, 0.12),
    pab=((2, (100, 800)), (3, (0, 1000))),
    cache_dit=(0.1, 0.2, 0.4),
    cache_dit_taylor=(0.1, 0.2, 0.4),
)
QUICK = Settings(
    fora=(2, 4),
    alphas=(0.08,),
    paper_budgets=(0.35,),
    per_block=(False,),
    search_budgets=(0.35,),
    first_block=(0.1,),
    taylor_orders=(1, 2),
    taylor_intervals=(3,),
    magcache=(0.12,),
    pab=(),
    cache_dit=(0.2,),
    cache_dit_taylor=(0.2,),
)

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


class Log:
    """Progress lines with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        """Print ``text`` after the elapsed seconds."""
        print(f"[{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)


def smoothcache_rows(
    bench: Bench, settings: Settings, log: Callable[[str], None], curves_path: Path | None
) -> list[Row]:
    """FORA, and the paper's rule and the schedule search from one calibration.

    The calibration is ``schedule_search.calibrate`` (lookahead 3, sensitivity per kind);
    ``curves_path`` may be the file that ``benchmarks/schedule_search.py --curves`` wrote from
    the same calibration samples.
    """
    rows = [
        bench.cached("FORA", f"every {every}", Schedule.uniform(bench.steps, every, KINDS))
        for every in settings.fora
    ]
    curves = calibrate(
        bench.model,
        lambda: bench.sample(bench.model, bench.steps, calibration=True),
        curves_path,
        False,
        log,
    )
    for alpha in settings.alphas:
        schedule = curves.schedule(alpha=alpha)
        rows.append(bench.cached("SmoothCache (per kind)", f"alpha={alpha:g}", schedule))
    for per_block in settings.per_block:
        family = f"SmoothCache (per {'block' if per_block else 'kind'})"
        for budget in settings.paper_budgets:
            schedule = curves.schedule(compute_fraction=budget, per_block=per_block)
            setting = f"compute <= {budget:g} (alpha={schedule.metadata['alpha']:.3f})"
            rows.append(bench.cached(family, setting, schedule, budget=budget))
    for budget in settings.search_budgets:
        schedule = curves.schedule(compute_fraction=budget, method="sensitivity")
        setting = f"sensitivity, compute <= {budget:g}"
        rows.append(bench.cached("schedule search", setting, schedule, budget=budget))
    return rows


def diffusers_rows(bench: Bench, settings: Settings, log: Callable[[str], None]) -> list[Row]:
    """First-block cache, TaylorSeer, MagCache and PAB at ``settings``."""
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    bench.check_cache_model()
    rows = []
    for threshold in settings.first_block:
        config = FirstBlockCacheConfig(threshold=threshold)
        rows.append(
            bench.diffusers("first-block cache", f"threshold {threshold:g}", lambda _m, c=config: c)
        )
    for order in settings.taylor_orders:
        for every in settings.taylor_intervals:
            config = TaylorSeerCacheConfig(
                cache_interval=every,
                max_order=order,
                taylor_factors_dtype=torch.float32,
                cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|ff)"],
            )
            family = f"TaylorSeer (order {order})"
            rows.append(bench.diffusers(family, f"interval {every}", lambda _m, c=config: c))

    if settings.magcache:
        log("calibrating MagCache with its own calibrate=True mode on the calibration samples")
        probe = bench.cache_model()
        probe.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=bench.steps))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), probe.cache_context("cond_uncond"):
            bench.sample(probe, bench.steps, calibration=True)
        ratios = ast.literal_eval(printed.getvalue().strip().splitlines()[-1])
    for threshold in settings.magcache:
        config = MagCacheConfig(
            threshold=threshold, num_inference_steps=bench.steps, mag_ratios=ratios
        )
        rows.append(bench.diffusers("MagCache", f"threshold {threshold:g}", lambda _m, c=config: c))

    def pab(skip: int, window: tuple[int, int]) -> Callable[[torch.nn.Module], Any]:
        def make(copy: torch.nn.Module) -> Any:
            now = [0]

            def record(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
                now[0] = int(kwargs["timestep"][0])

            copy.register_forward_pre_hook(record, with_kwargs=True)
            return PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=skip,
                spatial_attention_timestep_skip_range=window,
                current_timestep_callback=lambda: now[0],
            )

        return make

    for skip, window in settings.pab:
        setting = f"every {skip}, {window[0]} < t < {window[1]}"
        rows.append(bench.diffusers("pyramid attention broadcast", setting, pab(skip, window)))
    return rows


# -- measuring -----------------------------------------------------------------------------------


def evaluate(row: Row, reference: torch.Tensor | None) -> None:
    """Sample the evaluation batch once: samples, per-sample errors and branch count."""
    row.counter.calls = 0
    start = time.process_time()
    images = row.run(False).detach().cpu()
    row.quality_seconds = time.process_time() - start
    row.computed = row.counter.calls
    row.images = images
    base = images if reference is None else reference
    row.errors = ((images.double() - base.double()) ** 2).flatten(1).mean(1).numpy()


def time_once(row: Row, device: torch.device) -> None:
    """Time one run of the timing batch; the first also keeps its branch count."""
    row.counter.calls = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    row.run(True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row.times.append(time.perf_counter() - start)
    row.cpu_times.append(time.process_time() - cpu_start)
    if row.timing_computed is None:
        row.timing_computed = row.counter.calls
    elif row.counter.calls != row.timing_computed:
        raise SystemExit(f"{row.family}, {row.setting}: the branch count changed between runs")


# -- scoring -------------------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make the covariances singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # near-singular product: regularise, as pytorch-fid does
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    trace = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root.real)
    return float(((mu_a - mu_b) ** 2).sum() + trace)


@dataclass
class Scores:
    """The table's numbers and, for the envelope, every row's batch PSNR in every replicate."""

    table: list[dict[str, Any]]
    replicates: np.ndarray  # (rows, replicates) batch PSNR; row 0 is the reference


def score(rows: list[Row], bench: Bench, clock: str, boot: Bootstrap) -> Scores:
    """Compute share, latency, speedup and quality of every row; ``rows[0]`` is the reference.

    ``clock`` picks the latency: ``wall`` time, or the process's ``cpu`` time.
    """

    def latency_of(row: Row) -> float:
        return statistics.median(row.cpu_times if clock == "cpu" else row.times)

    classifier = digits_classifier()
    digits = rows[0].images is not None and rows[0].images[0].numel() == 64
    real = classifier.features(classifier.real_images) if digits else None
    cells = bench.counter.branches * bench.steps
    reference, base = rows[0].images, latency_of(rows[0])
    assert reference is not None
    errors = np.stack([row.errors for row in rows])
    replicates = boot.batch_psnr(errors)
    table = []
    for index, row in enumerate(rows):
        assert row.images is not None and row.errors is not None
        latency = latency_of(row)
        is_reference = index == 0
        per_sample = psnr_db(row.errors)
        low, high = interval(replicates[index]) if not is_reference else (math.inf, math.inf)
        table.append(
            {
                "family": row.family,
                "setting": row.setting,
                "budget": row.budget,
                "computed": row.computed / cells,
                "timing_computed": (row.timing_computed or 0) / cells,
                "latency": latency,
                "speedup": base / latency,
                "wall_speedup": statistics.median(rows[0].times) / statistics.median(row.times),
                "psnr": None if is_reference else float(psnr_db(row.errors.mean())),
                "low": low,
                "high": high,
                "median_psnr": float(np.median(per_sample)),
                "worst_psnr": float(per_sample.min()),
                "rel_l2": 0.0 if is_reference else relative_l2(row.images, reference),
                "accuracy": classifier.accuracy(row.images, bench.labels) if digits else math.nan,
                "fd": frechet_distance(classifier.features(row.images), real)
                if real is not None
                else math.nan,
            }
        )
    return Scores(table, replicates)


def is_forecast(entry: dict[str, Any]) -> bool:
    """A row of the library's forecast schedules (not a peer)."""
    return str(entry["family"]).startswith(FORECAST_FAMILY)


def peers(table: list[dict[str, Any]]) -> list[int]:
    """Indices of the peer rows: every method but the forecast and no cache, finite PSNR."""
    return [
        i
        for i, r in enumerate(table)
        if r["family"] != "no cache"
        and not is_forecast(r)
        and r["psnr"] is not None
        and math.isfinite(r["psnr"])
    ]


def budget_of(entry: dict[str, Any]) -> float | None:
    """The compute budget a row was made for: its ``budget``, or ``compute <= X`` in its setting."""
    if entry["budget"] is not None:
        return float(entry["budget"])
    marker = "compute <= "
    setting = str(entry["setting"])
    if marker in setting:
        with contextlib.suppress(ValueError):
            return float(setting.split(marker, 1)[1].split()[0].rstrip(",)"))
    return None


class PeerEnvelope:
    """The peers' upper envelope, as measured and in every bootstrap replicate."""

    def __init__(self, scores: Scores) -> None:
        self.table, self.replicates = scores.table, scores.replicates
        self.index = peers(self.table)
        self.xs = np.array([self.table[i]["computed"] for i in self.index])
        self.ys = np.array([self.table[i]["psnr"] for i in self.index])

    def line(self, computed: float, row: int | None, target: float | None) -> dict[str, Any]:
        """The envelope at ``computed``, and the margin over it of table row ``row`` if given."""
        point = upper_envelope(self.xs, self.ys, computed)
        spread = upper_envelope(self.xs, self.replicates[self.index], computed).value
        left, right = self.table[self.index[point.left]], self.table[self.index[point.right]]
        line: dict[str, Any] = {
            "target": target,
            "row": None if row is None else self.table[row],
            "computed": computed,
            "envelope": float(point.value[0]),
            "envelope_interval": interval(spread),
            "spanned": (left,) if point.left == point.right else (left, right),
            "clipped": point.clipped,
        }
        if row is not None:
            line["margin"] = self.table[row]["psnr"] - line["envelope"]
            line["interval"] = interval(self.replicates[row] - spread)
        return line


def targets(scores: Scores) -> list[dict[str, Any]]:
    """Every forecast row's margin over the peer envelope at its compute, with an interval.

    The envelope and the margin are recomputed in every bootstrap replicate (the same resampled
    samples for every row). A target compute without a forecast row (``--no-forecast``) gets the
    envelope alone. Most compute first.
    """
    envelope = PeerEnvelope(scores)
    lines, covered = [], set()
    for i, row in enumerate(scores.table):
        if not is_forecast(row):
            continue
        budget = budget_of(row)
        target = next((t for t in TARGETS if budget is not None and math.isclose(t, budget)), None)
        covered.add(target)
        lines.append(envelope.line(row["computed"], i, target))
    for target in TARGETS:
        if target not in covered:
            lines.append(envelope.line(target, None, target))
    return sorted(lines, key=lambda line: -line["computed"])


# -- report --------------------------------------------------------------------------------------


def device_line(device: torch.device) -> str:
    """The processor or GPU in words, with the thread count on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"{name}, {threads} thread{'s' if threads > 1 else ''}"


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
    """Write the Markdown page; return the table's lines."""
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
    command = " ".join(["python benchmarks/quality_speed.py", *shown_arguments(sys.argv[1:])])
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
    header = f"""# Quality against speed on the {bench.loaded.title.lower()}

The shape of the SmoothCache paper's Table 1, reproduced on a {blocks}-block digits DiT, with the
library's forecast schedules measured against the best of every other method. Regenerate the page
and the plot (about {minutes} minute{"s" if minutes > 1 else ""} here) with:

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
- **Device**: {device_line(bench.device)}; {versions}.
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
    lines = markdown_table(scores.table, args.clock)
    second = bench.model_name == "second"
    floor = f", and for this model whether it is above {SECOND_MODEL_FLOOR:g} dB" if second else ""
    target_table = "\n".join(targets_table(target_lines, second))
    section = f"""
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
over the same {info.draws:,} bootstrap resamples, every row's batch PSNR and the envelope
recomputed in each.
The targets are the rows at {" and ".join(f"{t:.0%}" for t in TARGETS)} of the compute: whether
the margin's lower bound is above 0{floor}.

{target_table}
"""
    notes = NOTES.replace("WARMUP", str(WARMUP_STEPS))
    path.write_text(header + "\n".join(lines) + "\n" + section + notes)
    return lines


def plot(scores: Scores, title: str, path: Path, clock: str, steps: int) -> None:
    """Batch PSNR against measured speedup (left) and against branch-steps computed (right).

    The right panel adds the peer envelope, and the forecast rows' bootstrap intervals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = scores.table
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    families = list(dict.fromkeys(r["family"] for r in table[1:]))
    spare = iter(SPARE_MARKERS)
    for family in families:
        marker, colour = FAMILIES.get(family) or (next(spare, "o"), None)
        # The reference row has no PSNR; a schedule that skips nothing has an infinite one.
        rows = [
            r
            for r in table
            if r["family"] == family and r["psnr"] is not None and np.isfinite(r["psnr"])
        ]
        for ax, key in zip(axes, ("speedup", "computed")):
            if not rows:
                continue
            rows = sorted(rows, key=lambda r: r[key])
            xs, ys = [r[key] for r in rows], [r["psnr"] for r in rows]
            line = "-" if family in ("fewer steps", FORECAST_FAMILY) else "none"
            size = 11 if family == FORECAST_FAMILY else 7
            ax.plot(xs, ys, ls=line, marker=marker, color=colour, label=family, ms=size, lw=1)
            if family.startswith(FORECAST_FAMILY) and key == "computed":
                low = [y - r["low"] for r, y in zip(rows, ys)]
                high = [r["high"] - y for r, y in zip(rows, ys)]
                ax.errorbar(xs, ys, yerr=[low, high], fmt="none", color="black", capsize=3)
    index = peers(table)
    if index:
        xs = np.array([table[i]["computed"] for i in index])
        ys = np.array([table[i]["psnr"] for i in index])
        grid = np.linspace(xs.min(), xs.max(), 200)
        hull = [float(upper_envelope(xs, ys, x).value[0]) for x in grid]
        axes[1].plot(grid, hull, ls="--", color="0.3", lw=1, label="peer envelope")
    axes[0].set_xlabel(f"measured speedup, {'CPU time' if clock == 'cpu' else 'wall clock'} (x)")
    axes[1].set_xlabel("branch-steps computed (fraction)")
    axes[1].invert_xaxis()
    axes[0].set_ylabel("batch PSNR against the uncached samples (dB)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left", ncol=2)
    fig.suptitle(f"{title}, DDIM {steps} steps: fidelity against speed (up and right is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


def quality_line(bench: Bench, row: Row) -> str:
    """A progress line for a row whose quality was measured."""
    share = row.computed / (bench.counter.branches * bench.steps)
    assert row.errors is not None
    return (
        f"  {row.family}, {row.setting}: {share:.1%} computed, "
        f"{float(psnr_db(np.mean(row.errors))):.2f} dB ({row.quality_seconds:.0f} s)"
    )


def fewer_steps_rows(bench: Bench, rows: Sequence[Row]) -> list[Row]:
    """DDIM at ``k = round(steps x compute)`` of every row, most steps first."""
    cells = bench.counter.branches * bench.steps
    fewer = {round(bench.steps * row.computed / cells) for row in rows}
    return [bench.plain(k) for k in sorted(fewer, reverse=True) if 1 < k < bench.steps]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="reference", help="(reference)")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples (1000)")
    parser.add_argument(
        "--timing-samples", type=int, default=100, help="samples per timed run (100)"
    )
    parser.add_argument("--calibration-samples", type=int, default=10, help="(default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, help="bootstrap replicates (2000, at least 1000)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="latency as process CPU time (the default; with --threads 1) or wall-clock time",
    )
    parser.add_argument(
        "--no-forecast",
        action="store_true",
        help="leave out the library's forecast rows (benchmarks/forecast_rows.py)",
    )
    parser.add_argument("--out-dir", type=Path, help="default docs/, or /tmp with --quick")
    parser.add_argument(
        "--name",
        help="file name of the .md and .png (quality_speed, or quality_speed_second for the "
        "second model)",
    )
    add_curves_option(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50 samples (20 timed), 5 calibration samples, 1 run per row, 1000 bootstrap "
        "replicates, a few settings per method",
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.timing_samples, args.calibration_samples = 50, 20, 5
        args.repeats, args.bootstrap = 1, 1000
    if args.bootstrap < 1000:
        parser.error("--bootstrap needs at least 1000 replicates")
    if args.name is None:
        args.name = "quality_speed" + ("_second" if args.model == "second" else "")
    return args


def main() -> None:
    """Build the rows, score their quality, time them, compare the forecast, write the page."""
    args = parse_args()
    out_dir = args.out_dir or (Path("/tmp") if args.quick else Path("docs"))
    if args.threads:
        torch.set_num_threads(args.threads)
    log, load_start = Log(), os.getloadavg()[0]
    settings = QUICK if args.quick else FULL

    bench = Bench(
        args.model,
        samples=args.samples,
        timing_samples=args.timing_samples,
        calibration_samples=args.calibration_samples,
        steps=args.steps,
        guidance=args.guidance,
        device=torch.device(args.device),
    )
    digits_classifier()
    rows = [bench.plain(bench.steps)]
    rows += smoothcache_rows(bench, settings, log, args.curves)
    if not args.no_forecast:
        from forecast_rows import forecast_rows

        rows += forecast_rows(bench, log, args.curves)
    rows += diffusers_rows(bench, settings, log)
    rows += cache_dit_rows(bench, log, settings.cache_dit, settings.cache_dit_taylor)

    log(f"quality: {len(rows)} rows, {bench.samples} samples each, then fewer steps")
    evaluate(rows[0], None)
    log(f"  no cache: {rows[0].quality_seconds:.0f} s")
    for row in rows[1:]:
        evaluate(row, rows[0].images)
        log(quality_line(bench, row))
    fewer = fewer_steps_rows(bench, rows[1:])  # DDIM at the compute of every row scored
    for row in fewer:
        evaluate(row, rows[0].images)
        log(quality_line(bench, row))
    rows[1:1] = fewer

    bench.sample(bench.model, 5, timing=True)  # warm-up
    for repeat in range(args.repeats):
        log(f"latency: round {repeat + 1} of {args.repeats}, {bench.timing_samples} samples a row")
        for row in rows[::-1] if repeat % 2 else rows:  # alternate the order against drift
            time_once(row, bench.device)

    boot = Bootstrap.draw(bench.samples, args.bootstrap, seed=0)
    scores = score(rows, bench, args.clock, boot)
    target_lines = targets(scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{args.name}.md", out_dir / f"{args.name}.png"
    info = RunInfo(
        minutes=(time.perf_counter() - log.started) / 60,
        loads=(load_start, os.getloadavg()[0]),
        forecast=not args.no_forecast,
        cache_dit=cache_dit_version(),
        draws=args.bootstrap,
    )
    lines = report(args, bench, scores, target_lines, info, md_path)
    plot(scores, bench.loaded.title, png_path, args.clock, bench.steps)
    print("\n".join(lines))
    print()
    print("\n".join(targets_table(target_lines, args.model == "second")))
    log(f"wrote {md_path} and {png_path} after {info.minutes:.1f} minutes")


if __name__ == "__main__":
    main()
