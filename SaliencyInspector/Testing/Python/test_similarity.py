"""Map similarity (evaluate/similarity.py): identities, and agreement with skimage and scipy."""

import numpy as np
import pytest
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

from saliency_inspector.errors import InputError
from saliency_inspector.scoring import similarity as sim
from saliency_inspector.io.volume import Volume


def smooth_field(seed, shape=(20, 24, 28), sigma=2.5):
    """A smooth signed random field (crosses zero often, like a raw CAM)."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma)


def test_ssim_of_a_map_with_itself_is_one_and_with_its_relu_negation_about_zero():
    m = smooth_field(0)
    same = sim.compare_maps(m, m, normalisation="relu")
    assert same.ssim == pytest.approx(1.0, abs=1e-12)
    assert same.spearman == pytest.approx(1.0) and same.pearson == pytest.approx(1.0)
    assert same.top_k_overlap == 1.0
    positive = m - m.min() + 0.05  # a map > 0 everywhere: ReLU(-map) is all zero
    assert abs(sim.compare_maps(positive, -positive, normalisation="relu").ssim) < 1e-3
    cam = np.maximum(m, 0)  # a ReLU'd CAM: zero where it does not look
    assert abs(sim.compare_maps(cam, -cam, normalisation="relu").ssim) < 0.05
    # a signed map and its negation share no positive voxel: anti-correlated, below zero
    assert sim.compare_maps(m, -m, normalisation="relu").ssim < 0
    # |map| cannot tell a map from its negation
    assert sim.compare_maps(m, -m, normalisation="abs").ssim == pytest.approx(1.0, abs=1e-12)


def test_ssim_equals_skimage_on_2d_slices_and_3d_volumes():
    a = sim.normalise(smooth_field(1))
    b = sim.normalise(smooth_field(2))
    for k in (0, 7, 19):  # 2D slices: the same function on 2D arrays
        ours = sim.ssim(a[k], b[k])
        theirs = structural_similarity(a[k], b[k], win_size=7, data_range=1.0)
        assert ours == pytest.approx(theirs, abs=1e-12)
    assert sim.ssim(a, b) == pytest.approx(structural_similarity(a, b, win_size=7, data_range=1.0), abs=1e-12)
    # unrelated smooth maps are far less similar than a map with itself
    assert sim.ssim(a, b) < 0.5


def test_spearman_and_pearson_equal_scipy_over_the_region_ties_included():
    a, b = smooth_field(3), smooth_field(4)
    region = np.zeros(a.shape, bool)
    region[3:15, 4:20, 2:25] = True
    got = sim.compare_maps(a, b, normalisation="relu", region=region)
    na, nb = sim.normalise(a, "relu", region)[region], sim.normalise(b, "relu", region)[region]
    assert (na == 0).sum() > 100  # ReLU makes many ties: the average-rank rule matters
    assert got.spearman == pytest.approx(stats.spearmanr(na, nb).statistic, abs=1e-12)
    assert got.pearson == pytest.approx(stats.pearsonr(na, nb).statistic, abs=1e-12)
    assert got.region_voxels == region.sum()


def test_normalise_clips_at_the_99th_percentile_and_scales_to_unit_range():
    m = np.linspace(-1, 99, 101 * 4).reshape(4, 101)[None]
    n = sim.normalise(m, "relu")
    top = np.percentile(np.maximum(m, 0), 99)
    assert n.min() == 0.0 and n.max() == 1.0
    assert np.count_nonzero(n == 1.0) == np.count_nonzero(np.maximum(m, 0) >= top)
    assert not sim.normalise(np.full((3, 3, 3), 5.0)).any()  # constant -> zeros


def test_top_k_overlap_known_answer():
    a = np.arange(100.0)
    b = a.copy()
    b[-5:] = -1  # b's top 5 % are a's next five
    assert sim.top_k_overlap(a, a, 5) == 1.0
    assert sim.top_k_overlap(a, b, 5) == 0.0
    assert sim.top_k_overlap(a, b, 10) == pytest.approx(0.5)


def test_volumes_on_different_grids_are_compared_in_physical_space():
    """The same physical map stored flipped along x compares as identical (after resampling)."""
    m = np.clip(smooth_field(5, (12, 14, 16)), 0, None).astype(np.float32)
    direction = np.diag([-1.0, 1.0, 1.0])
    a = Volume(m, spacing=(2.0, 1.5, 3.0), origin=(0, 0, 0))
    # flipped storage: voxel i of b sits where voxel (15 - i) of a sits
    b = Volume(m[:, :, ::-1].copy(), spacing=(2.0, 1.5, 3.0), origin=(30.0, 0, 0), direction=direction)
    got = sim.compare_maps(a, b, normalisation="relu")
    assert got.ssim == pytest.approx(1.0, abs=1e-6) and "resampled" in got.note
    plain = sim.compare_maps(a.array, b.array, normalisation="relu")  # index space: not the same map
    assert plain.ssim < 0.9


def test_bad_input_is_named():
    with pytest.raises(InputError, match="differ"):
        sim.compare_maps(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(InputError, match="normalisation"):
        sim.normalise(np.zeros((3, 3, 3)), "softmax")
    with pytest.raises(InputError, match="NaN"):
        sim.normalise(np.full((3, 3, 3), np.nan))


def test_a_shared_empty_background_does_not_make_unrelated_maps_alike():
    """Two unrelated maps that are both zero outside one body: over the whole box the background
    alone makes them look alike; inside the body (or the maps' support) they are unrelated."""
    z, y, x = np.mgrid[:40, :40, :40]
    body = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 12 ** 2  # ~11 % of the box
    a = np.maximum(smooth_field(10, body.shape, 2.0), 0) * body
    b = np.maximum(smooth_field(11, body.shape, 2.0), 0) * body
    inside = sim.compare_maps(a, b, "relu", region=body)
    box = sim.compare_maps(a, b, "relu", region="box")
    support = sim.compare_maps(a, b, "relu")
    assert box.ssim > 0.5 and box.ssim == pytest.approx(structural_similarity(
        sim.normalise(a, "relu"), sim.normalise(b, "relu"), win_size=7, data_range=1.0), abs=1e-12)
    assert abs(inside.ssim) < 0.2 and abs(inside.spearman) < 0.2 and inside.region == "body"
    assert abs(support.ssim) < 0.2 and support.region == "support" and support.region_voxels < body.sum()
    assert inside.ssim_box > 0.5  # the whole-box number is reported beside it (percentiles from the body)
    same = sim.compare_maps(a, a, "relu", region=body)
    assert same.ssim == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
