"""Cohort statistics: per (method, class, segment, metric, group) n, mean, median and a bootstrap
confidence interval over cases; the model's own ROC AUC per class with its interval.

The interval is the percentile bootstrap of the mean over cases: ``resamples`` draws of n cases
with replacement, ``np.random.default_rng(seed).integers(0, n, (resamples, n))``, the mean of each
draw, and the 2.5th and 97.5th percentiles of those means (numpy's default linear interpolation).
A fresh generator with the same seed is used for every row, so rows over the same number of cases
share their resampling pattern (common random numbers: differences between methods are not blurred
by different draws), and any row can be checked with three lines of numpy.

Groups split the cases of a class by its label and by the model's prediction (p >= 0.5 for
multi-label models, the arg-max for single-label ones): ``all``, ``present`` / ``absent`` (label
1 / 0), ``correct`` / ``incorrect``, and the four outcomes ``tp`` / ``fp`` / ``fn`` / ``tn``. A
case with an undefined value (NaN: e.g. an empty mask) is left out of that row's n.
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
GROUPS = ("all", "present", "absent", "correct", "incorrect", "tp", "fp", "fn", "tn")
STAT_KEYS = ("method", "class", "segment", "metric", "group", "n", "mean", "median", "ci_low", "ci_high")
AUC_KEYS = ("class", "n", "positives", "roc_auc", "ci_low", "ci_high", "valid_resamples")
COMPARISON_KEYS = ("class", "segment", "metric", "method_a", "method_b", "n", "n_nonzero", "mean_difference",
                   "ci_low", "ci_high", "median_difference", "statistic", "p", "p_holm", "rank_biserial", "verdict")


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) case indices drawn with replacement: the resampling every interval uses."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_mean_ci(values, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE):
    """Percentile-bootstrap interval (low, high) of the mean of ``values`` (finite values only)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    means = _bootstrap_means(x[:, None], resamples, seed)[:, 0]
    return _percentiles(means, confidence)


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, R) means of the columns of ``values`` (n, R) over the same bootstrap draws.

    Many rows share one case set, so the draws are turned into per-case counts once and every
    column's resampled means come from one matrix product (counts @ values / n) instead of R
    gathers of resamples x n values: equal to ``values[idx].mean(1)`` up to summation order.
    """
    n = values.shape[0]
    idx = bootstrap_indices(n, resamples, seed)
    offsets = (np.arange(resamples) * n)[:, None]
    counts = np.bincount((idx + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)
    return counts.astype(np.float64) @ values / n


def _percentiles(means: np.ndarray, confidence: float):
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return float(low), float(high)


def case_groups(label, predicted) -> list:
    """The groups a (label, prediction) pair of one case and class belongs to (label None: unknown)."""
    groups = ["all"]
    if label is None:
        return groups
    groups.append("present" if label else "absent")
    if predicted is None:
        return groups
    groups.append("correct" if bool(predicted) == bool(label) else "incorrect")
    groups.append({(1, 1): "tp", (0, 1): "fp", (1, 0): "fn", (0, 0): "tn"}[(int(bool(label)), int(bool(predicted)))])
    return groups


def cohort_statistics(metric_rows, predictions, metrics, resamples: int = RESAMPLES, seed: int = 0,
                      confidence: float = CONFIDENCE) -> list:
    """One row per (method, class, segment, metric, group) with n, mean, median, ci_low, ci_high.

    ``metric_rows``: dicts with ``case_id``, ``method``, ``class``, ``segment`` and the metric keys
    (None or NaN: undefined); ``predictions``: dicts with ``case_id``, ``class``, ``label`` (0/1/None)
    and ``predicted`` (0/1); ``metrics``: the metric keys to summarise. Rows come out sorted by
    method, class, segment, metric and group (in :data:`GROUPS` order); groups with no case are left out.
    """
    outcome = {(p["case_id"], p["class"]): case_groups(p.get("label"), p.get("predicted")) for p in predictions}
    # (method, class, segment, group) -> case ids, values per metric
    cells: dict = {}
    for row in metric_rows:
        for group in outcome.get((row["case_id"], row["class"]), ["all"]):
            cell = cells.setdefault((row["method"], row["class"], row["segment"], group), [])
            cell.append([_as_float(row.get(m)) for m in metrics])
    out = []
    order = {g: i for i, g in enumerate(GROUPS)}
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2], order[k[3]])):
        values = np.asarray(cells[key], dtype=np.float64).reshape(-1, len(metrics))
        finite = np.isfinite(values)
        summaries = {}
        # columns with the same defined cases share one bootstrap product
        patterns: dict = {}
        for j in range(len(metrics)):
            patterns.setdefault(finite[:, j].tobytes(), []).append(j)
        for pattern, columns in patterns.items():
            keep = finite[:, columns[0]]
            block = values[keep][:, columns]
            n = block.shape[0]
            if n == 0:
                for j in columns:
                    summaries[j] = (0, math.nan, math.nan, math.nan, math.nan)
                continue
            means = _bootstrap_means(block, resamples, seed)
            tail = 100.0 * (1.0 - confidence) / 2.0
            lows, highs = np.percentile(means, [tail, 100.0 - tail], axis=0)
            for c, j in enumerate(columns):
                summaries[j] = (n, float(block[:, c].mean()), float(np.median(block[:, c])),
                                float(lows[c]), float(highs[c]))
        method, klass, segment, group = key
        for j, metric in enumerate(metrics):
            n, mean, median, low, high = summaries[j]
            out.append({"method": method, "class": klass, "segment": segment, "metric": metric, "group": group,
                        "n": n, "mean": mean, "median": median, "ci_low": low, "ci_high": high})
    return out


def roc_auc(labels, scores) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney U / (n1 n0), ties at average rank)."""
    return float(_auc_rows(np.asarray(scores, float)[None, :], np.asarray(labels, bool)[None, :])[0])


