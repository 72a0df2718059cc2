"""`batch` over a phantom cohort: local and Ray give the same tables, resume, faults, bad input,
and the cohort statistics against direct numpy / scikit-learn computations."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal

import numpy as np
import pytest

import saliency_inspector as si
from saliency_inspector.cli import main
from saliency_inspector.cohort import case as case_module
from saliency_inspector.workflows.batch import batch
from saliency_inspector.cohort.executors import ProcessPoolCaseExecutor, RayExecutor
from saliency_inspector.cohort.stats import (bootstrap_indices, bootstrap_mean_ci, cohort_statistics,
                                             method_comparisons, model_auc, roc_auc)
from saliency_inspector.errors import InputError
from saliency_inspector.io.manifest import read_manifest, write_manifest
from saliency_inspector.io.segments import Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, read_volume
from saliency_inspector.synth.cohort import phantom_cohort

FAST = dict(model="demo", resamples=200, progress=False)  # the demo model takes any CT size


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return phantom_cohort(out, 6, seed=1, size=(40, 40, 28))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def copy_cohort(manifest, dest):
    shutil.copytree(manifest.parent, dest)
    return dest / manifest.name


# ---- local and Ray --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_two_workers(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("local2")
    return batch(cohort, out_dir=out, workers=2, keep_maps="ct", **FAST)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_processes_and_ray_actors_give_identical_tables(cohort, local_two_workers, ray_session, tmp_path):
    ray_out = tmp_path / "ray"
    result = batch(cohort, out_dir=ray_out, executor=RayExecutor(workers=2), keep_maps="ct", **FAST)
    local = local_two_workers.out_dir
    assert sorted(result.computed) == sorted(local_two_workers.computed) == [f"case{i:04d}" for i in range(6)]
    for name in ("per_case.csv", "predictions.csv", "cohort.csv", "model_auc.csv"):
        assert (ray_out / name).read_bytes() == (local / name).read_bytes(), name
    rows = read_rows(local / "per_case.csv")
    for case_id in result.computed:  # every (method, class) scored against every segment of the case
        mine = [r for r in rows if r["case_id"] == case_id]
        assert len(mine) == 2 * 4 * len({r["segment"] for r in mine})
    # maps were written by the workers, on each CT's own grid
    ct = read_volume(cohort.parent / "case0003" / "ct.nrrd")
    saved = read_volume(ray_out / "cases" / "case0003" / "maps" / "hirescam_liver.nrrd")
    assert saved.same_grid(ct)


@pytest.mark.slow
def test_a_killed_ray_worker_loses_only_its_case_and_no_row_is_duplicated(cohort, local_two_workers,
                                                                         ray_session, tmp_path):
    executor = RayExecutor(workers=2)
    killed = []

    def kill_the_workers(result):
        if not killed:  # after the first case: one actor is idle, the other busy with a case; kill both
            for pid in executor.worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    out = tmp_path / "ray-killed"
    result = batch(cohort, out_dir=out, executor=executor, on_result=kill_the_workers, keep_maps="ct", **FAST)
    assert killed
    if result.failed:  # Ray gave up on the case: a resume finishes it
        result = batch(cohort, out_dir=out, executor=RayExecutor(workers=2), keep_maps="ct", **FAST)
    assert not result.failed
    rows = read_rows(out / "per_case.csv")
    keys = [(r["case_id"], r["method"], r["class"], r["segment"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert (out / "per_case.csv").read_bytes() == (local_two_workers.out_dir / "per_case.csv").read_bytes()
    assert (out / "cohort.csv").read_bytes() == (local_two_workers.out_dir / "cohort.csv").read_bytes()


# ---- statistics -----------------------------------------------------------------------------------
def test_bootstrap_interval_equals_a_direct_numpy_computation():
    values = np.random.default_rng(7).normal(0.6, 0.1, 37)
    low, high = bootstrap_mean_ci(values, resamples=2000, seed=11)
    idx = np.random.default_rng(11).integers(0, values.size, size=(2000, values.size))
    means = values[idx].mean(axis=1)
    assert np.allclose([low, high], np.percentile(means, [2.5, 97.5]), rtol=0, atol=1e-12)
    assert np.array_equal(bootstrap_indices(values.size, 2000, 11), idx)


@pytest.mark.slow
def test_cohort_rows_equal_direct_computations_and_leave_undefined_values_out(local_two_workers):
    out = local_two_workers.out_dir
    rows, predictions = read_rows(out / "per_case.csv"), read_rows(out / "predictions.csv")
    for p in predictions:
        p["label"] = int(p["label"]) if p["label"] else None
        p["predicted"] = int(p["predicted"])
    rows[0]["roc_auc"] = ""  # one undefined value: n drops by one for that metric only
    stats = cohort_statistics(rows, predictions, ["roc_auc", "dice"], resamples=500, seed=3)
    key = (rows[0]["method"], rows[0]["class"], rows[0]["segment"])
    mine = {r["metric"]: r for r in stats if (r["method"], r["class"], r["segment"]) == key and r["group"] == "all"}
    for metric, cases in (("roc_auc", 5), ("dice", 6)):
        x = np.array([float(r[metric]) for r in rows if (r["method"], r["class"], r["segment"]) == key and r[metric]])
        assert mine[metric]["n"] == cases == x.size
        means = x[np.random.default_rng(3).integers(0, x.size, (500, x.size))].mean(axis=1)
        assert np.allclose([mine[metric]["ci_low"], mine[metric]["ci_high"]], np.percentile(means, [2.5, 97.5]),
                           rtol=0, atol=1e-12)
        assert mine[metric]["mean"] == pytest.approx(x.mean(), abs=1e-15)
        assert mine[metric]["median"] == pytest.approx(np.median(x), abs=1e-15)
    # the groups partition the labelled cases
    klass = key[1]
    labels = [p for p in predictions if p["class"] == klass]
    by_group = {r["group"]: r["n"] for r in stats if (r["method"], r["class"], r["segment"]) == key
                and r["metric"] == "dice"}
    assert by_group.get("present", 0) + by_group.get("absent", 0) == 6
    assert by_group.get("present", 0) == sum(p["label"] == 1 for p in labels)
    assert by_group.get("correct", 0) + by_group.get("incorrect", 0) == 6
    assert sum(by_group.get(g, 0) for g in ("tp", "fp", "fn", "tn")) == 6


def test_methods_are_compared_by_paired_tests_across_cases(tmp_path):
    """Per class, segment and metric: every method pair, paired Wilcoxon across the cases both have,
    Holm over the pairs, rank-biserial effect; the cohort page shows them with their verdicts."""
    from scipy.stats import wilcoxon

    from saliency_inspector.scoring.paired_tests import holm
    from saliency_inspector.view.cohort_report import write_cohort_report

    rng = np.random.default_rng(4)
    rows = []
    for i in range(12):
        base = rng.uniform(0.5, 0.8)
        for method, shift in (("hirescam", 0.1 + 0.01 * i), ("gradcam", 0.0), ("gradcampp", rng.normal(0, 0.05))):
            rows.append({"case_id": f"c{i}", "method": method, "class": "liver", "segment": "liver",
                         "roc_auc": base + shift, "peak_distance_mm": 10 - 10 * shift, "importance": "relu"})
    rows[0]["roc_auc"] = None  # undefined in one case: that case leaves the pairs of hirescam
    tests = method_comparisons(rows, ["roc_auc", "peak_distance_mm"], {"peak_distance_mm": False})
    auc = {(t["method_a"], t["method_b"]): t for t in tests if t["metric"] == "roc_auc"}
    assert len(tests) == 6 and set(auc) == {("hirescam", "gradcam"), ("hirescam", "gradcampp"),
                                            ("gradcam", "gradcampp")}
    a = [r["roc_auc"] for r in rows if r["method"] == "hirescam"][1:]
    b = [r["roc_auc"] for r in rows if r["method"] == "gradcam"][1:]
    assert auc[("hirescam", "gradcam")]["n"] == 11
    assert auc[("hirescam", "gradcam")]["p"] == pytest.approx(wilcoxon(np.subtract(a, b)).pvalue)
    assert [t["p_holm"] for t in auc.values()] == pytest.approx(list(holm([t["p"] for t in auc.values()])))
    assert auc[("hirescam", "gradcam")]["verdict"] == "hirescam better than gradcam"
    distance = {(t["method_a"], t["method_b"]): t for t in tests if t["metric"] == "peak_distance_mm"}
    assert distance[("hirescam", "gradcam")]["verdict"] == "hirescam better than gradcam"  # lower is better
    page = write_cohort_report(tmp_path / "report.html", stats=[], rows=rows, predictions=[], auc=[], errors=[],
                               metrics=["roc_auc"], case_pages={}, tests=tests).read_text()
    assert "Methods compared across cases" in page and "p (Holm)" in page
    assert "hirescam better than gradcam" in page and "HiResCAM: ReLU(map) (relu)" in page


@pytest.mark.slow
def test_batch_writes_the_method_tests(local_two_workers):
    out = local_two_workers.out_dir
    tests = read_rows(out / "method_tests.csv")
    assert tests and {(t["method_a"], t["method_b"]) for t in tests} == {("hirescam", "gradcam")}
    assert all(t["verdict"] in ("not significant", "too few cases (n < 6)") or "better than" in t["verdict"]
               for t in tests)
    assert "method_tests" in json.loads((out / "cohort.json").read_text())
    assert "Methods compared across cases" in (out / "report.html").read_text()
    assert {r["importance"] for r in read_rows(out / "per_case.csv")} == {"relu"}


def test_interval_shrinks_as_the_cohort_grows():
    rng = np.random.default_rng(0)
    population = rng.beta(5, 3, 100_000)
    widths = []
    for n in (10, 40, 160, 640):
        low, high = bootstrap_mean_ci(population[:n], seed=1)
        widths.append(high - low)
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    assert widths[0] / widths[-1] == pytest.approx(8.0, rel=0.35)  # about 1/sqrt(n)


def test_model_auc_matches_scikit_learn_and_its_interval_covers_it():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 80)
    scores = np.round(labels * 0.3 + rng.random(80), 2)  # rounded: ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    rows = [{"case_id": str(i), "class": "c", "label": int(y), "probability": float(s)}
            for i, (y, s) in enumerate(zip(labels, scores))]
    (auc,) = model_auc(rows, resamples=1000, seed=2)
    assert auc["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert auc["ci_low"] < auc["roc_auc"] < auc["ci_high"] and auc["valid_resamples"] == 1000
    idx = np.random.default_rng(2).integers(0, 80, (1000, 80))
    direct = [metrics.roc_auc_score(labels[i], scores[i]) for i in idx[:50]]
    from saliency_inspector.cohort.stats import _auc_rows
    assert np.allclose(_auc_rows(scores[idx[:50]], labels[idx[:50]].astype(bool)), direct, atol=1e-12)


# ---- resume ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_recomputes_only_what_changed(cohort, tmp_path, monkeypatch):
    counts = {"loads": 0, "explains": 0}
    load, explain = case_module.load_model, case_module.explain_case

    def counting_load(settings):
        counts["loads"] += 1
        return load(settings)

    def counting_explain(*args):
        counts["explains"] += 1
        return explain(*args)

    monkeypatch.setattr(case_module, "load_model", counting_load)
    monkeypatch.setattr(case_module, "explain_case", counting_explain)
    out = tmp_path / "run"
    first = si.batch(cohort, out_dir=out, **FAST)  # one worker: this process
    # one load checks the model on the driver before the first case, one is the worker's
    assert counts == {"loads": 2, "explains": 6} and len(first.computed) == 6
    tables = (out / "per_case.csv").read_bytes()

    counts.update(loads=0, explains=0)
    again = batch(cohort, out_dir=out, **FAST)
    assert counts == {"loads": 0, "explains": 0} and len(again.skipped) == 6  # nothing to do: no model loaded

    shutil.rmtree(out / "cases" / "case0004")
    resumed = batch(cohort, out_dir=out, **FAST)
    assert counts == {"loads": 2, "explains": 1}
    assert resumed.computed == ["case0004"] and len(resumed.skipped) == 5
    assert (out / "per_case.csv").read_bytes() == tables

    counts.update(loads=0, explains=0)
    changed = batch(cohort, out_dir=out, threshold="otsu", **FAST)
    assert counts == {"loads": 2, "explains": 6} and len(changed.computed) == 6 and not changed.skipped
    assert {r["threshold"] for r in read_rows(out / "per_case.csv")} == {"otsu"}


# ---- faults and bad input -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_corrupt_ct_and_masks_elsewhere_are_error_rows_and_the_rest_goes_on(cohort, tmp_path, capsys):
    manifest = copy_cohort(cohort, tmp_path / "cohort")
    (manifest.parent / "case0001" / "ct.nrrd").write_bytes(b"NRRD0004\nthis is not an image\n")
    organs_path = manifest.parent / "case0004" / "organs.seg.nrrd"
    organs = read_segments(organs_path)
    far = Volume(organs.grid.array, organs.grid.spacing, np.asarray(organs.grid.origin) + 5000.0,
                 organs.grid.direction)
    write_segments(Segments(list(organs), far), organs_path)

    out = tmp_path / "run"
    code = main(["batch", str(manifest), "--model", "demo", "--out", str(out), "--resamples", "200",
                 "--keep-maps", "feature"])
    err = capsys.readouterr().err
    assert code == 0
    assert "2 failed" in err and "warning: 2 case(s) failed" in err
    errors = {r["case_id"]: r["error"] for r in read_rows(out / "errors.csv")}
    assert set(errors) == {"case0001", "case0004"}
    assert "case0001" in errors and "\n" not in errors["case0001"] and errors["case0001"]
    assert "do not overlap" in errors["case0004"]
    done = {r["case_id"] for r in read_rows(out / "per_case.csv")}
    assert done == {"case0000", "case0002", "case0003", "case0005"}
    # --keep-maps feature: the raw maps on the model's feature grid, the same numbers explain() gives
    feature = read_volume(out / "cases" / "case0002" / "maps" / "gradcam_liver.feature.nrrd")
    ct = read_volume(manifest.parent / "case0002" / "ct.nrrd")
    expected = si.explain(si.load_classifier("demo"), ct, methods=["gradcam"], classes="liver")
    assert np.array_equal(feature.array, expected.raw[("gradcam", "liver")].array)
    assert feature.shape != ct.shape and not (out / "cases" / "case0002" / "maps" / "gradcam_liver.nrrd").exists()
    summary = json.loads((out / "batch.json").read_text())
    assert sorted(summary["failed"]) == ["case0001", "case0004"] and len(summary["computed"]) == 4


def test_every_case_failing_exits_1(cohort, tmp_path, capsys):
    manifest = copy_cohort(cohort, tmp_path / "cohort")
    for ct in manifest.parent.glob("case*/ct.nrrd"):
        ct.write_bytes(b"garbage")
    code = main(["batch", str(manifest), "--model", "demo", "--out", str(tmp_path / "run"), "--resamples", "200"])
    assert code == 1
    assert "every case failed" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "run" / "errors.csv")) == 6


@pytest.mark.slow
def test_a_broken_local_pool_gives_its_cases_to_a_fresh_one(cohort, tmp_path):
    executor = ProcessPoolCaseExecutor(2)
    killed = []

    def kill_a_worker(result):
        if not killed:
            import multiprocessing

            children = multiprocessing.active_children()
            if children:
                os.kill(children[0].pid, signal.SIGKILL)
                killed.append(children[0].pid)

    out = tmp_path / "run"
    result = batch(cohort, out_dir=out, executor=executor, on_result=kill_a_worker, **FAST)
    assert killed and not result.failed and len(result.computed) == 6
    keys = [(r["case_id"], r["method"], r["class"], r["segment"]) for r in read_rows(out / "per_case.csv")]
    assert len(keys) == len(set(keys)) and len({k[0] for k in keys}) == 6


def test_bad_manifest_is_reported_at_once_before_any_work(cohort, tmp_path, capsys):
    rows = [{"case_id": "a", "ct": str(cohort.parent / "case0000" / "ct.nrrd"), "liver": 1},
            {"case_id": "a", "ct": str(cohort.parent / "case0001" / "ct.nrrd"), "liver": 0},
            {"case_id": "b", "ct": "missing/ct.nrrd", "liver": 2}]
    manifest = write_manifest(tmp_path / "bad.csv", rows, ["case_id", "ct", "liver"])
    out = tmp_path / "run"
    assert main(["batch", str(manifest), "--model", "demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("saliency-inspector: error:")
    assert "duplicate case_id" in err and "missing/ct.nrrd does not exist" in err and "liver='2'" in err
    assert not out.exists()
    no_ct = write_manifest(tmp_path / "no_ct.csv", [{"case_id": "a", "liver": 1}], ["case_id", "liver"])
    with pytest.raises(InputError, match="missing column"):
        batch(no_ct, out_dir=out, **FAST)
    with pytest.raises(InputError, match="unknown method"):
        batch(cohort, out_dir=out, methods=["nope"], **FAST)
    with pytest.raises(InputError, match="'livr' is not one of the model's classes"):
        batch(cohort, out_dir=out, classes=["liver", "livr"], **FAST)
    before = (cohort.parent / "cohort.json").read_bytes()
    with pytest.raises(InputError, match="holds the manifest"):  # it would overwrite the generator's cohort.json
        batch(cohort, out_dir=cohort.parent, **FAST)
    assert (cohort.parent / "cohort.json").read_bytes() == before
    assert not out.exists()


def test_manifest_fixture_is_what_the_tests_assume(cohort):
    m = read_manifest(cohort)
    assert len(m) == 6 and m.classes == ["lung_left", "lung_right", "liver", "kidney"]


@pytest.mark.slow
def test_an_interrupted_run_loses_only_the_case_in_flight(cohort, tmp_path, monkeypatch):
    explain, calls = case_module.explain_case, []

    def interrupted_on_the_third_case(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third case is being explained
        return explain(*args)

    monkeypatch.setattr(case_module, "explain_case", interrupted_on_the_third_case)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        batch(cohort, out_dir=out, **FAST)
    assert not (out / "cases" / "case0002" / "result.json").exists()
    monkeypatch.setattr(case_module, "explain_case", explain)
    resumed = batch(cohort, out_dir=out, **FAST)
    assert resumed.skipped == ["case0000", "case0001"]
    assert resumed.computed == ["case0002", "case0003", "case0004", "case0005"] and not resumed.failed
