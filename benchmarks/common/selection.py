"""Every method's setting chosen on held-out samples by the library's criterion (issue #26).

The library's forecast rows are the schedules ``smoothcache.select_schedule`` chose among
candidates on held-out samples: the lowest batch mean squared error against the uncached
samples of the same seeds. Every peer gets the same privilege on the same samples: each of its
settings runs the held-out batch (:func:`measure_held_out`), and for every target budget the
setting of each family (and calibration seed, for a method that calibrates) with the lowest
held-out batch MSE among those whose held-out branch-steps are within the budget is its
**held-out choice** (:func:`held_out_choices`): what a user of that method who tuned it this way
would run. The sweep itself stays in the table (the envelope over it is the peers' best case:
a choice made on the evaluation samples themselves).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from benchmarks.common.bench import Bench, Row
from benchmarks.common.checkpoint import row_key

#: Families whose settings are not chosen (the reference and fewer steps, which needs no cache).
NOT_CHOSEN = ("no cache", "fewer steps")


def measure_held_out(bench: Bench, rows: Sequence[Row], log: Callable[[str], None]) -> None:
    """Run every row that is chosen among on the held-out batch: its batch MSE against the
    uncached held-out samples and its branch count there (rows that have them keep theirs)."""
    reference = bench.checkpoint.value(
        "held-out|reference", lambda: bench.plain(bench.steps).run("held_out").double()
    )

    def measure(row: Row) -> tuple[float, int]:
        row.counter.calls = 0
        images = row.run("held_out").double()
        return float(((images - reference) ** 2).mean()), row.counter.calls

    for row in rows:
        if row.family in NOT_CHOSEN or row.held_out_mse is not None:
            continue
        key = row_key(row.family, row.setting, row.calibration_seed)
        row.held_out_mse, row.held_out_computed = bench.checkpoint.value(
            f"held-out|{key}", lambda r=row: measure(r)
        )
    log(f"held-out: {len(rows)} rows on {bench.held_out_samples} samples")


def held_out_choices(
    bench: Bench, rows: Sequence[Row], budgets: Sequence[float]
) -> dict[tuple[str, int | None, float], Row]:
    """``(family, calibration seed, budget) -> row``: each family's held-out choice at each
    budget (none where no setting fits the budget). The library's forecast rows were chosen by
    ``select_schedule`` already; they are their own choice at their budget."""
    chosen: dict[tuple[str, int | None, float], Row] = {}
    groups: dict[tuple[str, int | None], list[Row]] = {}
    for row in rows:
        if row.family not in NOT_CHOSEN and row.held_out_mse is not None:
            groups.setdefault((row.family, row.calibration_seed), []).append(row)
    for (family, seed), members in groups.items():
        for budget in budgets:
            fits = [r for r in members if _held_out_share(bench, r) <= budget + 1e-9]
            if fits:
                chosen[(family, seed, budget)] = min(fits, key=lambda r: r.held_out_mse)
    return chosen


def _held_out_share(bench: Bench, row: Row) -> float:
    """The share of branch-steps a row computed on the held-out batch (a row made for a budget
    computes the same on any batch; its own budget stands in when it was not run there)."""
    if row.held_out_computed is None:
        return row.budget if row.budget is not None else math.inf
    return row.held_out_computed / bench.cells


def choice_labels(choices: dict[tuple[str, int | None, float], Row]) -> dict[int, list[float]]:
    """``id(row) -> budgets`` the row is its family's held-out choice for (for the table)."""
    labels: dict[int, list[float]] = {}
    for (_family, _seed, budget), row in choices.items():
        labels.setdefault(id(row), []).append(budget)
    return {key: sorted(value, reverse=True) for key, value in labels.items()}
