"""Statistics of the quality benchmarks: batch PSNR, bootstrap, peer envelope, Fréchet distance.

Every row of ``benchmarks.quality_speed`` is scored by the mean squared error of each of its
evaluation samples against the uncached sample of the same seed (pixels in [-1, 1]). From those:

- :func:`psnr_db` -- the PSNR of a mean squared error; the *batch* PSNR is that of the mean over
  all samples (one broken sample counts), the per-sample PSNRs those of each sample's own error;
- :class:`Bootstrap` -- resamples of the evaluation samples with replacement, the same indices
  for every row in one replicate, so that rows (and an envelope of rows) are compared on the
  same draw;
- :func:`upper_envelope` -- the upper envelope of points in the plane (compute, PSNR) with
  linear interpolation between them: the least concave, non-decreasing function at or above
  every point;
- :func:`margin_interval` -- the bootstrap interval of one row's PSNR margin over another's
  (``benchmarks.schedule_search``);
- :func:`frechet_distance` -- between Gaussians fitted to two feature sets (the digits
  classifier's features of the samples and of the real digits);
- :func:`two_sample_accuracy` -- a classifier two-sample test of a row's samples against the
  uncached samples (0.5: indistinguishable).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

PEAK = 4.0  # squared range of pixels in [-1, 1]
TINY = 1e-30  # a replicate whose samples all match exactly would otherwise have PSNR inf


def sample_errors(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """The mean squared error of each sample of ``images`` against ``reference``, as float64."""
    diff = images.detach().cpu().double() - reference.detach().cpu().double()
    return (diff**2).flatten(1).mean(1).numpy()


def psnr_db(mse: np.ndarray | float) -> np.ndarray:
    """PSNR in dB of mean squared errors (any shape); ``inf`` where the error is 0."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(PEAK / mse)


@dataclass(frozen=True)
class Bootstrap:
    """Replicates of the evaluation samples drawn with replacement.

    ``counts[r, i]`` is how often sample ``i`` is drawn in replicate ``r``; every row uses the same
    ``counts``, so a difference between rows is measured on the same draw of samples.
    """

    counts: np.ndarray  # (replicates, samples), integers summing to ``samples`` per replicate

    @classmethod
    def draw(cls, samples: int, replicates: int, seed: int = 0) -> Bootstrap:
        """``replicates`` resamples of ``samples`` indices, drawn by a generator seeded ``seed``."""
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, samples, size=(replicates, samples))
        flat = (np.arange(replicates)[:, None] * samples + picks).ravel()
        counts = np.bincount(flat, minlength=replicates * samples).reshape(replicates, samples)
        return cls(counts)

    @property
    def replicates(self) -> int:
        """The number of replicates."""
        return int(self.counts.shape[0])

    def batch_psnr(self, errors: np.ndarray) -> np.ndarray:
        """Batch PSNR of every replicate: ``errors`` ``(rows, samples)`` -> ``(rows, replicates)``.

        A 1-D ``errors`` (one row) gives a 1-D result.
        """
        errors = np.asarray(errors, dtype=np.float64)
        means = errors @ self.counts.T / self.counts.shape[1]
        return psnr_db(np.maximum(means, TINY))


def interval(values: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values`` (5th to 95th for 0.9)."""
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Envelope:
    """The upper envelope of a set of points, evaluated at one abscissa.

    ``value`` holds one number per column of the ordinates it was evaluated on; ``left`` and
    ``right`` index the two points whose segment carries it for the first column (equal when one
    point carries it alone); ``clipped`` says the abscissa lay left of every point and the
    envelope was read at the leftmost point instead.
    """

    value: np.ndarray
    left: int
    right: int
    clipped: bool


def upper_envelope(xs: np.ndarray, ys: np.ndarray, x: float) -> Envelope:
    """The upper envelope at ``x`` of the points ``(xs[i], ys[i])`` (compute, quality).

    A point counts at its own abscissa and at every larger one (a method that computes less can
    be used wherever more compute is allowed), and any two points count along the segment
    between them: the envelope is the least concave, non-decreasing function at or above every
    point. At ``x`` that is the largest of ``ys[i]`` over ``xs[i] <= x`` and of the segments
    between two points ``xs[i] < x < xs[j]``. ``ys`` is ``(points,)`` or ``(points, columns)``
    (one column per bootstrap replicate, the same ``xs``); every column gets its own envelope.
    Left of every point, ``x`` is moved to the leftmost one.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    if len(xs) == 0:
        raise ValueError("the envelope of no points is undefined")
    columns = ys.reshape(len(xs), -1)
    at = max(float(x), float(xs.min()))
    clipped = at > x + 1e-12
    eps = 1e-12
    left, right = np.meshgrid(np.arange(len(xs)), np.arange(len(xs)), indexing="ij")
    left, right = left.ravel(), right.ravel()
    xl, xr = xs[left], xs[right]
    alone = (left == right) & (xl <= at + eps)
    spanning = (xl < at - eps) & (xr > at + eps)
    keep = alone | spanning
    left, right, xl, xr = left[keep], right[keep], xl[keep], xr[keep]
    weight = np.where(left == right, 0.0, (at - xl) / np.where(xr > xl, xr - xl, 1.0))
    values = (1.0 - weight)[:, None] * columns[left] + weight[:, None] * columns[right]
    best = values.argmax(0)
    value = values[best, np.arange(values.shape[1])]
    return Envelope(value, int(left[best[0]]), int(right[best[0]]), clipped)


def margin_interval(
    ours: np.ndarray | None, theirs: np.ndarray | None, draws: int = 2000
) -> tuple[float, float]:
    """5th and 95th percentile of the PSNR margin ``ours - theirs`` over bootstrap resamples.

    ``ours`` and ``theirs`` are two rows' per-sample squared errors. The evaluation samples are
    resampled with replacement, the same indices for both rows, so the interval says how much
    of a margin could come from which samples were drawn.
    """
    assert ours is not None and theirs is not None
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(ours), size=(draws, len(ours)))
    margins = 10 * np.log10(theirs[picks].mean(1) / ours[picks].mean(1))
    low, high = np.percentile(margins, [5, 95])
    return float(low), float(high)


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


def two_sample_accuracy(samples: np.ndarray, reference: np.ndarray, folds: int = 5) -> float:
    """Classifier two-sample test: how well a classifier trained here tells ``samples`` from
    ``reference`` (rows are samples; row ``i`` of both comes from the same noise and label).

    A logistic regression on the features, trained on ``folds - 1`` folds and scored on the
    last, in turn: the accuracy over all samples, 0.5 when the two sets cannot be told apart
    (its spread under that null is about ``0.5 / sqrt(2n)``: 1.1% for 1000 samples). Its
    features discriminate by construction: it is trained on exactly the difference between a
    method's samples and the uncached model's, where a classifier of the digits' classes
    ignores whatever does not change the class. The folds split the *pairs*, so a sample and
    its uncached twin are never one in training and the other in the test fold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    n = len(samples)
    features = np.concatenate([reference, samples]).astype(np.float64)
    labels = np.r_[np.zeros(n), np.ones(n)]
    pairs = np.r_[np.arange(n), np.arange(n)]
    correct = 0
    for train, test in GroupKFold(folds).split(features, labels, pairs):
        scale = StandardScaler().fit(features[train])
        model = LogisticRegression(max_iter=2000).fit(
            scale.transform(features[train]), labels[train]
        )
        correct += int((model.predict(scale.transform(features[test])) == labels[test]).sum())
    return correct / (2 * n)
