"""Every row's quality, latency and margin over its peers: the numbers of the quality page.

:func:`evaluate` samples a row's evaluation batch once (samples, per-sample squared errors,
branch-steps computed); :func:`time_once` times one run of its timing batch. :func:`score`
turns the rows into the table's numbers, with every row's batch PSNR in every bootstrap
replicate; :func:`targets` compares each of the library's forecast rows with the upper envelope
of its peers (every other method but no cache) at its compute, the envelope and the margin
recomputed in every replicate. The targets are the rows at :data:`TARGETS` of the compute.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.common.bench import Bench, Row
from benchmarks.common.checkpoint import Checkpoint, row_key
from benchmarks.common.forecast_rows import FAMILY as FORECAST_FAMILY
from benchmarks.common.stats import (
    Bootstrap,
    frechet_distance,
    interval,
    psnr_db,
    two_sample_accuracy,
    upper_envelope,
)
from smoothcache.reference import digits_classifier, relative_l2

TARGETS = (0.3, 0.2)  # compute fractions at which the forecast must beat its peers
FLOOR = -0.3  # dB: the second and flow models' target for the margin's lower bound


def evaluate(
    row: Row, reference: torch.Tensor | None, checkpoint: Checkpoint | None = None
) -> None:
    """Sample the evaluation batch once: samples, per-sample errors and branch count (read
    back from ``checkpoint`` when an earlier run saved them)."""

    def measure() -> tuple[torch.Tensor, int, float]:
        row.counter.calls = 0
        start = time.process_time()
        images = row.run("evaluation").detach().cpu()
        return images, row.counter.calls, time.process_time() - start

    key = f"eval|{row_key(row.family, row.setting, row.calibration_seed)}"
    images, row.computed, row.quality_seconds = (checkpoint or Checkpoint(None, "")).value(
        key, measure
    )
    row.images = images
    base = images if reference is None else reference
    row.errors = ((images.double() - base.double()) ** 2).flatten(1).mean(1).numpy()


def time_once(
    row: Row, device: torch.device, checkpoint: Checkpoint | None = None, round_: int = 0
) -> None:
    """Time one run of the timing batch (round ``round_``, read back from ``checkpoint`` when
    an earlier run timed it); the first also keeps its branch count."""

    def measure() -> tuple[float, float, int]:
        row.counter.calls = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        row.run("timing")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, time.process_time() - cpu_start, row.counter.calls

    key = f"time|{row_key(row.family, row.setting, row.calibration_seed)}|{round_}"
    wall, cpu, calls = (checkpoint or Checkpoint(None, "")).value(key, measure)
    row.times.append(wall)
    row.cpu_times.append(cpu)
    if row.timing_computed is None:
        row.timing_computed = calls
    elif calls != row.timing_computed:
        raise SystemExit(f"{row.family}, {row.setting}: the branch count changed between runs")


def quality_line(bench: Bench, row: Row) -> str:
    """A progress line for a row whose quality was measured."""
    share = row.computed / bench.cells
    assert row.errors is not None
    return (
        f"  {row.family}, {row.setting}: {share:.1%} computed, "
        f"{float(psnr_db(np.mean(row.errors))):.2f} dB ({row.quality_seconds:.0f} s)"
    )


@dataclass
class Scores:
    """The table's numbers and, for the envelope, every row's batch PSNR in every replicate."""

    table: list[dict[str, Any]]
    replicates: np.ndarray  # (rows, replicates) batch PSNR; row 0 is the reference


def score(
    rows: list[Row],
    bench: Bench,
    clock: str,
    boot: Bootstrap,
    chosen: dict[int, list[float]] | None = None,
) -> Scores:
    """Compute share, latency, speedup and quality of every row; ``rows[0]`` is the reference.

    ``clock`` picks the latency: ``wall`` time, or the process's ``cpu`` time. ``chosen`` maps
    ``id(row)`` to the budgets the row is its family's held-out choice for
    (:func:`benchmarks.common.selection.choice_labels`).
    """
    chosen = chosen or {}

    def latency_of(row: Row) -> float:
        return statistics.median(row.cpu_times if clock == "cpu" else row.times)

    classifier = digits_classifier()
    digits = rows[0].images is not None and rows[0].images[0].numel() == 64
    real = classifier.features(classifier.real_images) if digits else None
    cells = bench.cells
    reference, base = rows[0].images, latency_of(rows[0])
    assert reference is not None
    reference_features = _two_sample_features(reference, classifier)
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
                "c2st": two_sample_accuracy(
                    _two_sample_features(row.images, classifier), reference_features
                ),
                "calibration_seed": row.calibration_seed,
                "chosen": chosen.get(id(row), []),
            }
        )
    return Scores(table, replicates)


def _two_sample_features(images: torch.Tensor, classifier: Any) -> np.ndarray:
    """The two-sample test's features: the pixels and the digits classifier's 64 hidden
    features (what it learned to recognise digits by, a nonlinear view of the pixels)."""
    pixels = images.detach().cpu().double().flatten(1).numpy()
    return np.concatenate([pixels, classifier.features(images)], axis=1)


def is_forecast(entry: dict[str, Any]) -> bool:
    """A row of the library's forecast schedules (not a peer)."""
    return str(entry["family"]).startswith(FORECAST_FAMILY)


