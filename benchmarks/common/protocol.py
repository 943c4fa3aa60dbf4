"""The rows of one quality page under the evaluation protocol of issue #26 (``docs/evaluation.md``).

:func:`build_rows` makes every row of the table: no cache, FORA and the uncalibrated peers
once, and per calibration seed of the split (:mod:`benchmarks.common.seeds`) the calibration
every calibrated method shares (``forecast_rows.shared_curves``), the paper's rule, the schedule
search, MagCache and the library's forecast rows. Then every peer setting, of the table's sweep
and of a wider candidate sweep (``candidates``: more of each method's documented knobs), runs
the held-out batch, and each family's setting at each target budget is chosen there by the
library's criterion (:mod:`.selection`); candidates that no family chose are dropped, so the
evaluation samples are spent on the table's sweep and on the choices.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.common.bench import Bench, Row
from benchmarks.common.cache_dit_rows import cache_dit_rows
from benchmarks.common.forecast_rows import forecast_rows, shared_curves
from benchmarks.common.peers import (
    Settings,
    calibrated_rows,
    diffusers_rows,
    fora_rows,
    magcache_rows,
)
from benchmarks.common.scoring import TARGETS
from benchmarks.common.selection import choice_labels, held_out_choices, measure_held_out


def peer_rows(bench: Bench, settings: Settings, log: Callable[[str], None]) -> list[Row]:
    """The peers that calibrate nothing: FORA, the diffusers caches but MagCache, cache-dit."""
    rows = fora_rows(bench, settings)
    rows += diffusers_rows(bench, settings)
    rows += cache_dit_rows(bench, log, settings.cache_dit, settings.cache_dit_orders)
    return rows


def seed_rows(
    bench: Bench, settings: Settings, log: Callable[[str], None], forecast: bool
) -> list[Row]:
    """Per calibration seed: the shared calibration, the paper's rule and the schedule search,
    MagCache, and (with ``forecast``) the library's forecast rows."""
    rows = []
    for seed in bench.seeds.calibration:
        curves = shared_curves(bench, log, seed)
        rows += calibrated_rows(bench, settings, curves, seed)
        rows += magcache_rows(bench, settings, log, seed)
        if forecast:
            rows += forecast_rows(bench, log, curves, seed)
    return rows


def build_rows(
    bench: Bench,
    settings: Settings,
    candidates: Settings,
    log: Callable[[str], None],
    forecast: bool,
) -> tuple[list[Row], dict[int, list[float]]]:
    """The table's rows (no cache first) and, by ``id(row)``, the target budgets each row is
    its family's held-out choice for."""
    rows = [bench.plain(bench.steps)]
    rows += peer_rows(bench, settings, log)
    rows += seed_rows(bench, settings, log, forecast)
    extra = peer_rows(bench, candidates, log)
    for seed in bench.seeds.calibration:
        extra += magcache_rows(bench, candidates, log, seed)
    measure_held_out(bench, rows[1:] + extra, log)
    labels = choice_labels(held_out_choices(bench, rows[1:] + extra, TARGETS))
    kept = [row for row in extra if id(row) in labels]
    log(f"held-out choices: {len(kept)} of {len(extra)} candidates outside the sweep chosen")
    return rows + kept, labels
