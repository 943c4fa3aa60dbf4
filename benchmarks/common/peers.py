"""The rows the library's forecast is measured against: its peers, built on one :class:`Bench`.

:class:`Settings` says which settings of each method get a row (a sweep of each method's
documented knobs). :func:`fora_rows`: FORA (``Schedule.uniform``). :func:`calibrated_rows`: the
paper's rule per kind and per block and this library's schedule search, from the calibration
every calibrated method shares (``forecast_rows.shared_curves``: the same samples and lookahead
as the library's forecast), once per calibration seed. :func:`diffusers_rows`: the caches built
into diffusers (first-block cache, TaylorSeer with its warm-up swept, pyramid attention
broadcast) on a ``CacheMixin`` copy of the model, and :func:`magcache_rows`: MagCache with its
ratios from its own calibration mode on the same calibration samples, once per seed. cache-dit
is in :mod:`.cache_dit_rows`. :func:`fewer_steps_rows`: the sampler at fewer steps, at the
compute of every row.
"""

from __future__ import annotations

import ast
import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.common.bench import Bench, Row
from smoothcache import ErrorCurves, Schedule


@dataclass(frozen=True)
class Settings:
    """Which settings of each method get a row (none of a method left out)."""

    fora: tuple[int, ...] = ()
    alphas: tuple[float, ...] = ()
    paper_budgets: tuple[float, ...] = ()
    per_block: tuple[bool, ...] = ()
    search_budgets: tuple[float, ...] = ()
    first_block: tuple[float, ...] = ()
    taylor_orders: tuple[int, ...] = ()
    taylor_intervals: tuple[int, ...] = ()
    #: TaylorSeer's ``disable_cache_before_step`` (its default 3 first)
    taylor_warmups: tuple[int, ...] = ()
    magcache: tuple[float, ...] = ()
    pab: tuple[tuple[int, tuple[int, int]], ...] = ()
    #: cache-dit DBCache settings: (front blocks, back blocks, warm-up steps, threshold)
    cache_dit: tuple[tuple[int, int, int, float], ...] = ()
    #: cache-dit's TaylorSeer calibrator: its orders, each with every ``cache_dit`` setting
    cache_dit_orders: tuple[int, ...] = ()


def fora_rows(bench: Bench, settings: Settings) -> list[Row]:
    """FORA: every kind computes every ``k``-th step (``Schedule.uniform``)."""
    kinds = bench.loaded.kinds
    return [
        bench.cached("FORA", f"every {every}", Schedule.uniform(bench.steps, every, kinds))
        for every in settings.fora
    ]


def calibrated_rows(bench: Bench, settings: Settings, curves: ErrorCurves, seed: int) -> list[Row]:
    """The paper's rule (alphas and budgets, per kind and per block) and the schedule search,
    from ``curves`` (calibrated on ``seed``)."""
    rows = []
    for alpha in settings.alphas:
        schedule = curves.schedule(alpha=alpha, method="paper")
        rows.append(bench.cached("SmoothCache (per kind)", f"alpha={alpha:g}", schedule))
    for per_block in settings.per_block:
        family = f"SmoothCache (per {'block' if per_block else 'kind'})"
        for budget in settings.paper_budgets:
            schedule = curves.schedule(compute_fraction=budget, per_block=per_block, method="paper")
            setting = f"compute <= {budget:g} (alpha={schedule.metadata['alpha']:.3f})"
            rows.append(bench.cached(family, setting, schedule, budget=budget))
    for budget in settings.search_budgets:
        schedule = curves.schedule(compute_fraction=budget, method="sensitivity")
        setting = f"sensitivity, compute <= {budget:g}"
        rows.append(bench.cached("schedule search", setting, schedule, budget=budget))
    for row in rows:
        row.calibration_seed = seed
    return rows


def diffusers_rows(bench: Bench, settings: Settings) -> list[Row]:
    """First-block cache, TaylorSeer and PAB at ``settings``."""
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    bench.check_cache_model()
    rows = []
    for threshold in settings.first_block:
        config = FirstBlockCacheConfig(threshold=threshold)
        rows.append(
            bench.diffusers("first-block cache", f"threshold {threshold:g}", lambda _m, c=config: c)
        )
    for order in settings.taylor_orders:
        for warmup in settings.taylor_warmups:
            for every in settings.taylor_intervals:
                config = TaylorSeerCacheConfig(
                    cache_interval=every,
                    max_order=order,
                    disable_cache_before_step=warmup,
                    taylor_factors_dtype=torch.float32,
                    cache_identifiers=list(bench.loaded.taylor_identifiers),
                )
                family = f"TaylorSeer (order {order})"
                setting = f"interval {every}, from step {warmup}"
                rows.append(bench.diffusers(family, setting, lambda _m, c=config: c))
    for skip, window in settings.pab:
        setting = f"every {skip}, {window[0]} < t < {window[1]}"
        make = _pab(bench, skip, window)
        rows.append(bench.diffusers("pyramid attention broadcast", setting, make))
    return rows


def _pab(bench: Bench, skip: int, window: tuple[int, int]) -> Callable[[torch.nn.Module], Any]:
    """PAB's config for a copy: a pre-hook on the copy records each call's timestep (in the
    0-1000 range of ``window``) for its ``current_timestep_callback``."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    scale = bench.loaded.timestep_scale

    def make(copy: torch.nn.Module) -> Any:
        now = [0]

        def record(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
            now[0] = int(kwargs["timestep"][0] * scale)

        copy.register_forward_pre_hook(record, with_kwargs=True)
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=skip,
            spatial_attention_timestep_skip_range=window,
            current_timestep_callback=lambda: now[0],
        )

    return make


def magcache_rows(
    bench: Bench, settings: Settings, log: Callable[[str], None], seed: int
) -> list[Row]:
    """MagCache at ``settings.magcache``, its ratios measured with its own ``calibrate=True``
    mode on the calibration samples of ``seed`` (it prints them; this reads that output).

    Under the flow model's true CFG it calibrates each cache context and prints the
    conditional pass's ratios, then the unconditional one's; one ``mag_ratios`` serves both
    contexts, so the last printed (unconditional) is used: the two differ by under 1%.
    """
    from diffusers.hooks import MagCacheConfig

    if not settings.magcache:
        return []

    def measure() -> list[float]:
        log(f"calibrating MagCache with its own calibrate=True mode on seed {seed}")
        probe = bench.cache_model()
        probe.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=bench.steps))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), bench.generation_context(probe):
            bench.sample(probe, bench.steps, calibration=True, calibration_seed=seed)
        return ast.literal_eval(printed.getvalue().strip().splitlines()[-1])

    ratios = bench.checkpoint.value(f"magcache|{seed}", measure)
    rows = []
    for threshold in settings.magcache:
        config = MagCacheConfig(
            threshold=threshold, num_inference_steps=bench.steps, mag_ratios=ratios
        )
        row = bench.diffusers("MagCache", f"threshold {threshold:g}", lambda _m, c=config: c)
        row.calibration_seed = seed
        rows.append(row)
    return rows


def fewer_steps_rows(bench: Bench, rows: Sequence[Row]) -> list[Row]:
    """The sampler at ``k = round(steps x compute)`` of every row, most steps first."""
    cells = bench.cells
    fewer = {round(bench.steps * row.computed / cells) for row in rows}
    return [bench.plain(k) for k in sorted(fewer, reverse=True) if 1 < k < bench.steps]
