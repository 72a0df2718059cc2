"""Agreement with readers' gaze (scoring/gaze.py, fixations.py): pysaliency's metrics, known answers, coordinates, bad input."""

import importlib.util
import json

import numpy as np
import pytest
from scipy import ndimage

from saliency_inspector.errors import InputError
from saliency_inspector.scoring import fixations, gaze
from saliency_inspector.io.volume import Volume


def pysaliency_metrics():
    """pysaliency's own metrics module, loaded from its file: `import pysaliency` itself needs
    pkg_resources (gone from setuptools >= 81) for its MATLAB model wrappers, which metrics.py does not use."""
    spec = importlib.util.find_spec("pysaliency")
    if spec is None:
        pytest.skip("pysaliency is not installed (pip install -e '.[test]')")
    path = next(iter(spec.submodule_search_locations)) + "/metrics.py"
    module_spec = importlib.util.spec_from_file_location("pysaliency_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def blob_map(centres_mm, shape=(30, 40, 44), spacing=(2.0, 2.0, 3.0), sigma_mm=8.0, direction=None):
    """A map of Gaussian blobs at physical points (LPS mm), on an anisotropic (optionally flipped) grid."""
    vol = Volume(np.zeros(shape, np.float32), spacing=spacing, direction=direction,
                 origin=(0.0, 0.0, 0.0) if direction is None else (86.0, 0.0, 0.0))
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    pts = vol.index_to_physical(np.stack([i, j, k], -1))
    m = np.zeros(shape)
    for c in centres_mm:
        m += np.exp(-0.5 * np.sum((pts - np.asarray(c)) ** 2, -1) / sigma_mm ** 2)
    return vol.with_array(m.astype(np.float32))


def test_nss_cc_kl_sim_equal_pysaliency_on_the_same_arrays():
    ps = pysaliency_metrics()
    rng = np.random.default_rng(0)
    s = ndimage.gaussian_filter(rng.random((12, 14, 16)), 2)
    gt = ndimage.gaussian_filter(rng.random((12, 14, 16)), 3)
    assert gaze.cc(s, gt) == pytest.approx(ps.CC(s, gt), abs=1e-12)
    assert gaze.kl(s, gt) == pytest.approx(ps.image_based_kl_divergence(s, gt), abs=1e-12)
    assert gaze.sim(s, gt) == pytest.approx(ps.SIM(s, gt), abs=1e-12)
    signed = s - 0.5  # negative values: both shift by the minimum
    assert gaze.kl(signed, gt) == pytest.approx(ps.image_based_kl_divergence(signed, gt), abs=1e-12)
    flat = s.reshape(1, -1)  # pysaliency's NSS indexes (ys, xs) of a 2D map: use a 1 x N view of the volume
    idx = rng.integers(0, flat.shape[1], 50)
    theirs = ps.NSS(flat, idx, np.zeros_like(idx)).mean()
    assert gaze.nss(s, s.ravel()[idx]) == pytest.approx(theirs, abs=1e-12)
    assert gaze.cc(np.ones(5), np.arange(5.0)) == ps.CC(np.ones(5), np.arange(5.0)) == 0.0


def test_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 70).astype(float)
    y = np.r_[np.ones(40), np.zeros(70)]
    assert gaze.auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


@pytest.fixture(scope="module")
def reader_case():
    lesion = blob_map([(20.0, 30.0, 30.0), (60.0, 55.0, 70.0)], sigma_mm=6.0)
    rng = np.random.default_rng(7)
    unrelated = lesion.with_array(ndimage.gaussian_filter(rng.random(lesion.shape), 3).astype(np.float32))
    fx = fixations.sample_fixations(lesion, 400, seed=3, reader="r1")
    fx2 = fixations.sample_fixations(lesion, 300, seed=4, reader="r2")
    both = fixations.Fixations.concat([fx, fx2])
    return lesion, unrelated, both