def peer_indices(table: list[dict[str, Any]], seed: int | None = None) -> list[int]:
    """Indices of the peer rows: every method but the forecast and no cache, finite PSNR; of
    the methods that calibrate, only the rows calibrated on ``seed`` (all of them for ``None``).
    """
    return [
        i
        for i, r in enumerate(table)
        if r["family"] != "no cache"
        and not is_forecast(r)
        and r["psnr"] is not None
        and math.isfinite(r["psnr"])
        and (seed is None or r["calibration_seed"] in (None, seed))
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

    def __init__(self, scores: Scores, seed: int | None = None) -> None:
        self.table, self.replicates = scores.table, scores.replicates
        self.seed = seed
        self.index = peer_indices(self.table, seed)
        self.xs = np.array([self.table[i]["computed"] for i in self.index])
        self.ys = np.array([self.table[i]["psnr"] for i in self.index])

    def line(self, computed: float, row: int | None, target: float | None) -> dict[str, Any]:
        """The envelope at ``computed``, and the margin over it of table row ``row`` if given."""
        point = upper_envelope(self.xs, self.ys, computed)
        spread = upper_envelope(self.xs, self.replicates[self.index], computed).value
        left, right = self.table[self.index[point.left]], self.table[self.index[point.right]]
        line: dict[str, Any] = {
            "target": target,
            "seed": self.seed,
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
    envelopes: dict[int | None, PeerEnvelope] = {}
    lines, covered = [], set()
    for i, row in enumerate(scores.table):
        if not is_forecast(row):
            continue
        budget = budget_of(row)
        target = next((t for t in TARGETS if budget is not None and math.isclose(t, budget)), None)
        covered.add(target)
        seed = row["calibration_seed"]
        if seed not in envelopes:
            envelopes[seed] = PeerEnvelope(scores, seed)
        lines.append(envelopes[seed].line(row["computed"], i, target))
    for target in TARGETS:
        if target not in covered:
            lines.append(PeerEnvelope(scores).line(target, None, target))
    return sorted(lines, key=lambda line: (-(line["target"] or 0), -line["computed"]))


def over_seeds(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: the margins over the calibration seeds, their spread, and the lowest lower
    bound of their intervals (the margin's lower bound over evaluation samples *and*
    calibration seeds: every seed's interval must clear it)."""
    summary = []
    for target in TARGETS:
        mine = [line for line in lines if line["target"] == target and "margin" in line]
        if not mine:
            continue
        margins = [line["margin"] for line in mine]
        summary.append(
            {
                "target": target,
                "seeds": [line["seed"] for line in mine],
                "margins": margins,
                "spread": max(margins) - min(margins),
                "low": min(line["interval"][0] for line in mine),
                "high": max(line["interval"][1] for line in mine),
            }
        )
    return summary


def choice_margins(scores: Scores) -> list[dict[str, Any]]:
    """The library's forecast row at each target and calibration seed against every peer
    family's held-out choice at that target (same seed for a method that calibrates): the
    batch PSNR margin, its bootstrap interval, and what each side computed."""
    table, reps = scores.table, scores.replicates
    out = []
    for i, row in enumerate(table):
        target = budget_of(row) if is_forecast(row) else None
        if target is None or not any(math.isclose(target, t) for t in TARGETS):
            continue
        for j, peer in enumerate(table):
            if is_forecast(peer) or not any(math.isclose(target, b) for b in peer["chosen"]):
                continue
            if peer["calibration_seed"] not in (None, row["calibration_seed"]):
                continue
            out.append(
                {
                    "target": target,
                    "seed": row["calibration_seed"],
                    "peer": peer,
                    "row": row,
                    "margin": row["psnr"] - peer["psnr"],
                    "interval": interval(reps[i] - reps[j]),
                }
            )
    return out
