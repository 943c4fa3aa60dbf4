"""cache-dit's DBCache, with and without its TaylorSeer calibrator, as rows of the benchmark.

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

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from quality_bench import BranchCounter, Row  # benchmarks/ is on sys.path as the script's folder

if TYPE_CHECKING:
    from quality_bench import Bench

FAMILY = "cache-dit DBCache"
CALIBRATED_FAMILY = "cache-dit DBCache + TaylorSeer"
WARMUP_STEPS = 2
TAYLORSEER_ORDER = 1  # cache-dit's default order


def version() -> str | None:
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


def cached_copy(
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
        max_warmup_steps=WARMUP_STEPS,
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


def check(bench: Bench) -> None:
    """With threshold 0 (nothing reused) the cache-dit copy must reproduce the plain model."""
    copy, refresh = cached_copy(bench, 0.0, None)
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
    if version() is None:
        log("cache-dit is not installed: no cache-dit rows")
        return []
    check(bench)
    rows = []
    for family, order, settings in (
        (FAMILY, None, thresholds),
        (CALIBRATED_FAMILY, TAYLORSEER_ORDER, calibrated_thresholds),
    ):
        for threshold in settings:
            setting = f"threshold {threshold:g}" + ("" if order is None else f", order {order}")
            rows.append(_row(bench, family, setting, threshold, order))
    return rows


def _row(bench: Bench, family: str, setting: str, threshold: float, order: int | None) -> Row:
    """One cache-dit row: its own patched copy, counted there, refreshed before every run."""
    copy, refresh = cached_copy(bench, threshold, order)

    def run(timing: bool) -> torch.Tensor:
        refresh()
        return bench.sample(copy, bench.steps, timing=timing)

    return Row(family, setting, run, BranchCounter(copy))
