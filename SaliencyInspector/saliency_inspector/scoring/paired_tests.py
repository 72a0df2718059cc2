"""Paired tests of one method against another across cases: does it really score higher?

Wherever the product says one method beats another (the cohort report, ``compare_cohort``), the
claim is a paired Wilcoxon signed-rank test over the cases both methods were scored on
(``scipy.stats.wilcoxon``: zero differences dropped — its default ``zero_method="wilcox"`` —,
exact p for small samples without ties, the normal approximation otherwise), the p values of all
method pairs of one measure corrected together by Holm's step-down method, and the effect size:
the matched-pairs rank-biserial correlation r = (R⁺ − R⁻) / (R⁺ + R⁻) (Kerby 2014; +1: the first
method higher in every case, 0: no tendency), computed on the same non-zero differences the test
uses. Below 6 non-zero pairs no two-sided signed-rank test can reach p < 0.05 (the smallest exact
p with 5 pairs is 2/32 = 0.0625), so such a comparison says so instead of "not significant".

Holm (1979), as ``statsmodels.stats.multitest.multipletests(method="holm")`` computes it
(statsmodels/stats/multitest.py): sort the m p values ascending, multiply the i-th (from 0) by
m − i, take the running maximum, cap at 1. A known-answer test pins it to statsmodels' output.

A small percentile bootstrap of the mean paired difference (cases resampled, seeded) gives the
difference an interval to go with the test.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

ALPHA = 0.05
MIN_PAIRS = 6  # fewer non-zero pairs cannot reach two-sided p < 0.05
RESAMPLES = 2000
PAIR_KEYS = ("measure", "method_a", "method_b", "n", "n_nonzero", "mean_difference", "ci_low", "ci_high",
             "median_difference", "statistic", "p", "p_holm", "rank_biserial", "verdict")


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p values, in the input's order (NaN stays NaN and does not count in m)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def rank_biserial(differences) -> float:
    """Matched-pairs rank-biserial correlation of paired differences: (R⁺ − R⁻) / (R⁺ + R⁻) over the
    ranks of |d| (zeros dropped, ties at average rank); NaN when every difference is 0."""
    from scipy.stats import rankdata

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return math.nan
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def bootstrap_mean_ci(values, resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95) -> tuple:
    """Percentile-bootstrap interval of the mean of ``values`` (finite ones; cases resampled with
    ``np.random.default_rng(seed)``); (NaN, NaN) when there is none."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    means = x[np.random.default_rng(seed).integers(0, x.size, (resamples, x.size))].mean(1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def wilcoxon_paired(a, b, seed: int = 0) -> dict:
    """Paired Wilcoxon signed-rank test of ``a`` against ``b`` (same cases, same order; pairs with a
    missing value dropped): n, non-zero pairs, mean difference a − b with its bootstrap interval,
    median difference, scipy's statistic and two-sided p, the rank-biserial effect (positive: a higher)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same cases: {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    nonzero = int(np.count_nonzero(d))
    low, high = bootstrap_mean_ci(d, seed=seed)
    out = {"n": int(d.size), "n_nonzero": nonzero, "mean_difference": float(d.mean()) if d.size else math.nan,
           "ci_low": low, "ci_high": high, "median_difference": float(np.median(d)) if d.size else math.nan,
           "statistic": math.nan, "p": math.nan, "rank_biserial": rank_biserial(d)}
    if nonzero >= 1:
        result = wilcoxon(d[d != 0])  # zeros dropped here so that the effect and the test see the same pairs
        out.update(statistic=float(result.statistic), p=float(result.pvalue))
    elif d.size:
        out["p"] = 1.0  # every pair equal: no difference at all
    return out


def compare_methods(values: dict, measure: str = "", higher_is_better: bool = True, alpha: float = ALPHA,
                    seed: int = 0) -> list:
    """Every pair of methods compared across cases, Holm-corrected over the pairs of this measure.

    ``values``: method -> {case id -> value} (NaN/None: undefined in that case; only cases both
    methods have enter a pair). Returns one dict per pair (keys :data:`PAIR_KEYS`), ``method_a``
    before ``method_b`` in ``values``' order; ``verdict``: ``"A better than B"`` when the Holm-corrected
    p < ``alpha`` (better: higher, or lower when ``higher_is_better`` is False), ``"not significant"``,
    or ``"too few cases (n < 6)"``.
    """
    methods = list(values)
    rows = []
    for a, b in combinations(methods, 2):
        cases = [c for c in values[a] if c in values[b]]
        va = np.array([_number(values[a][c]) for c in cases], np.float64)
        vb = np.array([_number(values[b][c]) for c in cases], np.float64)
        rows.append({"measure": measure, "method_a": a, "method_b": b, **wilcoxon_paired(va, vb, seed=seed)})
    adjusted = holm([r["p"] for r in rows])
    for row, p_holm in zip(rows, adjusted):
        row["p_holm"] = float(p_holm)
        if row["n_nonzero"] < MIN_PAIRS:
            row["verdict"] = f"too few cases (n < {MIN_PAIRS})"
        elif p_holm < alpha:
            a_higher = row["rank_biserial"] > 0
            winner, loser = (row["method_a"], row["method_b"]) if a_higher == higher_is_better else \
                (row["method_b"], row["method_a"])
            row["verdict"] = f"{winner} better than {loser}"
        else:
            row["verdict"] = "not significant"
    return rows


def _number(value) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)
