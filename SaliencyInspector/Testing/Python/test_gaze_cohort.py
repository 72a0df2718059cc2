"""Cohort gaze (cohort/gaze.py, batch's fixations column): the centre bias is the mean of all images'
heatmaps on the body-box grid, sAUC's negatives are other images' fixations, intervals over images,
verdicts need enough images; end to end through `batch`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from saliency_inspector.cohort import gaze as cohort_gaze
from saliency_inspector.cohort.stats import bootstrap_mean_ci
from saliency_inspector.io.volume import Volume
from saliency_inspector.scoring import gaze

BOX = cohort_gaze.BOX


def _blob(centre, sigma):
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in BOX], indexing="ij")
    return np.exp(-0.5 * ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) / sigma ** 2)


def _fake_case(path, rng, spot, n_readers=3, maps=None):
    """A gaze.npz as write_case_gaze leaves it: readers look at the centre and at ``spot``."""
    centre, lesion = _blob((15.5, 15.5, 15.5), 5.0).ravel(), _blob(spot, 2.0).ravel()
    heatmaps, points, reader = [], [], []
    for r in range(n_readers):
        f = np.r_[rng.choice(centre.size, 40, p=centre / centre.sum()), rng.choice(centre.size, 25, p=lesion / lesion.sum())]
        h = ndimage.gaussian_filter(np.bincount(f, minlength=centre.size).reshape(BOX).astype(float), 2)
        heatmaps.append(h / h.sum())
        points.append(f)
        reader.append(np.full(f.size, r))
    maps = maps or {"map|spot|x": _blob(spot, 2.0), "map|centre|x": _blob((15.5, 15.5, 15.5), 5.0)}
    np.savez_compressed(path, region=np.ones(BOX, bool), heatmaps=np.stack(heatmaps).astype(np.float32),
                        fixations=np.concatenate(points), reader=np.concatenate(reader), readers=np.arange(n_readers),
                        sigma_mm=10.0, **{k: v.astype(np.float32) for k, v in maps.items()})
    return path


@pytest.fixture(scope="module")
def fake_cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaze_cohort")
    rng = np.random.default_rng(4)
    spots = [(5, 6, 24), (26, 8, 6), (6, 25, 7), (25, 26, 25), (8, 8, 8), (24, 6, 25), (6, 24, 26)]
    return [(f"c{i}", _fake_case(folder / f"c{i}.npz", rng, s)) for i, s in enumerate(spots)]


def test_centre_bias_negatives_and_ground_truth_follow_their_definitions(fake_cohort):
    from sklearn.metrics import roc_auc_score

    per_case, cohort, notes = cohort_gaze.cohort_gaze(fake_cohort, seed=0, resamples=500, n_bootstrap=100)
    data = [dict(np.load(p)) for _, p in fake_cohort]
    centre = np.mean([d["heatmaps"].mean(0) for d in data], axis=0).ravel()  # all images, aligned by the box
    centre /= centre.sum()
    d0 = data[0]
    s = d0["map|spot|x"].ravel().astype(np.float64)
    negatives = np.concatenate([d["fixations"] for d in data[1:]])  # the other images' fixations
    dens = [h.ravel().astype(np.float64) for h in d0["heatmaps"]]
    fix = [d0["fixations"][d0["reader"] == r] for r in range(3)]
    sauc, sncc = [], []
    for r in range(3):
        gt = np.mean([dens[o] for o in range(3) if o != r], axis=0)
        pos = np.concatenate([fix[o] for o in range(3) if o != r])
        sauc.append(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(negatives.size)], np.r_[s[pos], s[negatives]]))
        sncc.append(np.corrcoef(gt, s)[0, 1] - np.corrcoef(centre, s)[0, 1])
    row = next(r for r in per_case if r["case_id"] == "c0" and r["method"] == "spot")
    assert row["sauc"] == pytest.approx(np.mean(sauc), abs=1e-9)
    assert row["sncc"] == pytest.approx(np.mean(sncc), abs=1e-9)
    assert row["n_negatives"] == negatives.size and row["n_readers"] == 3
    # the cohort mean and its interval are over images
    spot = next(c for c in cohort if c["method"] == "spot" and c["metric"] == "sauc")
    values = [r["sauc"] for r in per_case if r["method"] == "spot"]
    assert spot["n"] == 7 and spot["mean"] == pytest.approx(np.mean(values))
    assert [spot["ci_low"], spot["ci_high"]] == pytest.approx(list(bootstrap_mean_ci(values, 500, 0)))
    assert spot["difference"] == pytest.approx(spot["mean"] - spot["inter_observer"], abs=1e-9)
    assert any("mean heatmap of all 7 images" in n for n in notes)


def test_the_centre_bias_as_a_map_is_at_chance_and_a_map_of_where_readers_looked_passes(fake_cohort):
    _, cohort, _ = cohort_gaze.cohort_gaze(fake_cohort, seed=0, resamples=500, n_bootstrap=100)
    by = {(c["method"], c["metric"]): c for c in cohort}
    assert by[("centre", "auc")]["mean"] > 0.7  # the centre predicts fixations …
    assert by[("centre", "sauc")]["verdict"] != gaze.PASS and by[("centre", "sauc")]["mean"] < 0.55  # … not this image's
    assert by[("spot", "sauc")]["verdict"] == gaze.PASS and by[("spot", "sncc")]["verdict"] == gaze.PASS
    _, few, _ = cohort_gaze.cohort_gaze(fake_cohort[:3], seed=0, resamples=500, n_bootstrap=100)
    spot_few = next(c for c in few if c["method"] == "spot" and c["metric"] == "sauc")
    assert spot_few["n"] == 3 and spot_few["verdict"] == gaze.INCONCLUSIVE and "at least 5" in spot_few["why"]


def test_body_box_grid_ignores_scanner_origin_and_storage_order():
    """The same body, shifted by 1000 mm or stored mirrored, gives the same body-box arrays."""
    from saliency_inspector.io.volume import resample_to

    body = np.zeros((20, 30, 40), bool)
    body[4:15, 5:25, 6:30] = True
    weight = np.zeros(body.shape, np.float32)
    weight[6:9, 8:12, 10:14] = 1.0  # something off-centre inside the body
    ref = Volume(np.zeros(body.shape, np.float32), spacing=(1.5, 1.0, 2.5), origin=(0.0, 0.0, 0.0))
    moved = Volume(ref.array, spacing=ref.spacing, origin=(1000.0, -1000.0, 1000.0))
    flipped = Volume(ref.array, spacing=ref.spacing, origin=(58.5, 0.0, 0.0), direction=np.diag([-1.0, 1.0, 1.0]))
    arrays = []
    for vol, b, w in ((ref, body, weight), (moved, body, weight), (flipped, body[:, :, ::-1], weight[:, :, ::-1])):
        box = cohort_gaze.body_box_grid(b, vol)
        arrays.append(resample_to(vol.with_array(w), box, "linear").array)
    assert np.allclose(arrays[0], arrays[1], atol=1e-6) and np.allclose(arrays[0], arrays[2], atol=1e-5)
    assert arrays[0].sum() > 0


@pytest.mark.slow
def test_batch_scores_gaze_from_the_manifest_fixations_column(tmp_path):
    """End to end: three readers per case look at the left lung; the cohort tables and page carry it."""
    from saliency_inspector.io.manifest import read_manifest, write_manifest
    from saliency_inspector.io.segments import read_segments
    from saliency_inspector.io.volume import read_volume
    from saliency_inspector.scoring.fixations import Fixations, sample_fixations, write_fixations_csv
    from saliency_inspector.synth.cohort import phantom_cohort
    from saliency_inspector.workflows.batch import batch

    manifest = phantom_cohort(tmp_path / "cohort", 5, seed=2, size=(40, 40, 28))
    rows = []
    for n, case in enumerate(read_manifest(manifest)):
        ct = read_volume(case.ct)
        lung = next(s for s in read_segments(case.paths["organs"], reference=ct) if s.name == "lung_left")
        target = ct.with_array(ndimage.gaussian_filter(lung.mask.astype(np.float32), 1.0))
        readers = [sample_fixations(target, 30, seed=10 * n + r, reader=f"r{r}") for r in range(3)]
        path = write_fixations_csv(Fixations.concat(readers), tmp_path / f"fx{n}.csv")
        rows.append({"case_id": case.case_id, "ct": str(case.ct), "organs": str(case.paths["organs"]),
                     "fixations": str(path), **{k: v for k, v in case.labels.items()}})
    labels = list(read_manifest(manifest).classes)
    with_fx = write_manifest(tmp_path / "manifest.csv", rows, ["case_id", "ct", "organs", "fixations", *labels])
    result = batch(with_fx, model="demo", out_dir=tmp_path / "out", workers=1, methods=("hirescam",),
                   classes=("lung_left",), resamples=200, progress=False)
    assert not result.failed, result.failed
    with open(tmp_path / "out" / "gaze_per_case.csv", newline="") as f:
        per_case = list(csv.DictReader(f))
    assert len(per_case) == 5 and {r["n_readers"] for r in per_case} == {"3"}
    with open(tmp_path / "out" / "gaze_cohort.csv", newline="") as f:
        cohort = {r["metric"]: r for r in csv.DictReader(f)}
    assert cohort["sauc"]["n"] == "5" and cohort["sauc"]["verdict"] in (gaze.PASS, gaze.FAIL, gaze.INCONCLUSIVE)
    assert float(cohort["auc"]["mean"]) > 0.5 and cohort["cc"]["inter_observer"] != ""
    data = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert data["gaze"]["statistics"] and "Agreement with readers' gaze" in (tmp_path / "out" / "report.html").read_text()
    record = json.loads((tmp_path / "out" / "cases" / "case0000" / "result.json").read_text())
    assert record["gaze"]["readers"] == ["r0", "r1", "r2"] and record["gaze"]["n_fixations"] > 0
