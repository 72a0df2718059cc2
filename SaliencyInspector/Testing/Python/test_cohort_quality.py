"""The mask-only map-quality metrics (Quantus's localisation and complexity families) over a cohort:
cohort.csv intervals, method_tests.csv with each metric's declared direction, the cohort page."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest

from saliency_inspector.cohort.case import BatchSettings
from saliency_inspector.scoring.quality import MAP_KEYS, QUALITY_METRICS, SEGMENT_KEYS
from saliency_inspector.synth.cohort import phantom_cohort
from saliency_inspector.workflows.batch import batch, write_cohort_tables

QUALITY = (*SEGMENT_KEYS, *MAP_KEYS)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def synthetic_done(n=8):
    """Two methods on n cases, one class: method 'a' has the higher localisation scores and sparseness
    and the LOWER complexity in every case, by case-dependent margins (no ties)."""
    done, cohort = {}, []
    for i in range(n):
        case_id = f"c{i}"
        cohort.append(SimpleNamespace(case_id=case_id, ct=f"{case_id}.nrrd"))
        rows = []
        for method, sign in (("hirescam", 1.0), ("gradcam", -1.0)):
            value = {k: 0.5 + sign * 0.01 * (i + 1) for k in QUALITY}
            value["complexity"] = 5.0 - sign * 0.1 * (i + 1)  # lower is better: 'hirescam' lower
            rows.append({"case_id": case_id, "method": method, "class": "liver", "segment": "liver",
                         "roc_auc": 0.5, **value})
        done[case_id] = {"rows": rows, "predictions": [{"case_id": case_id, "class": "liver", "label": i % 2,
                                                        "probability": 0.3 + 0.05 * i, "predicted": int(i > 3)}],
                         "gaze": None}
    return cohort, done


def test_quality_metrics_get_intervals_and_directed_paired_tests(tmp_path):
    cohort, done = synthetic_done()
    files, stats, _auc = write_cohort_tables(tmp_path, cohort, done, {}, BatchSettings(model="demo"),
                                             resamples=200, seed=3)
    rows = read_rows(files["cohort_csv"])
    for key in QUALITY:
        row = next(r for r in rows if r["metric"] == key and r["method"] == "hirescam" and r["group"] == "all")
        x = np.array([d["rows"][0][key] for d in done.values()])
        means = x[np.random.default_rng(3).integers(0, x.size, (200, x.size))].mean(1)
        assert int(row["n"]) == 8 and float(row["mean"]) == pytest.approx(x.mean(), abs=1e-12)
        assert float(row["ci_low"]) == pytest.approx(np.percentile(means, 2.5), abs=1e-9)
        assert float(row["ci_high"]) == pytest.approx(np.percentile(means, 97.5), abs=1e-9)
    tests = {t["metric"]: t for t in read_rows(files["method_tests"])}
    for key in QUALITY:  # 'hirescam' wins every metric once each direction is read from the registry
        assert tests[key]["verdict"] == "hirescam better than gradcam", (key, QUALITY_METRICS[key].higher_is_better)
    assert float(tests["complexity"]["mean_difference"]) < 0 < float(tests["sparseness"]["mean_difference"])
    page = files["report"].read_text()
    for key in QUALITY:
        assert QUALITY_METRICS[key].label in page
    assert "Map quality by label and prediction" in page


@pytest.mark.slow
def test_a_tiny_batch_reports_the_quality_metrics_per_case_and_per_cohort(tmp_path):
    manifest = phantom_cohort(tmp_path / "cohort", 3, seed=2, size=(24, 24, 16))
    result = batch(manifest, model="demo", out_dir=tmp_path / "out", methods=("hirescam", "gradcam"),
                   classes=["liver"], workers=1, resamples=200, progress=False)
    assert not result.failed
    per_case = read_rows(result.out_dir / "per_case.csv")
    assert per_case and all(k in per_case[0] for k in QUALITY)
    liver = [r for r in per_case if r["segment"] == "liver"]
    assert all(r["relevance_mass_accuracy"] != "" and 0 <= float(r["relevance_mass_accuracy"]) <= 1 for r in liver)
    stats = read_rows(result.out_dir / "cohort.csv")
    for key in QUALITY:
        mine = [s for s in stats if s["metric"] == key and s["segment"] == "liver" and s["group"] == "all"]
        assert {s["method"] for s in mine} == {"hirescam", "gradcam"}
        for s in mine:
            values = [float(r[key]) for r in liver if r["method"] == s["method"] and r[key] != ""]
            assert int(s["n"]) == len(values) == 3
            assert float(s["mean"]) == pytest.approx(np.mean(values), rel=1e-9)
            assert float(s["ci_low"]) <= float(s["mean"]) <= float(s["ci_high"])
            assert not math.isnan(float(s["ci_low"]))
    assert {t["metric"] for t in read_rows(result.out_dir / "method_tests.csv")} >= set(QUALITY)
