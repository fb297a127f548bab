"""Statistics that say which differences between two methods are real (numpy and scipy only).

Two sources of uncertainty, two tools:

* Between seeds (the few-shot draw and the training noise): :func:`paired_seed_interval`, the
  Student-t interval of the mean per-seed difference of two methods run on the same seeds.
* Between test images (the test set is one sample of images): :func:`paired_bootstrap` for two runs
  on the same images, :func:`paired_bootstrap_seeds` for several seeds of two methods that share the
  test images, and :func:`mcnemar` (one pair of runs, a test rather than an interval).

Every interval is an :class:`Interval` of the difference ``a - b`` in the units of the inputs
(accuracies as fractions, as records store them; :meth:`Interval.format` prints points).
:func:`verdict` and :func:`reaches` turn an interval into the only words a results reading may use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

#: Replicates drawn by one child generator of :func:`bootstrap_differences`; the bootstrap's numbers
#: depend on the seed, ``n_boot`` and the data only, not on how the work is chunked for memory.
BOOT_BLOCK = 256

#: Below this many discordant pairs :func:`mcnemar` uses the exact binomial test (a common rule of
#: thumb, e.g. statsmodels' documentation of ``mcnemar``: the chi-square approximation needs b + c >= 25).
MCNEMAR_EXACT_BELOW = 25


class StatsInputError(ValueError):
    """Inputs of a statistic are inconsistent (lengths, shapes, values); the message says what."""


@dataclass(frozen=True)
class Interval:
    """A difference ``a - b`` with its confidence interval.

    Attributes:
        mean: the observed difference (mean per-seed difference, or difference of accuracies).
        low: lower end of the interval (NaN when it cannot be computed, e.g. one seed).
        high: upper end of the interval (NaN likewise).
        n: number of paired units (seeds for the t interval, images for the bootstrap).
        confidence: the interval's confidence level, e.g. 0.95.
        method: ``"t"`` (Student-t over seeds) or ``"bootstrap"`` (percentile, over images).
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str = "t"

    @property
    def defined(self) -> bool:
        """Whether the interval exists (``False`` with one seed: no spread to estimate)."""
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def excludes_zero(self) -> bool:
        """``True`` when the whole interval lies on one side of 0 (never for an undefined interval)."""
        return self.defined and (self.low > 0 or self.high < 0)

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 when below, 0 when it contains 0 or is undefined."""
        if not self.excludes_zero:
            return 0
        return 1 if self.low > 0 else -1

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when undefined)."""
        return (self.high - self.low) / 2

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        """``"+1.23 [-0.40, +2.86]"``: mean and interval times ``scale`` (100: fractions -> points).

        An undefined interval reads ``"+1.23 [no interval, n=1]"``.
        """
        m = f"{self.mean * scale:+.{digits}f}"
        if not self.defined:
            return f"{m} [no interval, n={self.n}]"
        return f"{m} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"

    def to_dict(self) -> dict[str, float | int | str | bool]:
        """JSON-able fields (NaN stays NaN) plus ``excludes_zero``."""
        return {"mean": float(self.mean), "low": float(self.low), "high": float(self.high), "n": int(self.n),
                "confidence": float(self.confidence), "method": self.method, "excludes_zero": self.excludes_zero}


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise StatsInputError(f"confidence must lie in (0, 1), got {confidence}")


