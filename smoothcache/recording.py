"""Recording calibration errors on the device: the running sums of one branch in one pass.

:class:`~smoothcache.calibration.Recorder` feeds every branch output to the :class:`Slot` of its
branch and pass; the slot compares it with the branch's earlier outputs and adds the errors to
running sums on the output's own device, with no host read. :func:`error_arrays` and
:func:`forecast_errors` read the sums back once, when the curves are asked for.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from smoothcache.measurements import Combo, ForecastErrors

# Floor of the denominator ||O_t||_1, so an all-zero output gives a large, finite error.
_TINY = 1e-12
# Initial per-slot step capacity; slots grow by doubling if a run is longer.
_CAPACITY = 64


class ForecastSums:
    """Running forecast-error statistics of one branch in one pass, on the outputs' device.

    ``weights`` is :func:`~smoothcache.measurements.combo_weights`' matrix (combos sorted by
    how far back they read, ``reaches``); at a step where the last ``d`` outputs are known, the
    combos with ``reach <= d`` are measured with one matrix product over those outputs.
    ``stats[0]``, ``stats[1]`` and ``stats[2]`` hold, per combo and step, the sum, the sum of
    squares and the largest of the per-sample errors; ``counts`` (host) the samples.

    ``gram[t, d]`` adds up, over samples, the inner product of the outputs at steps ``t`` and
    ``t - d`` (``d = 0 .. depth``; ``gram_counts`` the samples): the least-squares weights of
    any linear forecast from outputs within the window, and its exact error, follow from these
    numbers alone (:mod:`smoothcache.fitting`). Float64 where the device has it: the fit solves
    with nearly collinear outputs, where float32 sums would lose the differences.
    """

    def __init__(self, weights: np.ndarray, reaches: list[int], device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.weights = torch.from_numpy(weights).to(device=device, dtype=torch.float32)
        self.reaches = reaches
        self.depth = weights.shape[1] - 1  # outputs back; column 0 is the current one
        self.stats = torch.zeros(3, len(reaches), _CAPACITY, dtype=dtype, device=device)
        self.counts = np.zeros((len(reaches), _CAPACITY), dtype=np.int64)
        self.gram = torch.zeros(_CAPACITY, self.depth + 1, dtype=dtype, device=device)
        self.gram_counts = np.zeros((_CAPACITY, self.depth + 1), dtype=np.int64)

    def fit(self, capacity: int) -> None:
        """Grow the per-step statistics to ``capacity`` steps."""
        old = self.counts.shape[1]
        if capacity <= old:
            return
        stats = self.stats.new_zeros(3, len(self.reaches), capacity)
        stats[..., :old] = self.stats
        counts = np.zeros((len(self.reaches), capacity), dtype=np.int64)
        counts[:, :old] = self.counts
        self.stats, self.counts = stats, counts
        gram = self.gram.new_zeros(capacity, self.depth + 1)
        gram[:old] = self.gram
        gram_counts = np.zeros((capacity, self.depth + 1), dtype=np.int64)
        gram_counts[:old] = self.gram_counts
        self.gram, self.gram_counts = gram, gram_counts

    def record(
        self, step: int, values: torch.Tensor, norm: torch.Tensor, back: list[torch.Tensor]
    ) -> None:
        """Add the errors at ``step`` of every combo readable from ``back`` (newest first), and
        the inner products of ``values`` with itself and with ``back``."""
        self._add_gram(step, values, back)
        usable = bisect.bisect_right(self.reaches, len(back))
        if not usable:
            return
        depth = self.reaches[usable - 1]
        history = torch.stack([values, *(b.float() for b in back[:depth])])  # (1 + depth, ...)
        residuals = torch.einsum("cd,dbf->cbf", self.weights[:usable, : depth + 1], history)
        errors = torch.linalg.vector_norm(residuals, ord=1, dim=2)
        errors = errors / norm.clamp_min(_TINY)  # (combos, batch)
        dtype = self.stats.dtype
        self.stats[0, :usable, step].add_(errors.sum(1, dtype=dtype))
        self.stats[1, :usable, step].add_(errors.square().sum(1, dtype=dtype))
        worst = self.stats[2, :usable, step]
        torch.maximum(worst, errors.amax(1).to(dtype), out=worst)
        self.counts[:usable, step] += values.shape[0]

    def _add_gram(self, step: int, values: torch.Tensor, back: list[torch.Tensor]) -> None:
        """One inner product per output within the window (one kernel each, no stacking: a
        stack of the window would hold ``depth`` copies of a large model's output)."""
        wide = values.to(self.gram.dtype).reshape(-1)
        dots = [torch.dot(wide, wide)]
        dots += [torch.dot(wide, b.to(wide.dtype).reshape(-1)) for b in back[: self.depth]]
        self.gram[step, : len(dots)].add_(torch.stack(dots))
        self.gram_counts[step, : len(dots)] += values.shape[0]


class Slot:
    """Running error sums of one branch in one pass, on the device of the branch's outputs.

    ``sums[0, j - 1, t]`` and ``sums[1, j - 1, t]`` hold the sum and the sum of squares of the
    per-sample lag-``j`` errors at step ``t``; ``counts`` (host, plain numbers: batch sizes are
    known without reading the device) the number of samples behind them. ``mass[t]`` adds up
    ``||O_t||_1`` over samples: NaN or inf anywhere in an output makes it non-finite, which is how
    :meth:`Recorder.curves` finds bad outputs without a check per call. ``ring`` keeps
    ``(step, output)`` for the last ``lookahead`` outputs.
    """

    def __init__(
        self, lookahead: int, device: torch.device, forecast: ForecastSums | None = None
    ) -> None:
        self.lookahead = lookahead
        dtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        self.sums = torch.zeros(2, lookahead, _CAPACITY, dtype=dtype, device=device)
        self.mass = torch.zeros(_CAPACITY, dtype=dtype, device=device)
        self.counts = np.zeros((lookahead, _CAPACITY), dtype=np.int64)
        self.forecast = forecast
        depth = max(lookahead, forecast.depth if forecast is not None else 0)
        self.ring: deque[tuple[int, torch.Tensor]] = deque(maxlen=depth)

    def _fit(self, step: int) -> None:
        capacity = self.counts.shape[1]
        if step < capacity:
            return
        size = max(2 * capacity, step + 1)
        sums = self.sums.new_zeros(2, self.lookahead, size)
        sums[..., :capacity] = self.sums
        mass = self.mass.new_zeros(size)
        mass[:capacity] = self.mass
        counts = np.zeros((self.lookahead, size), dtype=np.int64)
        counts[:, :capacity] = self.counts
        self.sums, self.mass, self.counts = sums, mass, counts
        if self.forecast is not None:
            self.forecast.fit(size)

    def record(self, step: int, output: torch.Tensor) -> None:
        """Add the errors of ``output`` (batch first) against the buffered earlier outputs.

        About fifteen small kernels per call (two more per lag) and no host read: the lags are
        stacked, reduced together and added to the running sums with one in-place add.
        """
        self._fit(step)
        with torch.no_grad():
            current = output.detach().reshape(output.shape[0], -1)
            values = current.float()
            norm = torch.linalg.vector_norm(values, ord=1, dim=1)  # ||O_t||_1 per sample
            self.mass[step].add_(norm.sum(dtype=self.mass.dtype))
            # Newest first, so lags ascend. Samplers may change the batch between steps: a pair
            # of outputs of different shapes is not comparable and is skipped.
            pairs = [
                (step - before, previous)
                for before, previous in reversed(self.ring)
                if 1 <= step - before <= self.lookahead and previous.shape == current.shape
            ]
            if pairs:
                diffs = [
                    torch.linalg.vector_norm(torch.sub(values, previous), ord=1, dim=1)
                    for _, previous in pairs
                ]
                errors = torch.stack(diffs) / norm.clamp_min(_TINY)  # (lags, batch)
                dtype = self.sums.dtype
                stats = torch.stack(
                    (errors.sum(1, dtype=dtype), errors.square().sum(1, dtype=dtype))
                )
                lags = [lag for lag, _ in pairs]
                if lags[-1] - lags[0] == len(lags) - 1:  # consecutive: one add
                    self.sums[:, lags[0] - 1 : lags[-1], step].add_(stats)
                else:
                    for i, lag in enumerate(lags):
                        self.sums[:, lag - 1, step].add_(stats[:, i])
                for lag in lags:
                    self.counts[lag - 1, step] += current.shape[0]
            if self.forecast is not None:
                back = []  # the outputs 1, 2, ... steps back, as long as none is missing
                for before, previous in reversed(self.ring):
                    if before != step - len(back) - 1 or previous.shape != current.shape:
                        break
                    back.append(previous)
                self.forecast.record(step, values, norm, back)
            self.ring.append((step, current.clone()))  # a copy: callers may modify outputs


def error_arrays(
    slots: Sequence[Sequence[Slot]], passes: int, lookahead: int, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The slots' sums read back (the one device read): per branch and step whether an output
    held NaN or inf, and per branch, pass, lag and step the mean and standard deviation of the
    errors and the samples behind them (NaN where none)."""
    shape = (len(slots), passes, lookahead, steps)
    first = np.zeros(shape)
    second = np.zeros(shape)
    count = np.zeros(shape, dtype=np.int64)
    bad = np.zeros((len(slots), steps), dtype=bool)
    for b, branch_slots in enumerate(slots):
        for p, slot in enumerate(branch_slots):
            sums = slot.sums[..., :steps].to("cpu", torch.float64).numpy()
            first[b, p], second[b, p] = sums[0], sums[1]
            count[b, p] = slot.counts[:, :steps]
            bad[b] |= ~np.isfinite(slot.mass[:steps].to("cpu", torch.float64).numpy())
    seen = count > 0
    with np.errstate(over="ignore", invalid="ignore"):  # inf in a bad output: the caller raises
        mean = np.divide(first, count, out=np.full(shape, np.nan), where=seen)
        square = np.divide(second, count, out=np.full(shape, np.nan), where=seen)
        std = np.sqrt(np.maximum(square - mean * mean, 0.0))  # NaN where unseen stays NaN
    return bad, mean, std, count


def forecast_errors(
    slots: Sequence[Sequence[Slot]], combos: Sequence[Combo], passes: int, steps: int
) -> ForecastErrors:
    """The forecast statistics of every slot as :class:`ForecastErrors` (reads the device)."""
    shape = (len(slots), passes, len(combos), steps)
    stats = np.zeros((3, *shape))
    count = np.zeros(shape, dtype=np.int64)
    window = None
    for b, branch_slots in enumerate(slots):
        for p, slot in enumerate(branch_slots):
            sums = slot.forecast
            assert sums is not None
            stats[:, b, p] = sums.stats[..., :steps].to("cpu", torch.float64).numpy()
            count[b, p] = sums.counts[:, :steps]
            if window is None:
                gram_shape = (len(slots), passes, steps, sums.depth + 1)
                window = (np.zeros(gram_shape), np.zeros(gram_shape, dtype=np.int64))
            window[0][b, p] = sums.gram[:steps].to("cpu", torch.float64).numpy()
            window[1][b, p] = sums.gram_counts[:steps]
    seen = count > 0
    nan = np.full(shape, np.nan)
    mean = np.divide(stats[0], count, out=nan.copy(), where=seen)
    square = np.divide(stats[1], count, out=nan.copy(), where=seen)
    worst = np.where(seen, stats[2], np.nan)
    gram, gram_count = window if window is not None else (None, None)
    return ForecastErrors(
        tuple(combos), mean, square, worst, count, gram=gram, gram_count=gram_count
    )