def test_fixations_drawn_from_a_map_agree_with_it_and_not_with_an_unrelated_map(reader_case):
    lesion, unrelated, fx = reader_case
    own = gaze.compare_with_gaze(lesion, fx, sigma_mm=6.0, seed=0, n_bootstrap=200)
    other = gaze.compare_with_gaze(unrelated, fx, sigma_mm=6.0, seed=0, n_bootstrap=200)
    assert own.metrics["nss"] > 2 and own.metrics["sauc"] > 0.5 and own.intervals["sauc"][0] > 0.5
    assert own.metrics["cc"] > 0.8 and own.metrics["sim"] > 0.6 and own.metrics["auc"] > 0.9
    assert abs(other.metrics["nss"]) < 0.3 and abs(other.metrics["sauc"] - 0.5) < 0.08
    assert own.metrics["kl"] < other.metrics["kl"]
    # two readers drawn from the same map: the inter-observer baseline is high, with an interval
    assert own.readers == ["r1", "r2"]
    assert own.inter_observer["nss"] > 2 and own.inter_observer_intervals["nss"][0] <= own.inter_observer["nss"]
    # seeded: the same call gives the same numbers
    again = gaze.compare_with_gaze(lesion, fx, sigma_mm=6.0, seed=0, n_bootstrap=200)
    assert again.metrics == own.metrics and again.intervals == own.intervals


def test_density_is_a_duration_weighted_gaussian_inside_the_body():
    grid = Volume(np.zeros((20, 20, 20), np.float32), spacing=(2.0, 2.0, 2.0))
    body = np.zeros(grid.shape, bool)
    body[:, :, :10] = True
    centre = grid.index_to_physical(np.array([[5.0, 10.0, 10.0], [14.0, 10.0, 10.0]]))
    fx = fixations.Fixations(centre, np.array([3.0, 1.0]), np.array(["a", "a"], dtype=object))
    d = gaze.density(fx, grid, body, sigma_mm=4.0)
    assert d.sum() == pytest.approx(1.0) and not d[~body].any()
    assert d[10, 10, 5] > d[10, 10, 2] > 0  # peak at the first fixation, Gaussian fall-off
    # the weights: without the body, the two peaks stand 3 : 1
    free = gaze.density(fx, grid, None, sigma_mm=4.0)
    assert free[10, 10, 5] / free[10, 10, 14] == pytest.approx(3.0, rel=1e-3)


def test_ras_and_lps_files_and_markups_give_the_same_numbers(reader_case, tmp_path):
    lesion, _, fx = reader_case
    flipped = blob_map([(20.0, 30.0, 30.0), (60.0, 55.0, 70.0)], sigma_mm=6.0, direction=np.diag([-1.0, 1.0, 1.0]))
    lps = fixations.write_fixations_csv(fx, tmp_path / "lps.csv", "LPS")
    ras = fixations.write_fixations_csv(fx, tmp_path / "ras.csv", "RAS")
    plain = tmp_path / "ras_plain.csv"  # no '# space:' line: the space comes from the option
    plain.write_text("\n".join(ras.read_text().splitlines()[1:]) + "\n")
    a, b = fixations.read_fixations(lps), fixations.read_fixations(ras)
    c = fixations.read_fixations(plain, space="RAS")
    assert np.allclose(a.points, b.points) and np.allclose(a.points, c.points)
    assert not np.allclose(fixations.read_fixations(plain).points, a.points)  # read as LPS: mirrored
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                          "Resources/Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "name": r, "coordinateSystem": "RAS", "coordinateUnits": "mm",
                            "controlPoints": [{"id": str(n), "position": [-p[0], -p[1], p[2]],
                                               "positionStatus": "defined"}
                                              for n, p in enumerate(fx.points[fx.reader == r])]}
                           for r in fx.readers]}
    path = tmp_path / "gaze.mrk.json"
    path.write_text(json.dumps(markups))
    m = fixations.read_fixations(path)
    assert np.allclose(m.points, a.points, atol=1e-3) and m.readers == ["r1", "r2"]
    for volume in (lesion, flipped):  # the same physical map stored flipped
        results = [gaze.compare_with_gaze(volume, f, sigma_mm=6.0, seed=0, n_bootstrap=50).metrics for f in (a, b, m)]
        assert results[0] == pytest.approx(results[1], abs=1e-9) == results[2]
    r_plain = gaze.compare_with_gaze(lesion, a, sigma_mm=6.0, seed=0, n_bootstrap=50).metrics
    r_flip = gaze.compare_with_gaze(flipped, a, sigma_mm=6.0, seed=0, n_bootstrap=50).metrics
    assert r_plain["nss"] == pytest.approx(r_flip["nss"], rel=0.05)