def _auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of (R, n) scores against the same-shaped boolean labels (NaN: one class only)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)  # average ranks for ties
    positives = labels.sum(axis=1).astype(np.float64)
    negatives = labels.shape[1] - positives
    u = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def model_auc(predictions, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> list:
    """Per class: the model's ROC AUC of its probabilities against the labels over the cohort, with a
    percentile-bootstrap interval over cases (draws holding one class only are skipped and counted).

    ``predictions``: dicts with ``case_id``, ``class``, ``label`` (0/1/None) and ``probability``.
    """
    by_class: dict = {}
    for p in predictions:
        if p.get("label") is not None and p.get("probability") is not None:
            by_class.setdefault(p["class"], []).append((float(p["probability"]), int(p["label"])))
    out = []
    for klass, pairs in by_class.items():
        scores = np.array([s for s, _ in pairs])
        labels = np.array([lab for _, lab in pairs], bool)
        n, positives = len(pairs), int(labels.sum())
        auc = roc_auc(labels, scores) if 0 < positives < n else math.nan
        low = high = math.nan
        valid = 0
        if 0 < positives < n:
            idx = bootstrap_indices(n, resamples, seed)
            aucs = _auc_rows(scores[idx], labels[idx])
            aucs = aucs[np.isfinite(aucs)]
            valid = int(aucs.size)
            if valid:
                low, high = _percentiles(aucs, confidence)
        out.append({"class": klass, "n": n, "positives": positives, "roc_auc": auc, "ci_low": low,
                    "ci_high": high, "valid_resamples": valid})
    return out


def _as_float(value) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)


def method_comparisons(metric_rows, metrics, higher_is_better=None, seed: int = 0) -> list:
    """Per (class, segment, metric): every pair of methods compared across the cases both were
    scored on (paired Wilcoxon signed-rank, Holm over the pairs of that metric, rank-biserial
    effect; :func:`scoring.paired_tests.compare_methods`). Keys: :data:`COMPARISON_KEYS`.

    ``metric_rows``: as for :func:`cohort_statistics`; ``higher_is_better``: metric -> bool
    (default True). Needs at least two methods; rows come out sorted by class, segment, metric.
    """
    from ..scoring.paired_tests import compare_methods

    better = higher_is_better or {}
    cells: dict = {}  # (class, segment) -> method -> metric -> {case: value}
    for row in metric_rows:
        per_method = cells.setdefault((row["class"], row["segment"]), {}).setdefault(row["method"], {})
        for m in metrics:
            per_method.setdefault(m, {})[row["case_id"]] = row.get(m)
    out = []
    for (klass, segment) in sorted(cells):
        methods = cells[(klass, segment)]
        if len(methods) < 2:
            continue
        for metric in metrics:
            values = {method: by_metric[metric] for method, by_metric in methods.items()}
            for pair in compare_methods(values, metric, better.get(metric, True), seed=seed):
                pair.pop("measure")
                out.append({"class": klass, "segment": segment, "metric": metric, **pair})
    return out
