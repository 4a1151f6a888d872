"""The statistics behind pmbench's verdicts, all computed by scipy and numpy.

Three questions get an answer here:

- *Is B worse than A on the same questions?* Methods answer identical questions, so the
  difference is judged paired, per question: a bootstrap over questions of the mean
  difference (:func:`paired_difference`, ``scipy.stats.bootstrap(paired=True)``, BCa),
  McNemar's exact test on the discordant pairs of a 0/1 metric (:func:`mcnemar_exact`,
  the two-sided binomial test of ``scipy.stats.binomtest``, as statsmodels'
  ``mcnemar(exact=True)``), and a non-inferiority :func:`verdict` against a margin fixed
  in advance.
- *How sure is a throughput figure?* A 95% interval of the median over repeats
  (:func:`median_interval`) and of a ratio of medians (:func:`median_ratio_interval`), by
  the percentile bootstrap over repeats. With R repeats the median's interval can be no
  tighter than the order statistics allow: for R = 5 it is [min, max], a 94% interval
  (1 - 2 / 2^5) whatever the method, so more repeats buy a tighter one.
- *How long does a question wait?* Percentiles of per-question latencies
  (:func:`percentiles`, numpy's default linear interpolation).

Every resampling is seeded (``SEED``), so the same inputs give the same interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
VERDICTS = ("better", "non-inferior", "inconclusive", "inferior")


def _interval(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], *,
              paired: bool, method: str, seed: int, resamples: int) -> tuple[float, float]:
    """scipy's bootstrap interval; BCa falls back to the percentile method where its
    acceleration is undefined (scipy then returns NaN and warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # DegenerateDataWarning included
        res = stats.bootstrap(tuple(samples), statistic, paired=paired, vectorized=True,
                              n_resamples=resamples, confidence_level=CONFIDENCE,
                              method=method, rng=np.random.default_rng(seed))
    low, high = (float(x) for x in res.confidence_interval)
    if method != "percentile" and not (math.isfinite(low) and math.isfinite(high)):
        return _interval(samples, statistic, paired=paired, method="percentile", seed=seed,
                         resamples=resamples)
    return low, high


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(b - a, axis=axis)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of b - a over paired values, with its bootstrap interval (same units)."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    low: float
    high: float
    sd: float  # standard deviation of the per-question differences (ddof 1; 0 for n < 2)


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = SEED,
                      resamples: int = RESAMPLES) -> PairedDifference:
    """Δ = mean(b) - mean(a) over pairs (a[i], b[i]) and its 95% paired-bootstrap interval.

    When every pair differs by the same amount (identical outputs: all zero) no resample
    can differ, and the interval is that single value.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("paired values need two sequences of the same, non-zero length")
    diff = y - x
    delta = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    if np.ptp(diff) == 0 or len(diff) < 2:
        low = high = delta
    else:
        low, high = _interval((x, y), _mean_difference, paired=True, method="BCa",
                              seed=seed, resamples=resamples)
    return PairedDifference(len(x), float(x.mean()), float(y.mean()), delta, low, high, sd)


def _weighted_difference(a_sum, a_n, b_sum, b_n, axis: int = -1) -> np.ndarray:
    return b_sum.sum(axis) / b_n.sum(axis) - a_sum.sum(axis) / a_n.sum(axis)


def paired_weighted_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *,
                               seed: int = SEED, resamples: int = RESAMPLES
                               ) -> PairedDifference:
    """Δ of two token-weighted means over the same units: `a`, `b` are per unit [sum,
    count] (a held-out example's summed loss and its tokens), Δ = Σb_sum/Σb_n - Σa_sum/Σa_n,
    with the 95% paired-bootstrap interval resampling units (an example keeps its tokens
    together, as a mean of per-token differences would not). `sd`: of the per-unit
    differences of means."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 2 or len(x) == 0:
        raise ValueError("paired [sum, count] units: two equal, non-empty lists of pairs")
    if (x[:, 1] <= 0).any() or (y[:, 1] <= 0).any():
        raise ValueError("every unit needs a positive count")
    samples = (x[:, 0], x[:, 1], y[:, 0], y[:, 1])
    mean_a, mean_b = x[:, 0].sum() / x[:, 1].sum(), y[:, 0].sum() / y[:, 1].sum()
    diff = y[:, 0] / y[:, 1] - x[:, 0] / x[:, 1]
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    if len(x) < 2 or (np.array_equal(x, y)):
        low = high = float(mean_b - mean_a)
    else:
        low, high = _interval(samples, _weighted_difference, paired=True, method="BCa",
                              seed=seed, resamples=resamples)
    return PairedDifference(len(x), float(mean_a), float(mean_b), float(mean_b - mean_a),
                            low, high, sd)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts: questions only A got
    right (`a_only`) and only B got right (`b_only`). 1.0 when none are discordant."""
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue)


def verdict(low: float, high: float, margin: float) -> str:
    """Non-inferiority call on the interval [low, high] of Δ = B - A (units of `margin`):
    ``better`` when it lies above 0, ``non-inferior`` when its lower end is above
    -margin, ``inferior`` when its upper end is below -margin, else ``inconclusive``."""
    if margin < 0:
        raise ValueError("the margin is a non-negative distance")
    if low > 0:
        return "better"
    if low > -margin:
        return "non-inferior"
    if high < -margin:
        return "inferior"
    return "inconclusive"


def questions_to_decide(sd: float, margin: float) -> int | None:
    """Questions that make the interval's half-width equal to `margin` at the observed
    standard deviation `sd` of the per-question differences (normal approximation:
    z * sd / sqrt(n) = margin). None when nothing varies (sd 0) or the margin is 0."""
    if sd <= 0 or margin <= 0:
        return None
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return math.ceil((z * sd / margin) ** 2)


def median_ratio_interval(numerators: Sequence[Sequence[float]],
                          denominators: Sequence[Sequence[float]] = (), *, seed: int = SEED,
                          resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """95% interval of prod(median(numerators)) / prod(median(denominators)), resampling
    each sample's repeats independently (percentile bootstrap). A sample of one value is
    held fixed; None when no sample has two values (nothing to resample) or a value is
    not finite."""
    arrays = [np.asarray(s, dtype=float) for s in (*numerators, *denominators)]
    if not arrays or any(a.size == 0 or not np.all(np.isfinite(a)) for a in arrays):
        return None
    varying = [i for i, a in enumerate(arrays) if a.size > 1]
    if not varying:
        return None
    fixed = [float(np.median(a)) for a in arrays]
    n_num = len(numerators)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        med = list(fixed)
        for i, s in zip(varying, samples, strict=True):
            med[i] = np.median(s, axis=axis)
        num = math.prod(med[:n_num]) if n_num else 1.0
        return num / math.prod(med[n_num:]) if len(med) > n_num else num

    if all(np.ptp(arrays[i]) == 0 for i in varying):
        value = float(statistic(*(arrays[i] for i in varying)))
        return value, value
    return _interval([arrays[i] for i in varying], statistic, paired=False,
                     method="percentile", seed=seed, resamples=resamples)


def median_interval(values: Sequence[float], *, seed: int = SEED,
                    resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the median of `values` (repeats); None for
    fewer than two values."""
    if len(values) < 2:
        return None
    return median_ratio_interval([values], seed=seed, resamples=resamples)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def mean_interval(values: Sequence[float], *, seed: int = SEED,
                  resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """95% interval of the mean of per-question scores: Wilson's for 0/1 scores (exact
    coverage where the bootstrap collapses, as at 0 of n), else the BCa bootstrap; None
    for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    if np.isin(x, (0.0, 1.0)).all():
        ci = stats.binomtest(int(x.sum()), len(x)).proportion_ci(CONFIDENCE, "wilson")
        return float(ci.low), float(ci.high)
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    return _interval((x,), _mean, paired=False, method="BCa", seed=seed, resamples=resamples)


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50, p90, p99 and max of `values` (numpy's linear interpolation); None if empty."""
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(arr.max())}