def test_fixations_outside_the_ct_are_counted_dropped_and_said(reader_case):
    lesion, _, fx = reader_case
    far = fixations.Fixations(np.array([[-500.0, 0, 0], [0, 900.0, 0]]), np.ones(2),
                              np.array(["r1", "r1"], dtype=object))
    mixed = fixations.Fixations.concat([fx, far])
    res = gaze.compare_with_gaze(lesion, mixed, sigma_mm=6.0, seed=0, n_bootstrap=20)
    assert any("2 of 702 fixations lie outside the CT and were dropped" in n for n in res.notes), res.notes
    assert res.n_fixations == 700
    with pytest.raises(InputError, match="none of the 2 fixations"):
        gaze.compare_with_gaze(lesion, far, sigma_mm=6.0)


def test_bad_fixation_files_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("# space: LPS\n\n")
    with pytest.raises(InputError, match="empty"):
        fixations.read_fixations(empty)
    header_only = tmp_path / "h.csv"
    header_only.write_text("x,y,z\n")
    with pytest.raises(InputError, match="no fixations"):
        fixations.read_fixations(header_only)
    wrong = tmp_path / "w.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="x, y, z"):
        fixations.read_fixations(wrong)
    conflict = tmp_path / "c.csv"
    conflict.write_text("# space: RAS\nx,y,z\n1,2,3\n")
    with pytest.raises(InputError, match="remove one"):
        fixations.read_fixations(conflict, space="LPS")
    no_points = tmp_path / "none.mrk.json"
    no_points.write_text(json.dumps({"@schema": "x", "markups": [{"type": "Fiducial", "controlPoints": []}]}))
    with pytest.raises(InputError, match="no control points"):
        fixations.read_fixations(no_points)


def test_a_reader_heatmap_volume_is_accepted(reader_case, tmp_path):
    from saliency_inspector.io.volume import write_volume

    lesion, unrelated, _ = reader_case
    path = write_volume(lesion, tmp_path / "heatmap.nrrd")
    heat = fixations.read_attention(path)
    own = gaze.compare_with_gaze(lesion, heat, sigma_mm=6.0, seed=0, n_bootstrap=50)
    other = gaze.compare_with_gaze(unrelated, heat, sigma_mm=6.0, seed=0, n_bootstrap=50)
    assert own.metrics["cc"] == pytest.approx(1.0, abs=1e-9) and own.metrics["sim"] == pytest.approx(1.0, abs=1e-9)
    assert own.metrics["kl"] == pytest.approx(0.0, abs=1e-9) and own.metrics["nss"] > 2
    assert abs(other.metrics["cc"]) < 0.2 and own.readers == ["heatmap"] and own.inter_observer is None
    assert any("heatmap" in n for n in own.notes)


# ---- the reference code's definitions on synthetic readers (etsaliencymaps, compare_heatmaps.py) ----
def _random_density(rng, n):
    d = ndimage.gaussian_filter(rng.random(n), 3)
    return d / d.sum()


def test_ground_truth_is_the_mean_of_the_other_readers_and_the_baseline_is_paired_per_reader():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    n = 400
    s = ndimage.gaussian_filter(rng.random(n), 4)
    dens = [_random_density(rng, n) for _ in range(3)]
    fix = [rng.choice(n, 20 + 10 * r, p=dens[r]) for r in range(3)]
    centre = _random_density(rng, n)
    negatives = rng.integers(0, n, 60)
    res = gaze.score_image(s, dens, fix, centre, negatives, seed=0, n_bootstrap=200)
    model, inter = [], []
    for r in range(3):  # by hand: leave reader r out; the others' heatmaps averaged (each sums to 1)
        gt = (dens[(r + 1) % 3] + dens[(r + 2) % 3]) / 2
        pos = np.concatenate([fix[(r + 1) % 3], fix[(r + 2) % 3]])
        y = np.r_[np.ones(pos.size), np.zeros(negatives.size)]
        model.append({"cc": np.corrcoef(s, gt)[0, 1], "sncc": np.corrcoef(s, gt)[0, 1] - np.corrcoef(s, centre)[0, 1],
                      "sauc": roc_auc_score(y, np.r_[s[pos], s[negatives]])})
        inter.append({"cc": np.corrcoef(dens[r], gt)[0, 1],
                      "sauc": roc_auc_score(y, np.r_[dens[r][pos], dens[r][negatives]])})
    for key in ("cc", "sncc", "sauc"):
        assert res.metrics[key] == pytest.approx(np.mean([m[key] for m in model]), abs=1e-12)
    for key in ("cc", "sauc"):
        assert res.inter_observer[key] == pytest.approx(np.mean([i[key] for i in inter]), abs=1e-12)
        assert res.difference[key] == pytest.approx(res.metrics[key] - res.inter_observer[key], abs=1e-12)
    assert res.n_readers == 3 and res.n_fixations == 20 + 30 + 40
    lo, hi = res.intervals["cc"]
    assert min(m["cc"] for m in model) - 1e-12 <= lo <= res.metrics["cc"] <= hi <= max(m["cc"] for m in model) + 1e-12


