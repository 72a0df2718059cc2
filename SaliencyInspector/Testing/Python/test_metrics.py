"""Metrics against hand-computed answers, scikit-learn, scikit-image and scipy (tiny arrays, fast)."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from skimage.filters import threshold_otsu

from saliency_inspector.errors import InputError
from saliency_inspector.scoring.curves import pr_curve, roc_curve
from saliency_inspector.scoring.evaluation import evaluate, score_masks
from saliency_inspector.scoring.masks import body_mask
from saliency_inspector.scoring.metrics import METRICS, ROW_KEYS
from saliency_inspector.scoring.ranking import Ranking, _dense_ranks_numpy, _dense_ranks_torch
from saliency_inspector.io.segments import Segment, Segments
from saliency_inspector.io.volume import Volume


def line(values):
    """A (1, 1, n) volume array from a list: the simplest grid for hand-computed answers."""
    return np.asarray(values, dtype=float).reshape(1, 1, -1)


# ---- hand-computed answers --------------------------------------------------------------------
# map (after ReLU) 0.9 0.8 0.8 0.3 0 0 (raw -2 becomes 0), mask at positions 0, 2, 4
HAND_MAP = line([0.9, 0.8, 0.8, 0.3, -2.0, 0.0])
HAND_MASK = line([1, 0, 1, 0, 1, 0]).astype(bool)


def test_hand_computed_row():
    row = score_masks(HAND_MAP, {"m": HAND_MASK}).row("m")
    # Mann-Whitney: 0.9 beats 3 negatives, 0.8 beats 2 and ties 1, 0 ties 1 -> (3 + 2.5 + 0.5) / 9
    assert row["roc_auc"] == pytest.approx(6 / 9, abs=1e-15)
    # AP: groups 0.9 (1 pos), 0.8 (1 pos, 1 neg), 0.3 (1 neg), 0 (1 pos, 1 neg): (1/1 + 2/3 + 3/6) / 3
    assert row["auprc"] == pytest.approx(13 / 18, abs=1e-15)
    assert row["auprc_chance"] == 0.5
    # topk keeps the 3 highest (0.9, 0.8, 0.8): 2 in the mask
    assert row["dice"] == pytest.approx(2 / 3) and row["ioa"] == pytest.approx(2 / 3)
    assert row["rank_accuracy"] == pytest.approx(2 / 3)
    assert row["threshold_value"] == pytest.approx(0.8)
    assert row["mass_in_mask"] == pytest.approx(1.7 / 2.8, abs=1e-12)
    assert row["mass_baseline"] == 0.5
    assert row["pointing_game"] == 1.0
    assert row["mask_voxels"] == 3 and row["note"] == ""


def test_hand_computed_threshold_rules():
    masks = {"m": HAND_MASK}
    # fixed:0.5 of the max 0.9 -> keep > 0.45: the same three voxels as topk
    row = score_masks(HAND_MAP, masks, threshold="fixed:0.5").row("m")
    assert row["dice"] == pytest.approx(2 / 3) and row["ioa"] == pytest.approx(2 / 3)
    # fixed:0.9 -> keep > 0.81: only 0.9 (in the mask): Dice 2*1/(1+3), IoA 1
    row = score_masks(HAND_MAP, masks, threshold="fixed:0.9").row("m")
    assert row["dice"] == pytest.approx(0.5) and row["ioa"] == 1.0 and row["threshold_value"] == pytest.approx(0.9)
    # oracle: candidates 2*1/(1+3), 2*2/(3+3), 2*3/(6+3) -> 2/3
    row = score_masks(HAND_MAP, masks, threshold="max").row("m")
    assert row["dice"] == pytest.approx(2 / 3) and "oracle" in row["threshold"]


def test_topk_shares_a_tie_group_fairly():
    # top group of 4 tied voxels holds 1 mask voxel; k = 3 places -> 3 * 1/4 expected hits
    s = line([1, 1, 1, 1, 0, 0])
    m = line([1, 0, 0, 0, 1, 1]).astype(bool)
    row = score_masks(s, {"m": m}).row("m")
    assert row["rank_accuracy"] == pytest.approx(0.25)
    assert row["dice"] == pytest.approx(0.25)
    # pointing game: 4 voxels tie for the maximum, 1 is in the mask (tolerance 0.5 mm, spacing 1)
    row = score_masks(s, {"m": m}, tolerance_mm=0.5).row("m")
    assert row["pointing_game"] == pytest.approx(0.25)


def test_pointing_game_tolerance_respects_anisotropic_spacing():
    # grid (z=8, y=1, x=8); mask voxel at z=0, x=0; the map's maximum at z=2, x=0 or z=0, x=4
    mask = np.zeros((8, 1, 8), bool)
    mask[0, 0, 0] = True
    along_z = np.zeros((8, 1, 8))
    along_z[2, 0, 0] = 1.0
    along_x = np.zeros((8, 1, 8))
    along_x[0, 0, 4] = 1.0
    spacing = (1.0, 1.0, 3.0)  # (x, y, z) mm: the z step is 3 mm
    # z: 2 slices * 3 mm = 6 mm (miss at 5 mm); x: 4 * 1 mm = 4 mm (hit)
    assert score_masks(along_z, {"m": mask}, spacing=spacing, tolerance_mm=5).row("m")["pointing_game"] == 0.0
    assert score_masks(along_x, {"m": mask}, spacing=spacing, tolerance_mm=5).row("m")["pointing_game"] == 1.0
    # swap the spacing: z step 1 mm -> 2 mm (hit); x step 3 mm -> 12 mm (miss)
    swapped = (3.0, 1.0, 1.0)
    assert score_masks(along_z, {"m": mask}, spacing=swapped, tolerance_mm=5).row("m")["pointing_game"] == 1.0
    assert score_masks(along_x, {"m": mask}, spacing=swapped, tolerance_mm=5).row("m")["pointing_game"] == 0.0
    # diagonal: (dz=2 * 3 mm, dx=4 mm) -> sqrt(36 + 16) = 7.21 mm
    diag = np.zeros((8, 1, 8))
    diag[2, 0, 4] = 1.0
    for tol, hit in [(7.2, 0.0), (7.25, 1.0)]:
        assert score_masks(diag, {"m": mask}, spacing=spacing, tolerance_mm=tol).row("m")["pointing_game"] == hit


def test_map_identical_to_mask_is_perfect_under_every_rule():
    rng = np.random.default_rng(1)
    mask = rng.random((6, 7, 8)) < 0.2
    for rule in ["topk", "otsu", "fixed:0.5", "percentile:50", "max"]:
        row = score_masks(mask.astype(np.float32), {"m": mask}, threshold=rule).row("m")
        for key in ["dice", "roc_auc", "auprc", "ioa", "rank_accuracy", "pointing_game", "mass_in_mask"]:
            assert row[key] == 1.0, (rule, key, row)


def test_uniform_map_mass_equals_baseline_and_rank_metrics_are_nan():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:4, 2:5] = True
    row = score_masks(np.full(mask.shape, 0.7), {"m": mask}).row("m")
    assert row["mass_in_mask"] == pytest.approx(row["mass_baseline"], abs=1e-15)
    assert row["mass_baseline"] == mask.sum() / mask.size
    for key in ["dice", "roc_auc", "auprc", "ioa", "pointing_game", "rank_accuracy"]:
        assert math.isnan(row[key]), key  # never a silent 0.5
    assert "constant map" in row["note"]


def test_undefined_cases_give_nan_and_a_reason():
    rng = np.random.default_rng(2)
    s = rng.random((4, 4, 4))
    table = score_masks(s, {"empty": np.zeros(s.shape, bool), "everything": np.ones(s.shape, bool)})
    empty, everything = table.row("empty"), table.row("everything")
    assert all(math.isnan(empty[k]) for k in METRICS)
    assert "empty mask" in empty["note"]
    assert math.isnan(everything["roc_auc"]) and math.isnan(everything["auprc"])
    assert "whole region" in everything["note"]
    assert everything["mass_in_mask"] == pytest.approx(1.0)
    # an all-negative raw map has no positive mass
    row = score_masks(-s, {"m": s > 0.5}).row("m")
    assert math.isnan(row["mass_in_mask"]) and "zero everywhere" in row["note"]


# ---- scikit-learn / scikit-image cross-checks ------------------------------------------------
def heavy_ties(rng, shape, levels=7):
    """Raw signed maps with few distinct values: ReLU makes a third of them tie at 0."""
    return rng.integers(-3, levels, shape).astype(np.float32) / 4


@pytest.mark.parametrize("seed", range(4))
def test_auc_and_ap_equal_scikit_learn_with_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    shape = (10, 12, 14)
    s = heavy_ties(rng, shape) if seed % 2 == 0 else rng.normal(size=shape).round(1)
    region = rng.random(shape) < 0.8
    masks = {f"m{i}": rng.random(shape) < p for i, p in enumerate([0.02, 0.2, 0.6])}
    masks["blob"] = np.zeros(shape, bool)
    masks["blob"][2:6, 3:9, 4:10] = True
    table = score_masks(s, masks, region=region)
    relu = np.maximum(s, 0)[region]
    for name, m in masks.items():
        row, y = table.row(name), m[region]
        assert abs(row["roc_auc"] - roc_auc_score(y, relu)) <= 1e-12
        assert abs(row["auprc"] - average_precision_score(y, relu)) <= 1e-12
        assert row["auprc_chance"] == y.mean()


def test_curves_equal_scikit_learn():
    rng = np.random.default_rng(5)
    s = heavy_ties(rng, (8, 9, 10))
    m = rng.random(s.shape) < 0.3
    relu = np.maximum(s, 0).ravel()
    fpr, tpr, thr = roc_curve(s, m)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(m.ravel(), relu, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-15)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    precision, recall, pthr = pr_curve(s, m)
    sk_p, sk_r, sk_pthr = precision_recall_curve(m.ravel(), relu)
    np.testing.assert_allclose(precision, sk_p, atol=1e-15)
    np.testing.assert_allclose(recall, sk_r, atol=1e-15)
    np.testing.assert_array_equal(pthr, sk_pthr)


def dice_of(kept, mask):
    return 2 * (kept & mask).sum() / (kept.sum() + mask.sum())


def test_threshold_rules_equal_direct_computation():
    rng = np.random.default_rng(6)
    s = rng.normal(size=(10, 11, 12))
    region = np.zeros(s.shape, bool)
    region[1:9, 1:10, 2:11] = True
    m = np.zeros(s.shape, bool)
    m[3:7, 2:8, 4:9] = True
    s = s + 1.5 * m  # an informative map
    relu, v, mv = np.maximum(s, 0), region, m & region
    cuts = {"otsu": threshold_otsu(relu[v]),
            "fixed:0.4": 0.4 * relu[v].max(),
            "percentile:80": np.percentile(relu[v], 80)}
    for rule, cut in cuts.items():
        row = score_masks(s, {"m": m}, region=region, threshold=rule).row("m")
        kept = (relu > cut) & v
        assert row["dice"] == pytest.approx(dice_of(kept, mv), abs=1e-12), rule
        assert row["ioa"] == pytest.approx((kept & mv).sum() / kept.sum(), abs=1e-12), rule
    # the oracle is the best Dice over every distinct threshold, and at least every rule's Dice
    oracle = score_masks(s, {"m": m}, region=region, threshold="max").row("m")["dice"]
    brute = max(dice_of((relu >= t) & v, mv) for t in np.unique(relu[v]))
    assert oracle == pytest.approx(brute, abs=1e-12)
    for rule in list(cuts) + ["topk"]:
        assert oracle >= score_masks(s, {"m": m}, region=region, threshold=rule).row("m")["dice"] - 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_topk_dice_equals_rank_accuracy_and_ioa(seed):
    rng = np.random.default_rng(seed)
    s = heavy_ties(rng, (9, 9, 9), levels=4)
    masks = {f"m{i}": rng.random(s.shape) < p for i, p in enumerate([0.05, 0.3, 0.7])}
    for row in score_masks(s, masks).rows:
        assert row["dice"] == pytest.approx(row["rank_accuracy"], abs=1e-15)
        assert row["ioa"] == pytest.approx(row["rank_accuracy"], abs=1e-15)
    # without ties, rank accuracy is simply the share of the top-|M| voxels in the mask
    s = rng.permutation(729).reshape(9, 9, 9).astype(float)
    m = rng.random(s.shape) < 0.2
    top = np.argsort(-s.ravel())[: m.sum()]
    assert score_masks(s, {"m": m}).row("m")["rank_accuracy"] == pytest.approx(m.ravel()[top].mean())


def test_mass_in_mask_direct():
    rng = np.random.default_rng(7)
    s = rng.normal(size=(6, 7, 8))
    region = rng.random(s.shape) < 0.7
    m = rng.random(s.shape) < 0.3
    row = score_masks(s, {"m": m}, region=region).row("m")
    relu = np.maximum(s, 0)
    assert row["mass_in_mask"] == pytest.approx(relu[m & region].sum() / relu[region].sum(), abs=1e-12)
    assert row["mass_baseline"] == pytest.approx((m & region).sum() / region.sum())
    assert "outside the region" in row["note"]


# ---- ranking back-ends -------------------------------------------------------------------------
def test_counting_and_torch_ranks_equal_the_sort():
    rng = np.random.default_rng(8)
    ints = rng.integers(0, 50, 5000).astype(np.int16)
    counted = Ranking(ints)  # histogram path, no sort
    values, sizes, group_of = _dense_ranks_numpy(ints.astype(np.float64))
    np.testing.assert_array_equal(counted.values, values)
    np.testing.assert_array_equal(counted.sizes, sizes)
    np.testing.assert_array_equal(counted.group_of, group_of)
    relu = np.maximum(rng.normal(size=5000), 0)  # half at 0: only the rest is sorted
    split = Ranking(relu)
    for a, b in zip((split.values, split.sizes, split.group_of), _dense_ranks_numpy(relu)):
        np.testing.assert_array_equal(a, b)
    floats = rng.normal(size=5000).round(1).astype(np.float32)
    for a, b in zip(_dense_ranks_torch(floats, "cpu"), _dense_ranks_numpy(floats)):
        np.testing.assert_array_equal(a, b)
    # quantised (integer) maps give the same metrics as their float copy
    m = rng.random((4, 25, 50)) < 0.3
    q = score_masks(ints.reshape(4, 25, 50), {"m": m}).row("m")
    f = score_masks(ints.reshape(4, 25, 50).astype(np.float32), {"m": m}).row("m")
    for key in METRICS:
        assert q[key] == pytest.approx(f[key], abs=1e-15)


# ---- evaluate() with Volumes, Segments and regions -----------------------------------------------
def test_evaluate_resamples_segments_on_another_grid_with_a_note():
    rng = np.random.default_rng(9)
    saliency = Volume(rng.random((8, 10, 12)).astype(np.float32), spacing=(2.0, 2.0, 3.0))
    liver = np.zeros((16, 20, 24), bool)  # the same extent at half the spacing
    liver[4:10, 6:14, 8:16] = True
    fine = Volume(np.zeros(liver.shape), spacing=(1.0, 1.0, 1.5), origin=(-0.5, -0.5, -0.75))
    segments = Segments([Segment("liver", liver)], fine)
    notes = []
    table = evaluate(saliency, segments, region="all", note=notes.append)
    assert notes and "resampled" in notes[0]
    expected = segments.resampled_to(saliency).mask("liver")
    assert table.row("liver")["mask_voxels"] == expected.sum() > 0
    far = Volume(np.zeros(liver.shape), spacing=(1.0, 1.0, 1.5), origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="do not overlap"):
        evaluate(saliency, Segments([Segment("liver", liver)], far))


def test_region_rules():
    rng = np.random.default_rng(10)
    grid = Volume(rng.random((6, 8, 8)).astype(np.float32))
    body = np.zeros(grid.shape, bool)
    body[1:5, 1:7, 1:7] = True
    liver = np.zeros(grid.shape, bool)
    liver[2:4, 2:5, 2:5] = True
    segs = Segments([Segment("body", body), Segment("liver", liver)], grid)
    auto = evaluate(grid, segs)
    assert "body" in auto.region and [r["segment"] for r in auto.rows] == ["liver"]
    relu = grid.array[body]
    assert auto.row("liver")["roc_auc"] == pytest.approx(roc_auc_score(liver[body], relu), abs=1e-12)
    everything = evaluate(grid, segs, region="all")
    assert everything.region == "all" and len(everything.rows) == 2
    with pytest.raises(InputError, match="needs the CT"):
        evaluate(grid, Segments([Segment("liver", liver)], grid), region="body")
    with pytest.raises(InputError, match="not body, all or a segment"):
        evaluate(grid, segs, region="pancreas")
    with pytest.raises(InputError, match="not a known rule"):
        evaluate(grid, segs, threshold="median")
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        evaluate(grid, segs, threshold="fixed:1.5")
    bad = grid.with_array(np.where(body, np.nan, 0.0))
    with pytest.raises(InputError, match="NaN"):
        evaluate(bad, segs)


def test_body_region_from_the_phantom_ct():
    from saliency_inspector.synth.phantom import make_phantom

    case = make_phantom(size=(40, 40, 16))
    body = body_mask(case.ct)
    reference = case.organs.mask("body")
    assert np.all(body[reference])  # lungs (air) included: holes filled
    # at 10 mm voxels the patient table may touch the back: at most a sliver more than the body
    assert (body & ~reference).sum() <= 0.01 * reference.sum()
    organs_only = Segments([s for s in case.organs if s.name != "body"], case.organs.grid)
    saliency = case.ct.with_array(case.lesions.mask("lesion_liver").astype(np.float32))
    table = evaluate(saliency, organs_only, ct=case.ct)  # auto -> body from the CT
    assert table.region.startswith("body (CT")
    liver, lesion = table.row("liver"), case.lesions.mask("lesion_liver")
    inside, size = (lesion & body & case.organs.mask("liver")).sum(), (case.organs.mask("liver") & body).sum()
    # lesion voxels (score 1) beat every other voxel (score 0); the rest of the liver ties with them
    assert liver["roc_auc"] == pytest.approx(0.5 + 0.5 * inside / size, abs=1e-12)
    assert liver["mass_in_mask"] == pytest.approx(inside / (lesion & body).sum())
    assert liver["pointing_game"] == 1.0
    assert table.row("lung_left")["pointing_game"] == 0.0


def _body_mask_reference(ct_array: np.ndarray) -> np.ndarray:
    """The body mask's definition, written plainly on the whole array (int32 labels, one bincount)."""
    from scipy import ndimage

    labels, _count = ndimage.label(ct_array > -500.0)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def _air_with(shape, tissue: np.ndarray) -> np.ndarray:
    return np.where(tissue, 40.0, -1000.0).astype(np.float32)


