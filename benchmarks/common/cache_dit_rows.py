"""cache-dit's DBCache rows, with and without its TaylorSeer calibrator, swept.

cache-dit (``pip install cache-dit``) caches a diffusers pipeline's transformer blocks: the first
``Fn`` blocks always compute, and when their residual changed by less than a threshold since the
last computed step, the middle blocks are skipped as a whole (their cached residual added, or
extrapolated by its TaylorSeer calibrator), the last ``Bn`` blocks always compute; nothing is
cached in the first ``max_warmup_steps`` steps. Its defaults are ``Fn=8, Bn=0``, threshold
0.08, 8 warm-up steps; :data:`DEFAULT` is that setting (with ``Fn`` capped at the model's
blocks minus one, so that something can be cached). The rows sweep front and back blocks,
warm-up and threshold (:class:`~benchmarks.common.peers.Settings`), each with the TaylorSeer
calibrator of order 1 and 2 too. Applied:

- to the **flow model** through its pipeline, ``cache_dit.enable_cache(pipe, cache_config=...)``
  with cache-dit's registered FLUX.1 adapter (both block lists), ``enable_separate_cfg=True``
  (the pipeline's true CFG makes a conditional and an unconditional call per step, each with its
  own cache);
- to a **digits DiT**, sampled by this project's own loop, the way cache-dit's registered DiT
  adapter does it for ``DiTPipeline``: ``BlockAdapter(transformer=copy,
  blocks=copy.transformer_blocks, forward_pattern=ForwardPattern.Pattern_3,
  patch_functor=DiTPatchFunctor())`` on a copy of the model, ``enable_separate_cfg=False`` (one
  doubled guidance batch per call).

``cache_dit.refresh_context`` runs before every generation: cache-dit resets its own context only
on the first call of the next generation, one call late, so without it a second run differs
from the first. cache-dit is imported with ``CACHE_DIT_LOG_LEVEL=error`` (unless set): it
otherwise logs every step of its set-up.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence

import torch

from benchmarks.common.bench import Bench, BranchCounter, Row

CACHE_DIT_FAMILY = "cache-dit DBCache"
CACHE_DIT_TAYLOR_FAMILY = "cache-dit DBCache + TaylorSeer"
#: cache-dit's own defaults: front blocks, back blocks, warm-up steps, threshold.
DEFAULT = (8, 0, 8, 0.08)


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


def blocks_of(model: torch.nn.Module) -> int:
    """The model's transformer blocks (both lists of a dual-stream model)."""
    return len(model.transformer_blocks) + len(getattr(model, "single_transformer_blocks", ()))


def cache_dit_copy(
    bench: Bench, setting: tuple[int, int, int, float], order: int | None
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """A copy of ``bench.model`` with cache-dit's DBCache at ``setting`` (front blocks, back
    blocks, warm-up, threshold), and the call that resets its context before a generation.

    ``order`` adds cache-dit's TaylorSeer calibrator of that order; ``None`` reuses residuals.
    """
    cache_dit = _import_cache_dit()
    from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

    front, back, warmup, threshold = setting
    copy = bench.plain_copy()
    separate = bench.loaded.separate_guidance and bench.guidance != 1.0
    config = DBCacheConfig(
        Fn_compute_blocks=front,
        Bn_compute_blocks=back,
        residual_diff_threshold=threshold,
        max_warmup_steps=warmup,
        enable_separate_cfg=separate,
        num_inference_steps=bench.steps,
    )
    calibrator = None if order is None else TaylorSeerCalibratorConfig(taylorseer_order=order)
    if bench.loaded.pipeline is not None:
        target = bench.loaded.pipeline(copy)
    else:
        from cache_dit import BlockAdapter, ForwardPattern
        from cache_dit.caching.patch_functors import DiTPatchFunctor

        target = BlockAdapter(
            transformer=copy,
            blocks=copy.transformer_blocks,
            forward_pattern=ForwardPattern.Pattern_3,
            patch_functor=DiTPatchFunctor(),
        )
    cache_dit.enable_cache(target, cache_config=config, calibrator_config=calibrator)

    def refresh() -> None:
        cache_dit.refresh_context(copy)

    return copy, refresh


def check_cache_dit(bench: Bench) -> None:
    """With threshold 0 (nothing reused) the cache-dit copy must reproduce the plain model."""
    copy, refresh = cache_dit_copy(bench, (1, 0, 0, 0.0), None)
    refresh()
    ours = bench.sample(copy, bench.steps, count=4)
    if not torch.equal(ours, bench.sample(bench.model, bench.steps, count=4)):
        raise SystemExit("cache-dit's copy at threshold 0 does not reproduce the plain model")


def cache_dit_rows(
    bench: Bench,
    log: Callable[[str], None],
    settings: Sequence[tuple[int, int, int, float]],
    orders: Sequence[int],
) -> list[Row]:
    """DBCache at every setting, alone and with the TaylorSeer calibrator of every order.

    A front-block count at or above the model's blocks is capped at the blocks minus one (and
    the row says so). The branch counter sits on each row's own copy, the model cache-dit
    patched. Returns no rows (and says so) when cache-dit is not installed.
    """
    if cache_dit_version() is None:
        log("cache-dit is not installed: no cache-dit rows")
        return []
    check_cache_dit(bench)
    most = blocks_of(bench.model) - 1
    rows = []
    for order in (None, *orders):
        family = CACHE_DIT_FAMILY if order is None else CACHE_DIT_TAYLOR_FAMILY
        for front, back, warmup, threshold in settings:
            capped = (min(front, most - back), back, warmup, threshold)
            setting = f"F{front}B{back}, warm-up {warmup}, threshold {threshold:g}"
            if order is not None:
                setting += f", order {order}"
            if capped[0] != front:
                setting += f" (F capped to {capped[0]})"
            rows.append(_cache_dit_row(bench, family, setting, capped, order))
    return rows


def _cache_dit_row(
    bench: Bench,
    family: str,
    setting: str,
    values: tuple[int, int, int, float],
    order: int | None,
) -> Row:
    """One cache-dit row: its own patched copy, counted there, refreshed before every run."""
    copy, refresh = cache_dit_copy(bench, values, order)

    def run(batch: str) -> torch.Tensor:
        refresh()
        return bench.sample(copy, bench.steps, batch=batch)

    return Row(family, setting, run, BranchCounter(copy, bench.loaded.layers))