def test_sauc_without_other_images_weights_every_voxel_by_the_centre_bias():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    s = rng.integers(0, 8, 300).astype(float)  # ties
    centre = _random_density(rng, 300)
    pos = rng.integers(0, 300, 50)
    y = np.r_[np.ones(50), np.zeros(300)]
    expected = roc_auc_score(y, np.r_[s[pos], s], sample_weight=np.r_[np.full(50, 1 / 50), centre])
    res = gaze.score_image(s, [np.full(300, 1 / 300)], [pos], centre, None)
    assert res.metrics["sauc"] == pytest.approx(expected, abs=1e-12)
    assert gaze.auc(s[pos], s, centre) == pytest.approx(expected, abs=1e-12)


def test_a_centre_bias_map_scores_auc_high_but_shuffled_auc_at_chance():
    """Readers of every image look near the centre: the centre bias itself predicts this image's
    fixations (AUC high) but no better than other images' (sAUC ≈ 0.5, sNCC ≈ 0). On an image whose
    readers also look at a lesion, a map of the lesion beats the centre bias on sAUC and sNCC."""
    rng = np.random.default_rng(11)
    shape = (24, 24, 24)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = np.exp(-0.5 * ((zz - 11.5) ** 2 + (yy - 11.5) ** 2 + (xx - 11.5) ** 2) / 4.0 ** 2).ravel()
    centre /= centre.sum()
    lesion = np.exp(-0.5 * ((zz - 5) ** 2 + (yy - 18) ** 2 + (xx - 6) ** 2) / 2.0 ** 2).ravel()
    others = rng.choice(centre.size, 2000, p=centre)  # fixations of the other images

    def readers_and_heatmaps(with_lesion):
        readers = [np.r_[rng.choice(centre.size, 60, p=centre),
                         rng.choice(centre.size, 30 if with_lesion else 0, p=lesion / lesion.sum())] for _ in range(4)]
        dens = []
        for f in readers:
            d = ndimage.gaussian_filter(np.bincount(f, minlength=centre.size).reshape(shape).astype(float), 2).ravel()
            dens.append(d / d.sum())
        return dens, readers

    plain = readers_and_heatmaps(False)
    by_centre = gaze.score_image(centre, *plain, centre, others, n_bootstrap=200)
    assert by_centre.metrics["auc"] > 0.75 and abs(by_centre.metrics["sauc"] - 0.5) < 0.05
    assert abs(by_centre.metrics["sncc"]) < 0.15
    looked = readers_and_heatmaps(True)
    by_lesion = gaze.score_image(lesion, *looked, centre, others, n_bootstrap=200)
    centre_there = gaze.score_image(centre, *looked, centre, others, n_bootstrap=200)
    assert by_lesion.metrics["sauc"] > 0.6 > centre_there.metrics["sauc"]
    assert by_lesion.metrics["sncc"] > 0.2 > centre_there.metrics["sncc"]


def test_intervals_resample_readers_not_fixations(reader_case):
    """Repeating every fixation ten times changes nothing: the unit of the bootstrap is the reader (a
    fixation bootstrap would shrink the interval by about √10)."""
    lesion, _, fx = reader_case
    third = fixations.sample_fixations(lesion, 200, seed=9, reader="r3")
    three = fixations.Fixations.concat([fx, third])
    tenfold = fixations.Fixations.concat([three] * 10)
    a = gaze.compare_with_gaze(lesion, three, sigma_mm=6.0, seed=0, n_bootstrap=300)
    b = gaze.compare_with_gaze(lesion, tenfold, sigma_mm=6.0, seed=0, n_bootstrap=300)
    for key in gaze.GAZE_KEYS:
        assert b.metrics[key] == pytest.approx(a.metrics[key], abs=1e-9)
        assert b.intervals[key] == pytest.approx(a.intervals[key], abs=1e-9)
    assert a.n_readers == 3 and b.n_fixations == 10 * a.n_fixations