def test_body_mask_equals_its_plain_definition():
    """Cropped, uint16-labelled, slab-counted body mask == the plain whole-array definition, voxel for
    voxel: on the phantom, on random blobs (several components, tied largest ones, holes that open
    at the tissue's bounding box, tissue on the array's edge), and with > 65535 specks (int32 path)."""
    from scipy import ndimage

    from saliency_inspector.synth.phantom import make_phantom

    ct = make_phantom(size=(48, 40, 20)).ct
    assert np.array_equal(body_mask(ct), _body_mask_reference(ct.array))
    rng = np.random.default_rng(7)
    for trial in range(12):
        shape = (14, 30, 26)
        blobs = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.1 + 0.05 * (trial % 3)
        if trial % 2:  # keep the tissue away from the array's edge: the bounding box is a real crop
            blobs[:2], blobs[:, :3], blobs[:, :, -4:] = False, False, False
        if trial == 5:  # two equal largest components: the first in scan order wins in both
            blobs[:] = False
            blobs[3:6, 4:8, 4:8] = blobs[8:11, 14:18, 14:18] = True
        volume = Volume(_air_with(shape, blobs), spacing=(1.0, 1.0, 1.0))
        assert np.array_equal(body_mask(volume), _body_mask_reference(volume.array)), trial
    # a ring whose hole opens at the bounding box's edge (not a hole) and a closed cavity (a hole)
    ring = np.zeros((9, 20, 20), bool)
    ring[2:7, 3:15, 3:15] = True
    ring[3:6, 6:12, 6:12] = False  # a cavity, opened by a tunnel to the box's face: not a hole
    ring[4, 8:10, 3:7] = False
    ring[2:7, 3:15, 16:19] = True  # a second slab, joined to the first, with a closed cavity: a hole
    ring[2:7, 14, 3:19] = True
    ring[4, 6:9, 17] = False
    volume = Volume(_air_with(ring.shape, ring), spacing=(1.0, 1.0, 1.0))
    body = body_mask(volume)
    assert np.array_equal(body, _body_mask_reference(volume.array))
    assert not body[4, 9, 9] and not body[4, 9, 4] and body[4, 7, 17]
    specks = np.zeros((82, 82, 82), bool)
    specks[::2, ::2, ::2] = True  # 68921 isolated voxels: more labels than uint16 holds
    specks[40:60, 40:60, 40:60] = True
    volume = Volume(_air_with(specks.shape, specks), spacing=(1.0, 1.0, 1.0))
    assert np.array_equal(body_mask(volume), _body_mask_reference(volume.array))


