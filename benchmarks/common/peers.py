"""The rows the library's forecast is measured against: its peers, built on one :class:`Bench`.

:class:`Settings` says which settings of each method get a row. :func:`smoothcache_rows`:
FORA (``Schedule.uniform``), the paper's rule per kind and per block, and this library's
schedule search, from one calibration (:func:`benchmarks.common.calibration.calibrate`).
:func:`diffusers_rows`: the caches built into diffusers (first-block cache, TaylorSeer, MagCache
with its ratios from its own calibration mode, pyramid attention broadcast) on a ``CacheMixin``
copy of the model. :func:`cache_dit_rows`: cache-dit's DBCache, with and without its TaylorSeer
calibrator. :func:`fewer_steps_rows`: DDIM at fewer steps, at the compute of every row.

cache-dit (``pip install cache-dit``) caches a diffusers pipeline's transformer blocks; here it is
applied to a bare ``DiTTransformer2DModel`` sampled by this project's own loop, the way its
registered DiT adapter does it for ``DiTPipeline``:

- ``BlockAdapter(transformer=copy, blocks=copy.transformer_blocks,
  forward_pattern=ForwardPattern.Pattern_3, patch_functor=DiTPatchFunctor())`` on a copy of the
  model (the patch functor replaces the copy's ``forward``);
- ``DBCacheConfig(enable_separate_cfg=False)``: the sampler runs guidance as one doubled batch,
  one model call per step; ``Fn_compute_blocks=1`` (the first block always computes and its
  residual decides), ``Bn_compute_blocks=0``, ``max_warmup_steps=2``;
- ``cache_dit.refresh_context(copy)`` before every generation: cache-dit resets its own context
  only on the first call of the next generation, one call late, so without it a second run
  differs from the first.

cache-dit is imported with ``CACHE_DIT_LOG_LEVEL=error`` (unless set): it otherwise logs every
step of its set-up, and at warning level that it was given no pipeline.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.bench import KINDS, Bench, BranchCounter, Row
from benchmarks.common.calibration import calibrate
from smoothcache import Schedule

CACHE_DIT_FAMILY = "cache-dit DBCache"
CACHE_DIT_TAYLOR_FAMILY = "cache-dit DBCache + TaylorSeer"
CACHE_DIT_WARMUP = 2
CACHE_DIT_TAYLOR_ORDER = 1  # cache-dit's default order


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


def smoothcache_rows(
    bench: Bench, settings: Settings, log: Callable[[str], None], curves_path: Path | None
) -> list[Row]:
    """FORA, and the paper's rule and the schedule search from one calibration.

    The calibration is :func:`benchmarks.common.calibration.calibrate` (lookahead 3,
    sensitivity per kind); ``curves_path`` may be the file that
    ``python -m benchmarks.schedule_search --curves`` wrote from the same calibration samples.
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


def fewer_steps_rows(bench: Bench, rows: Sequence[Row]) -> list[Row]:
    """DDIM at ``k = round(steps x compute)`` of every row, most steps first."""
    cells = bench.counter.branches * bench.steps
    fewer = {round(bench.steps * row.computed / cells) for row in rows}
    return [bench.plain(k) for k in sorted(fewer, reverse=True) if 1 < k < bench.steps]


def cache_dit_version() -> str | None:
    """The installed cache-dit version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version("cache-dit")
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_cache_dit() -> object:
    """``cache_dit``, imported quietly (its set-up logs at ``info`` by default)."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    import cache_dit

    return cache_dit


def cache_dit_copy(
    bench: Bench, threshold: float, order: int | None
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """A copy of ``bench.model`` with cache-dit's DBCache, and the call that resets its context.

    ``order`` adds cache-dit's TaylorSeer calibrator of that order; ``None`` reuses residuals.
    """
    cache_dit = _import_cache_dit()
    from cache_dit import (
        BlockAdapter,
        DBCacheConfig,
        ForwardPattern,
        TaylorSeerCalibratorConfig,
    )
    from cache_dit.caching.patch_functors import DiTPatchFunctor

    copy = bench.plain_copy()
    config = DBCacheConfig(
        Fn_compute_blocks=1,
        Bn_compute_blocks=0,
        residual_diff_threshold=threshold,
        max_warmup_steps=CACHE_DIT_WARMUP,
        enable_separate_cfg=False,
        num_inference_steps=bench.steps,
    )
    calibrator = None if order is None else TaylorSeerCalibratorConfig(taylorseer_order=order)
    adapter = BlockAdapter(
        transformer=copy,
        blocks=copy.transformer_blocks,
        forward_pattern=ForwardPattern.Pattern_3,
        patch_functor=DiTPatchFunctor(),
    )
    cache_dit.enable_cache(adapter, cache_config=config, calibrator_config=calibrator)

    def refresh() -> None:
        cache_dit.refresh_context(copy)

    return copy, refresh


def check_cache_dit(bench: Bench) -> None:
    """With threshold 0 (nothing reused) the cache-dit copy must reproduce the plain model."""
    copy, refresh = cache_dit_copy(bench, 0.0, None)
    refresh()
    ours = bench.sample(copy, bench.steps, count=4)
    if not torch.equal(ours, bench.sample(bench.model, bench.steps, count=4)):
        raise SystemExit("cache-dit's copy at threshold 0 does not reproduce the plain model")


def cache_dit_rows(
    bench: Bench,
    log: Callable[[str], None],
    thresholds: Sequence[float],
    calibrated_thresholds: Sequence[float],
) -> list[Row]:
    """DBCache at ``thresholds``, and DBCache with TaylorSeer at ``calibrated_thresholds``.

    The branch counter sits on each row's own copy, the model cache-dit patched. Returns no rows
    (and says so) when cache-dit is not installed.
    """
    if cache_dit_version() is None:
        log("cache-dit is not installed: no cache-dit rows")
        return []
    check_cache_dit(bench)
    rows = []
    for family, order, settings in (
        (CACHE_DIT_FAMILY, None, thresholds),
        (CACHE_DIT_TAYLOR_FAMILY, CACHE_DIT_TAYLOR_ORDER, calibrated_thresholds),
    ):
        for threshold in settings:
            setting = f"threshold {threshold:g}" + ("" if order is None else f", order {order}")
            rows.append(_cache_dit_row(bench, family, setting, threshold, order))
    return rows


def _cache_dit_row(
    bench: Bench, family: str, setting: str, threshold: float, order: int | None
) -> Row:
    """One cache-dit row: its own patched copy, counted there, refreshed before every run."""
    copy, refresh = cache_dit_copy(bench, threshold, order)

    def run(timing: bool) -> torch.Tensor:
        refresh()
        return bench.sample(copy, bench.steps, timing=timing)

    return Row(family, setting, run, BranchCounter(copy))