def test_readers_weigh_equally_whatever_their_number_of_fixations():
    """The ground truth averages the readers' heatmaps (each summing to 1), not their pooled fixations."""
    grid = Volume(np.zeros((16, 16, 30), np.float32), spacing=(2.0, 2.0, 2.0))
    left, right = grid.index_to_physical(np.array([[6.0, 8.0, 8.0]])), grid.index_to_physical(np.array([[24.0, 8.0, 8.0]]))
    many = fixations.Fixations(np.repeat(left, 50, 0), np.ones(50), np.array(["a"] * 50, dtype=object))
    few = fixations.Fixations(np.repeat(right, 2, 0), np.ones(2), np.array(["b"] * 2, dtype=object))
    third = fixations.Fixations(right, np.ones(1), np.array(["c"], dtype=object))
    peak = grid.with_array(gaze.density(many, grid, None, sigma_mm=4.0).astype(np.float32))  # reader a's heatmap
    res = gaze.compare_with_gaze(peak, fixations.Fixations.concat([many, few, third]), sigma_mm=4.0,
                                 seed=0, n_bootstrap=50)
    # the rows leaving out c and b have a ground truth half on the left (SIM ~ 0.5), leaving out a none:
    # mean ~ 1/3; pooled fixations (50 left : 3 right) would give ~ 0.65
    assert 0.25 < res.metrics["sim"] < 0.42


def test_density_spread_is_sigma_mm_along_every_axis_of_an_anisotropic_grid():
    """One fixation on a 1 × 1 × 2.5 mm grid with σ = 4 mm: the heatmap's standard deviation is ≈ 4 mm
    along x, y and z (σ converted to voxels per axis, in the array's (z, y, x) order)."""
    grid = Volume(np.zeros((40, 60, 60), np.float32), spacing=(1.0, 1.0, 2.5))
    point = grid.index_to_physical(np.array([[30.0, 30.0, 20.0]]))
    d = gaze.density(fixations.Fixations(point, np.ones(1), np.array(["r"], dtype=object)), grid, None, sigma_mm=4.0)
    spacing_zyx = np.asarray(grid.spacing)[::-1]
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = d.sum(axis=other)
        mm = np.arange(profile.size) * spacing_zyx[axis]
        mean = (profile * mm).sum()
        sd = np.sqrt((profile * (mm - mean) ** 2).sum())
        assert sd == pytest.approx(4.0, rel=0.05), (axis, sd)


def test_a_verdict_from_one_fixation_or_one_reader_is_inconclusive(reader_case):
    lesion, _, fx = reader_case
    one = fx.subset(np.array([0]))
    single = gaze.compare_with_gaze(lesion, one, sigma_mm=6.0, seed=0, n_bootstrap=50)
    assert single.verdict == gaze.INCONCLUSIVE and single.intervals == {} and single.inter_observer is None
    r1 = fx.subset(fx.reader == "r1")  # 400 fixations of one reader: still no interval over readers
    alone = gaze.compare_with_gaze(lesion, r1, sigma_mm=6.0, seed=0, n_bootstrap=50)
    assert alone.metrics["sauc"] > 0.6 and alone.verdict == gaze.INCONCLUSIVE and "1 reader" in alone.verdict_why
    assert "at least 3" in alone.verdict_why
    two = gaze.compare_with_gaze(lesion, fx, sigma_mm=6.0, seed=0, n_bootstrap=300)  # r1, r2 agree: still too few
    assert two.intervals["sauc"][0] > 0.5 and two.verdict == gaze.INCONCLUSIVE
    heat = gaze.compare_with_gaze(lesion, lesion, sigma_mm=6.0, seed=0, n_bootstrap=50)
    assert heat.verdict == gaze.INCONCLUSIVE
    # three readers looking where the map points: an interval over readers above 0.5
    three = fixations.Fixations.concat([fx, fixations.sample_fixations(lesion, 200, seed=9, reader="r3")])
    ok = gaze.compare_with_gaze(lesion, three, sigma_mm=6.0, seed=0, n_bootstrap=300)
    assert ok.verdict == gaze.PASS and ok.intervals["sauc"][0] > 0.5
    # on the trust card: the verdict is the gaze result's, never PASS from one reader
    from saliency_inspector.scoring import trust

    for result, expected in ((single, "inconclusive"), (alone, "inconclusive"), (ok, "pass")):
        assert trust.CRITERIA["gaze"].judge(trust.Evidence(gaze=result)).verdict == expected