def test_table_outputs(tmp_path):
    table = score_masks(HAND_MAP, {"m": HAND_MASK, "empty": np.zeros(HAND_MASK.shape, bool)})
    rows = json.loads(table.write_json(tmp_path / "t.json").read_text())
    assert list(rows[0]) == table.columns and table.columns[:len(ROW_KEYS)] == ROW_KEYS
    for key in ["segment", "dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game", "threshold", "region"]:
        assert key in rows[0]
    assert rows[1]["dice"] is None and rows[1]["note"]
    csv_lines = table.write_csv(tmp_path / "t.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == table.columns and len(csv_lines) == 3
    text = table.format()
    assert "ROC AUC" in text and "empty mask" in text and "0.667" in text


def test_registry_describes_every_metric():
    for key, info in METRICS.items():
        assert info.key == key and info.name and info.meaning and info.range in ("0..1", "0.. mm")
        assert callable(info.function) and isinstance(info.higher_is_better, bool)
        if info.baseline_key:
            assert info.baseline_key in METRICS


def test_roc_curves_are_thinned_for_plotting_keeping_the_end_points():
    import numpy as np

    from saliency_inspector.scoring.curves import thin_curve as thin

    fpr = np.linspace(0, 1, 5000) ** 2
    tpr = np.sqrt(np.linspace(0, 1, 5000))
    x, y = thin(fpr, tpr, points=400)
    assert 300 < x.size <= 400 and x.size == y.size
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(x) >= 0)
    assert np.all(np.isin(x, fpr)) and np.all(np.isin(y, tpr))  # points of the curve, not interpolated
    small_x, _ = thin(fpr[:10], tpr[:10])
    assert small_x.size == 10


