"""Paired tests between methods across cases (issue 22 item 8): Wilcoxon signed-rank (scipy), Holm
(known answers from statsmodels 0.15.0's multipletests), the matched-pairs rank-biserial effect."""

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from saliency_inspector.scoring.paired_tests import (bootstrap_mean_ci, compare_methods, holm, rank_biserial,
                                                      wilcoxon_paired)


def test_holm_equals_statsmodels_multipletests():
    # statsmodels.stats.multitest.multipletests(p, method="holm")[1], statsmodels 0.15.0
    assert holm([0.01, 0.04, 0.03, 0.005, 0.5, 0.02]) == pytest.approx([0.05, 0.09, 0.09, 0.03, 0.5, 0.08])
    assert holm([0.2, 0.01, 0.015, 0.9]) == pytest.approx([0.4, 0.04, 0.045, 0.9])
    # NaN (no test) stays NaN and is not counted in m
    out = holm([0.2, math.nan, 0.01, 0.015, 0.9])
    assert math.isnan(out[1]) and list(out[[0, 2, 3, 4]]) == pytest.approx([0.4, 0.04, 0.045, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_rank_biserial_hand_computed():
    # |d| ranks 1..4 (the zero dropped): R+ = 1 + 2 + 3 = 6, R- = 4 -> (6 - 4) / 10 (counts would say 0.5)
    assert rank_biserial([1, 2, 3, -4, 0]) == pytest.approx(0.2)
    # ties at average rank: |d| = 1, 2, 2, 3 -> ranks 1, 2.5, 2.5, 4; R- = 2.5 -> (7.5 - 2.5) / 10
    assert rank_biserial([1, 2, -2, 3]) == pytest.approx(0.5)
    assert rank_biserial([0.1, 0.3, 0.2]) == 1.0 and rank_biserial([-1, -2]) == -1.0
    assert math.isnan(rank_biserial([0, 0]))


def test_wilcoxon_paired_equals_scipy_and_the_exact_distribution():
    rng = np.random.default_rng(0)
    b = rng.random(12)
    a = b + rng.normal(0.05, 0.1, 12)
    out = wilcoxon_paired(a, b)
    reference = wilcoxon(a - b)
    assert out["p"] == pytest.approx(reference.pvalue) and out["statistic"] == pytest.approx(reference.statistic)
    assert out["n"] == 12 and out["mean_difference"] == pytest.approx(np.mean(a - b))
    assert out["ci_low"] < out["mean_difference"] < out["ci_high"]
    # every one of 8 distinct differences positive: exact two-sided p = 2 / 2^8, effect +1
    up = wilcoxon_paired(np.arange(8) * 0.01 + 1.0, np.zeros(8))
    assert up["p"] == pytest.approx(2 / 256) and up["rank_biserial"] == 1.0
    # missing values drop their pair; all-equal pairs give p = 1
    assert wilcoxon_paired([1, np.nan, 3], [0, 1, 2])["n"] == 2
    assert wilcoxon_paired([1, 2, 3], [1, 2, 3])["p"] == 1.0


def test_compare_methods_holm_verdicts_and_direction():
    cases = [f"c{i}" for i in range(10)]
    base = np.linspace(0.5, 0.8, 10)
    values = {"hirescam": {c: v + 0.1 + 0.01 * i for i, (c, v) in enumerate(zip(cases, base))},
              "gradcam": dict(zip(cases, base)),
              "gradient": {c: v + (0.02 if i % 2 else -0.02) * (1 + i) for i, (c, v) in enumerate(zip(cases, base))}}
    rows = {(r["method_a"], r["method_b"]): r for r in compare_methods(values, "roc_auc")}
    first = rows[("hirescam", "gradcam")]
    assert first["p"] == pytest.approx(2 / 1024)  # 10 positive differences, exact
    ps = [rows[k]["p"] for k in (("hirescam", "gradcam"), ("hirescam", "gradient"), ("gradcam", "gradient"))]
    assert [rows[k]["p_holm"] for k in rows] == pytest.approx(list(holm(ps)))
    assert first["verdict"] == "hirescam better than gradcam" and first["rank_biserial"] == 1.0
    assert rows[("gradcam", "gradient")]["verdict"] == "not significant"
    # lower is better (e.g. a distance): the same data crown the other method
    lower = {(r["method_a"], r["method_b"]): r for r in compare_methods(values, "peak", higher_is_better=False)}
    assert lower[("hirescam", "gradcam")]["verdict"] == "gradcam better than hirescam"
    # five cases cannot reach p < 0.05 whatever the data: said as such
    few = compare_methods({m: {c: v[c] for c in cases[:5]} for m, v in values.items()}, "roc_auc")
    assert {r["verdict"] for r in few} == {"too few cases (n < 6)"}


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(1).normal(1.0, 0.5, 40)
    assert bootstrap_mean_ci(x, seed=3) == bootstrap_mean_ci(x, seed=3)
    low, high = bootstrap_mean_ci(x, seed=3)
    assert low < x.mean() < high and high - low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(40), rel=0.25)


def test_a_raw_p_below_005_is_not_significant_after_holm():
    """8 cases, one negative difference of rank 3: exact p = 10/256 = 0.039; three pairs: Holm 0.117."""
    cases = [f"c{i}" for i in range(8)]
    b = np.linspace(0.5, 0.8, 8)
    d = np.array([0.1, 0.2, -0.3, 0.4, 0.5, 0.6, 0.7, 0.8]) * 0.01
    e = np.array([0.5, -0.6, 0.7, -0.8, 0.9, -1.0, 1.1, -1.2]) * 0.01
    rows = compare_methods({"a": dict(zip(cases, b + d)), "b": dict(zip(cases, b)), "c": dict(zip(cases, b + e))})
    first = rows[0]
    assert (first["method_a"], first["method_b"]) == ("a", "b")
    assert first["p"] == pytest.approx(10 / 256) and first["p_holm"] == pytest.approx(3 * 10 / 256)
    assert first["verdict"] == "not significant"