def _paired_vectors(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise StatsInputError(f"{what} must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise StatsInputError(f"{what} must be paired (same length, same order), got {a.size} and {b.size}")
    if a.size == 0:
        raise StatsInputError(f"{what} are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise StatsInputError(f"{what} contain NaN or infinite values")
    return a, b


def paired_seed_interval(a, b, confidence: float = 0.95) -> Interval:
    """Mean per-seed difference ``a - b`` of two methods and its Student-t interval (n - 1 df).

    ``a[i]`` and ``b[i]`` must come from the same seed ``i`` (same few-shot draw): the interval is
    ``mean(d) +- t_{(1+confidence)/2, n-1} * sd(d) / sqrt(n)`` with ``d = a - b`` and ``sd`` the
    sample standard deviation (``ddof=1``), the interval of :func:`scipy.stats.ttest_rel`. With one
    seed there is no spread to estimate: ``low`` and ``high`` are NaN and :attr:`Interval.defined`
    is ``False``. All-equal differences give a zero-width interval at their value.

    Args:
        a: per-seed values of method A (e.g. top-1 accuracies as fractions).
        b: per-seed values of method B, same seeds in the same order.
        confidence: confidence level of the interval.
    """
    _check_confidence(confidence)
    a, b = _paired_vectors(a, b, "per-seed values")
    d = a - b
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, confidence, "t")
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, confidence, "t")


def _correctness(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        return x.astype(np.float64)
    x = x.astype(np.float64)
    if not np.isin(x, (0.0, 1.0)).all():
        raise StatsInputError(f"{what} must be per-image correctness (0/1 or bool)")
    return x


def bootstrap_differences(d, n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of ``mean(d)``: the images resampled with replacement, ``n_boot`` times.

    Vectorised in blocks of :data:`BOOT_BLOCK` replicates, block ``j`` drawn by the ``j``-th child of
    ``numpy.random.SeedSequence(seed)``: the result depends on ``d``, ``n_boot`` and ``seed`` only,
    and memory is bounded by one block (``BOOT_BLOCK x len(d)`` indices and values: about 33 MB for
    8,100 images, whatever ``n_boot``).

    Args:
        d: per-image values (e.g. correctness of A minus correctness of B), 1-D.
        n_boot: number of replicates.
        seed: seed of the resampling.

    Returns:
        ``[n_boot]`` float64 replicate means.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise StatsInputError(f"bootstrap needs a non-empty 1-D vector, got shape {d.shape}")
    if n_boot < 1:
        raise StatsInputError(f"n_boot must be >= 1, got {n_boot}")
    n = d.size
    out = np.empty(n_boot, dtype=np.float64)
    blocks = -(-n_boot // BOOT_BLOCK)
    for j, child in enumerate(np.random.SeedSequence(seed).spawn(blocks)):
        lo = j * BOOT_BLOCK
        rows = min(BOOT_BLOCK, n_boot - lo)
        idx = np.random.default_rng(child).integers(0, n, size=(rows, n))
        out[lo:lo + rows] = d[idx].mean(axis=1)
    return out


def _percentile_interval(d: np.ndarray, n_boot: int, seed: int, confidence: float) -> Interval:
    reps = bootstrap_differences(d, n_boot, seed)
    alpha = 1 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(float(d.mean()), float(low), float(high), int(d.size), confidence, "bootstrap")


def paired_bootstrap(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95) -> Interval:
    """Accuracy difference ``acc(a) - acc(b)`` of two runs on the same test images, with a paired
    bootstrap percentile interval.

    Each replicate resamples the test images with replacement (the same images for both runs, which
    is what makes it paired) and takes the difference of the two accuracies on the resample; the
    interval holds the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    replicates (Efron & Tibshirani, 1993, ch. 13). It measures the uncertainty due to the finite
    test set only, not the seed-to-seed variation (:func:`paired_seed_interval`).

    Args:
        correct_a: per-image correctness of run A (0/1 or bool), one entry per test image.
        correct_b: the same for run B, same images in the same order.
        n_boot: number of bootstrap replicates.
        seed: seed of the resampling (same seed, same interval).
        confidence: confidence level.

    Returns:
        :class:`Interval` with ``method="bootstrap"`` and ``n`` the number of images.
    """
    _check_confidence(confidence)
    a, b = _paired_vectors(_correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b"),
                           "correctness vectors")
    return _percentile_interval(a - b, n_boot, seed, confidence)


def paired_bootstrap_seeds(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0,
                           confidence: float = 0.95) -> Interval:
    """Mean over seeds of the accuracy differences of two methods, bootstrapped over the test images
    jointly across seeds.

    ``correct_a[s, i]`` is whether method A's seed-``s`` run classified test image ``i`` correctly
    (every seed is evaluated on the same images, in the same order; row ``s`` of A and of B share a
    seed). Each replicate draws one resample of image indices and applies it to every seed, then
    averages the per-seed accuracy differences. Because the mean over seeds of the per-seed means
    over the resampled images equals the mean over the resampled images of the per-image mean over
    seeds, this is :func:`paired_bootstrap`'s resampling applied to ``mean_s(a[s] - b[s])``. The
    interval is conditional on the seeds that were run: it adds the test-image uncertainty to the
    seed average, it does not estimate how another set of seeds would vary.

    Args:
        correct_a: ``[seeds, images]`` correctness of method A (0/1 or bool).
        correct_b: ``[seeds, images]`` correctness of method B.
        n_boot, seed, confidence: as in :func:`paired_bootstrap`.

    Returns:
        :class:`Interval` with ``method="bootstrap"`` and ``n`` the number of images.
    """
    _check_confidence(confidence)
    a = _correctness(correct_a, "correct_a")
    b = _correctness(correct_b, "correct_b")
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise StatsInputError(f"correctness matrices must be [seeds, images] of one shape, got {a.shape} and {b.shape}")
    return _percentile_interval((a - b).mean(axis=0), n_boot, seed, confidence)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two runs on one test set.

    Attributes:
        statistic: ``min(b, c)`` for the exact test, ``(|b - c| - 1)^2 / (b + c)`` for chi-square.
        pvalue: two-sided p-value.
        b: images run A got right and run B wrong.
        c: images run A got wrong and run B right.
        exact: whether the exact binomial test was used.
    """

    statistic: float
    pvalue: float
    b: int
    c: int
    exact: bool


def mcnemar(correct_a, correct_b, exact: bool | None = None) -> McNemarResult:
    """McNemar's test (McNemar, 1947) that two runs on the same test images are equally accurate.

    Only the discordant images count: ``b`` (A right, B wrong) and ``c`` (A wrong, B right). Under
    the null each discordant image is A's with probability 1/2. Exact test (default when
    ``b + c < 25``, or ``exact=True``): two-sided binomial p-value
    ``min(1, 2 * P[Bin(b + c, 1/2) <= min(b, c)])``. Otherwise (``exact=False``, or by default with
    ``b + c >= 25``): chi-square with continuity correction (Edwards, 1948),
    ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom. No discordant images: statistic 0, p = 1.

    Args:
        correct_a: per-image correctness of run A (0/1 or bool).
        correct_b: per-image correctness of run B, same images in the same order.
        exact: force the exact (``True``) or chi-square (``False``) test; ``None`` chooses by ``b + c``.
    """
    a, b_ = _paired_vectors(_correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b"),
                            "correctness vectors")
    b = int(np.sum((a == 1) & (b_ == 0)))
    c = int(np.sum((a == 0) & (b_ == 1)))
    n = b + c
    use_exact = n < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    if n == 0:
        return McNemarResult(0.0, 1.0, b, c, use_exact)
    if use_exact:
        k = min(b, c)
        p = min(1.0, 2.0 * float(sps.binom.cdf(k, n, 0.5)))
        return McNemarResult(float(k), p, b, c, True)
    stat = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(float(stat), float(sps.chi2.sf(stat, 1)), b, c, False)


Verdict = Literal["better", "worse", "no difference shown"]
Reach = Literal["reaches", "falls short", "not shown"]


def verdict(interval: Interval) -> Verdict:
    """The words a results reading may use for the difference ``a - b`` in ``interval``.

    ``"better"`` (A over B) when the whole interval lies above 0, ``"worse"`` when it lies below,
    else (it contains 0, or is undefined, e.g. one seed) ``"no difference shown"``: the data do not
    tell the two apart, which is not evidence that they are equal.
    """
    return {1: "better", -1: "worse", 0: "no difference shown"}[interval.sign]  # type: ignore[return-value]


def reaches(interval: Interval, margin: float) -> Reach:
    """Whether A "reaches" a reference B (e.g. the linear probe) within ``margin``.

    ``interval`` is of ``a - b`` (A minus the reference), ``margin >= 0`` in the same units (0.01 =
    one point for accuracies as fractions). ``"reaches"`` when the interval's lower end is
    ``>= -margin`` (A is at most ``margin`` below the reference, or above it, at the interval's
    confidence); ``"falls short"`` when the upper end is ``< -margin`` (A is more than ``margin``
    below); else, or for an undefined interval, ``"not shown"``.
    """
    if margin < 0:
        raise StatsInputError(f"margin must be >= 0, got {margin}")
    if not interval.defined:
        return "not shown"
    if interval.low >= -margin:
        return "reaches"
    if interval.high < -margin:
        return "falls short"
    return "not shown"
