"""Uncertainty of a trust verdict: seeded bootstrap intervals over the independent unit, and the rule
that turns an interval into PASS / FAIL / INCONCLUSIVE.

The unit resampled is always the one that is independent: cases, or cases behind pairs of cases
(:func:`bootstrap_pairs_ci` resamples the *cases* and weights each pair by how often both of its
cases were drawn), never voxels, fixations or windows. Percentile intervals (2.5 %, 97.5 %), numpy's
``default_rng(seed)``: the caller's global random state is neither read nor changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic, its 95 % bootstrap interval and the number of independent units behind it."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: Callable[..., Any] = np.mean,
                 resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """``statistic`` of ``values`` (one per independent unit) with its percentile bootstrap interval.

    ``statistic`` is called as ``statistic(array, axis=-1)`` on a (resamples, n) array when it accepts
    ``axis`` (numpy reductions do), else once per resample. With one value the interval is that
    value's point (no spread can be measured; :func:`verdict_from_interval` then needs ``min_n``)."""
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    value = float(statistic(x))
    idx = np.random.default_rng(seed).integers(0, x.size, size=(int(resamples), x.size))
    try:
        samples = np.asarray(statistic(x[idx], axis=-1), np.float64)
    except TypeError:
        samples = np.array([statistic(x[i]) for i in idx], np.float64)
    lo, hi = _percentiles(samples, level)
    return Interval(value, lo, hi, int(x.size))


def bootstrap_difference_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                            resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """mean(a) − mean(b) for two *independent* samples (e.g. one method's per-case SSIMs and the
    baseline's per-pair SSIMs), each resampled on its own; ``n`` is the smaller sample."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(int(resamples), a.size))
    ib = rng.integers(0, b.size, size=(int(resamples), b.size))
    lo, hi = _percentiles(a[ia].mean(1) - b[ib].mean(1), level)
    return Interval(float(a.mean() - b.mean()), lo, hi, int(min(a.size, b.size)))


def pair_mean_samples(values: Sequence[float] | np.ndarray, pairs: Sequence[tuple[int, int]], n_cases: int,
                      resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over pairs of cases, resampling the *cases*: each draw takes
    ``n_cases`` cases with replacement and weights pair (i, j) by count_i · count_j (pairs of the same
    case never exist). Draws where no pair survives are NaN."""
    v = np.asarray(values, np.float64).ravel()
    ij = np.asarray(pairs, int).reshape(-1, 2)
    counts = np.random.default_rng(seed).multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=int(resamples))
    weights = counts[:, ij[:, 0]] * counts[:, ij[:, 1]]
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights @ v) / np.maximum(total, 1), np.nan)


def bootstrap_pairs_ci(values: Sequence[float] | np.ndarray, pairs: Sequence[tuple[int, int]], n_cases: int,
                       resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Mean of ``values`` (one per pair of cases) with a bootstrap interval over the cases behind the
    pairs (:func:`pair_mean_samples`); ``n`` is the number of pairs."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    lo, hi = _percentiles(pair_mean_samples(v, pairs, n_cases, resamples, seed), level)
    return Interval(float(v.mean()), lo, hi, int(v.size))


def verdict_from_interval(low: float, high: float, threshold: float = 0.0, higher_passes: bool = True,
                          n: int | None = None, min_n: int = 1) -> str:
    """PASS when the whole interval is on the passing side of ``threshold``, FAIL when it is wholly
    on the other side, INCONCLUSIVE when it straddles (or touches) the threshold, is undefined, or
    rests on fewer than ``min_n`` independent units."""
    if (n is not None and n < min_n) or not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if higher_passes:
        return PASS if low > threshold else FAIL if high < threshold else INCONCLUSIVE
    return PASS if high < threshold else FAIL if low > threshold else INCONCLUSIVE