def test_packed_relu_ranking_equals_sklearn_with_ties():
    """Ranking(relu=True) of float32 scores (packed uint64 keys, no ReLU'd copy, int32 group ends)
    gives scikit-learn's ROC AUC and AP within 1e-9 and the same tie groups as the argsort path,
    on small inputs full of ties, -0.0 and all-negative maps."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    checked = 0
    for trial in range(150):
        n = int(rng.integers(2, 300))
        s = (rng.integers(-5, 6, n) * 0.37).astype(np.float32) if trial % 3 else rng.standard_normal(n).astype(np.float32)
        if trial % 5 == 0:
            s[rng.random(n) < 0.5] = -0.0
        if trial % 11 == 0:
            s[:] = -1.0
        y = rng.random(n) < rng.random()
        if y.sum() in (0, n):
            continue
        packed = Ranking(s, device="cpu", relu=True)
        plain = Ranking(np.maximum(s, 0).astype(np.float64), device="cpu")
        assert np.array_equal(packed.group_of, plain.group_of) and np.array_equal(packed.sizes, plain.sizes)
        assert np.array_equal(packed.ends, plain.ends) and np.array_equal(packed.values, plain.values)
        mc = packed.counts_for(np.flatnonzero(y))
        if packed.n_groups > 1:
            relu = np.maximum(s, 0)
            assert abs(packed.roc_auc(mc) - roc_auc_score(y, relu)) < 1e-9
            assert abs(packed.average_precision(mc) - average_precision_score(y, relu)) < 1e-9
            checked += 1
    assert checked > 100


# ---- the importance transform (issue 22 item 6): one declared transform per method ------------
def test_importance_transform_known_answers_and_registry_declarations():
    import torch

    from saliency_inspector.explainers.registry import IMPORTANCES as REGISTRY_IMPORTANCES, METHODS
    from saliency_inspector.scoring.importance import IMPORTANCES, describe, importance_transform

    raw = np.array([-3.0, -0.5, 0.0, 2.0])
    np.testing.assert_array_equal(importance_transform(raw, "relu"), [0, 0, 0, 2])
    np.testing.assert_array_equal(importance_transform(raw, "abs"), [3, 0.5, 0, 2])
    np.testing.assert_array_equal(importance_transform(raw, "signed"), raw)
    assert importance_transform(raw, "signed") is not raw and raw[0] == -3.0  # never in place
    assert importance_transform(torch.tensor(raw), "abs").tolist() == [3, 0.5, 0, 2]
    assert describe("abs") == "|map| (abs)"
    with pytest.raises(InputError, match="importance 'square' is not one of relu, abs, signed"):
        importance_transform(raw, "square")
    assert IMPORTANCES == REGISTRY_IMPORTANCES
    # Captum's conventions: Saliency ranks |gradient| (abs=True), GuidedGradCam = guided backprop ×
    # ReLU(Grad-CAM) (a signed gradient-type map), IG / InputXGradient / Occlusion keep their sign
    # (the CAM family of issue 24 adds CAM entries: every CAM ranks by ReLU, checked below)
    assert all(m.importance == "relu" for m in METHODS.values() if m.family == "CAM")
    assert METHODS["fullgrad"].importance == "abs"
    assert all(m.importance == "relu" for m in METHODS.values() if m.family == "model")  # gate coefficients
    declared = {name: m.importance for name, m in METHODS.items()
                if m.family not in ("custom", "model") and (m.family != "CAM" or name in ("hirescam", "gradcam", "gradcampp"))
                and name != "fullgrad"}
    assert declared == {"hirescam": "relu", "gradcam": "relu", "gradcampp": "relu", "gradient": "abs",
                        "inputxgradient": "signed", "smoothgrad": "abs", "smoothgrad_sq": "abs", "vargrad": "abs",
                        "ig": "signed", "guided_gradcam": "abs", "occlusion": "signed", "xrai3d": "signed"}


def test_evaluate_ranks_by_the_declared_importance():
    """Negative evidence inside the mask (a gradient map of the class's absence): ReLU sees nothing
    there, |map| ranks the mask first, the signed map ranks it last."""
    m = line([1, 1, 0, 0, 0, 0]).astype(bool)
    raw = line([-0.9, -0.8, 0.1, 0.05, 0.0, 0.02])
    rows = {imp: score_masks(raw, {"m": m}, importance=imp).row("m") for imp in ("relu", "abs", "signed")}
    assert rows["abs"]["roc_auc"] == 1.0 and rows["signed"]["roc_auc"] == 0.0
    # ReLU: each mask voxel ties at 0 with one negative, below three positives -> 2 × 0.5 / (2 × 4)
    assert rows["relu"]["roc_auc"] == pytest.approx(1 / 8)
    assert rows["abs"]["pointing_game"] == 1.0  # |map|'s maximum is the raw minimum, inside the mask
    assert rows["abs"]["mass_in_mask"] == pytest.approx(1.7 / 1.87)
    assert rows["signed"]["mass_in_mask"] == 0.0  # masses of a signed map: its positive part
    assert {r["importance"] for r in rows.values()} == {"relu", "abs", "signed"}
    table = score_masks(raw, {"m": m}, importance="abs")
    assert "ranked by: |map| (abs)" in table.format()
    fpr, tpr, _ = roc_curve(raw, m, importance="abs")
    assert np.trapezoid(tpr, fpr) == pytest.approx(1.0)
