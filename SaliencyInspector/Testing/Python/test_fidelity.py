"""Fidelity curves: known answers on a box model, HiResCAM beats chance on the demo model, batching;
the importance transform, the chance line of 20 random maps, ROAD-3D and its imputation."""

import numpy as np
import pytest
import torch

import saliency_inspector as si
from saliency_inspector.errors import InputError
from saliency_inspector.scoring import fidelity as fid

from toy_models import BoxMeanModel

torch.set_num_threads(1)
SHAPE = (10, 12, 11)
BOX = (slice(2, 6), slice(3, 9), slice(4, 8))


class Softmax:
    module = BoxMeanModel(SHAPE, BOX).eval()

    @staticmethod
    def probabilities(logits):
        return torch.softmax(logits, -1)


@pytest.fixture(scope="module")
def box_case():
    rng = np.random.default_rng(0)
    truth = np.zeros(SHAPE)
    truth[BOX] = 1.0
    x = torch.as_tensor(0.3 + 0.6 * truth + 0.1 * rng.random(SHAPE), dtype=torch.float32)[None, None]  # bright box
    return x, truth


@pytest.mark.parametrize("replacement", ["air", "impute"])
def test_the_true_map_deletes_fastest_the_reversed_slowest_random_between(box_case, replacement):
    x, truth = box_case
    runs = {name: fid.fidelity(Softmax, x, m, 0, steps=10, replacement=replacement, air_value=0.0, seed=3,
                               random_maps=4)
            for name, m in (("true", truth), ("reversed", -truth))}
    true, rev = runs["true"].curves, runs["reversed"].curves
    chance = runs["true"].random
    # deletion: the true map's score is never above random's, random's never above the reversed map's
    assert np.all(true.mif_probability <= chance.mif_probability + 1e-3)  # (impute: its noise differs)
    assert np.all(chance.mif_probability <= rev.mif_probability + 0.02)
    assert true.auc_mif < chance.auc_mif < rev.auc_mif
    assert true.F > chance.F > rev.F
    assert true.F_logit > chance.F_logit > rev.F_logit
    # both curves start at the unperturbed input and end at the fully replaced one
    assert true.mif_probability[0] == true.lif_probability[0] and true.mif_logit[-1] == true.lif_logit[-1]
    if replacement == "air":  # box gone after its share of voxels: logit 0, p = 0.5 exactly
        k = int(np.ceil(truth.sum() / truth.size * 10))
        np.testing.assert_allclose(true.mif_logit[k:], 0.0, atol=1e-7)


def test_batched_and_step_by_step_curves_are_equal(box_case):
    x, truth = box_case
    noisy = truth + np.random.default_rng(1).normal(0, 0.3, SHAPE)
    one = fid.fidelity(Softmax, x, noisy, 0, steps=8, replacement="blur", spacing_zyx=(2.0, 1.0, 1.0),
                       blur_mm=3.0, batch_size=1)
    many = fid.fidelity(Softmax, x, noisy, 0, steps=8, replacement="blur", spacing_zyx=(2.0, 1.0, 1.0),
                        blur_mm=3.0, batch_size=64)
    assert one.forwards == many.forwards == (1 + 20) * 2 * 8  # 8 steps per curve, 2 curves, map + 20 random
    for a, b in ((one.curves, many.curves), (one.random, many.random)):
        for key in ("mif_probability", "lif_probability", "mif_logit", "lif_logit"):
            np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-6, atol=1e-7)


def test_imputation_solves_the_six_neighbour_mean_with_the_faces_stencil():
    rng = np.random.default_rng(0)
    image = rng.random((5, 6, 7))
    removed = np.zeros(image.shape, bool)
    removed[1:4, 2:5, 2:6] = True
    out = fid.impute(image, removed, 0.0, rng, stencil="faces")
    np.testing.assert_array_equal(out[~removed], image[~removed])
    padded = np.pad(out, 1, mode="constant", constant_values=np.nan)
    neighbours = np.stack([np.roll(padded, s, a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (-1, 1)])
    np.testing.assert_allclose(out[removed], np.nanmean(neighbours, 0)[removed], atol=1e-5)


def _road_reference_2d(image, removed):
    """ROAD's linear imputation of a 2-D image written from its definition (tleemann/road_evaluation,
    road/imputations.py): each removed pixel = the weighted mean of its 8 neighbours inside the
    image, edge neighbours 1/6, diagonal 1/12, removed neighbours unknowns; solved densely."""
    weights = {(1, 1): 1 / 12, (0, 1): 1 / 6, (-1, 1): 1 / 12, (1, -1): 1 / 12, (0, -1): 1 / 6, (-1, -1): 1 / 12,
               (1, 0): 1 / 6, (-1, 0): 1 / 6}
    unknown = [tuple(p) for p in np.argwhere(removed)]
    index = {p: i for i, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros(len(unknown))
    for i, (r, c) in enumerate(unknown):
        for (dr, dc), w in weights.items():
            rr, cc = r + dr, c + dc
            if not (0 <= rr < image.shape[0] and 0 <= cc < image.shape[1]):
                continue
            a[i, i] += w
            if (rr, cc) in index:
                a[i, index[(rr, cc)]] -= w
            else:
                b[i] += w * image[rr, cc]
    out = image.copy()
    out[removed] = np.linalg.solve(a, b)
    return out


def test_imputation_matches_the_road_reference_on_a_single_slice():
    """One slice thick, the 3-D stencil is ROAD's 2-D one: the same solution as the reference's
    (the former 6-neighbour mean gives another)."""
    rng = np.random.default_rng(4)
    image = rng.random((9, 11))
    removed = rng.random(image.shape) < 0.4
    removed[0, 0] = removed[4, 5] = True  # a corner pixel: fewer valid neighbours
    expected = _road_reference_2d(image, removed)
    ours = fid.impute(image[None], removed[None], 0.0, rng)[0]
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    faces = fid.impute(image[None], removed[None], 0.0, rng, stencil="faces")[0]
    assert np.abs(faces - expected).max() > 1e-3  # the stencil is what makes the difference


def test_imputation_reproduces_a_linear_ramp_and_adds_the_stated_noise():
    z, y, x = np.meshgrid(np.arange(6), np.arange(7), np.arange(8), indexing="ij")
    ramp = 0.5 * z - 0.25 * y + 0.1 * x + 3.0
    removed = np.zeros(ramp.shape, bool)
    removed[1:5, 2:6, 1:7] = True
    np.testing.assert_allclose(fid.impute(ramp, removed, 0.0, np.random.default_rng(0)), ramp, atol=1e-6)
    noisy = fid.impute(ramp, removed, 0.2, np.random.default_rng(0))
    assert np.std(noisy[removed] - ramp[removed]) == pytest.approx(0.2, rel=0.15)


@pytest.fixture(scope="module")
def flat_box():
    """A constant input (0.3) with a brighter box (1.3): the box-mean model's logit is 1.3."""
    truth = np.zeros(SHAPE)
    truth[BOX] = 1.0
    return torch.as_tensor(0.3 + truth, dtype=torch.float32)[None, None], truth


def test_road_known_answer_on_the_box_model(flat_box):
    """Removing the box (MoRF of the true map) and imputing it from a constant background gives the
    background exactly (logit 0.3); LeRF never reaches the box (logit 1.3): ROAD on the logit = 1.
    The reversed map swaps the curves: −1."""
    x, truth = flat_box
    true = fid.road(Softmax, x, truth, 0, noise=0.0, seed=2)
    np.testing.assert_allclose(true.morf_logit, 0.3, atol=1e-5)
    np.testing.assert_allclose(true.lerf_logit, 1.3, atol=1e-5)
    assert true.score_logit == pytest.approx(1.0, abs=1e-5)
    assert fid.road(Softmax, x, -truth, 0, noise=0.0, seed=2).score_logit == pytest.approx(-1.0, abs=1e-5)
    assert true.score > 0.1 and list(true.fractions) == pytest.approx([0.1 * k for k in range(1, 10)])
    assert true.to_dict()["ranked_by"] == "signed map (signed)"
    # negative evidence on the box: |map| finds it, the signed map puts it last
    assert fid.road(Softmax, x, -truth, 0, noise=0.0, importance="abs").score_logit == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        fid.road(Softmax, x, truth, 0, fractions=(0.0, 0.5))


def test_the_chance_line_is_twenty_seeded_random_maps_with_a_band(box_case):
    x, truth = box_case
    result = fid.fidelity(Softmax, x, truth, 0, steps=6, replacement="air", air_value=0.0, seed=5)
    chance = result.chance
    assert chance.n == 20
    f_values = np.array([r.F for r in chance.runs])
    assert np.unique(np.round(f_values, 9)).size > 10  # different maps, different F
    d = result.to_dict()
    assert d["random_maps"] == 20 and d["random_F"] == pytest.approx(f_values.mean())
    low, high = np.percentile(f_values, [2.5, 97.5])
    assert (d["random_F_low"], d["random_F_high"]) == pytest.approx((low, high))
    assert d["F_minus_random"] == pytest.approx(result.curves.F - f_values.mean())
    assert (d["F_minus_random_low"], d["F_minus_random_high"]) == pytest.approx(
        (result.curves.F - high, result.curves.F - low))
    assert d["F_verdict"] == "above chance" and d["F_logit_verdict"] == "above chance"
    assert d["F_logit_minus_random_low"] > 0 and "random_F_logit_high" in d
    # the mean curves are the chance line drawn in the plots
    np.testing.assert_allclose(result.random.mif_probability,
                               np.mean([r.mif_probability for r in chance.runs], axis=0))
    # random map i is seeded with seed + 1 + i: the same maps for the same seed, others for another
    again = fid.chance_line(Softmax, x, 0, steps=6, replacement="air", air_value=0.0, seed=5)
    np.testing.assert_array_equal(again.values(), chance.values())
    other = fid.chance_line(Softmax, x, 0, steps=6, replacement="air", air_value=0.0, seed=6, random_maps=3)
    assert other.n == 3 and not np.allclose(other.values(), chance.values()[:3])
    # a shared chance line is reused, not recomputed
    shared = fid.fidelity(Softmax, x, -truth, 0, steps=6, replacement="air", air_value=0.0, chance=chance)
    assert shared.chance is chance and shared.forwards == 2 * 6
    assert shared.to_dict()["F_verdict"] == "below chance"
    with pytest.raises(InputError, match="other steps or another class"):
        fid.fidelity(Softmax, x, truth, 0, steps=4, chance=chance)


def test_fidelity_ranks_by_the_declared_importance(box_case):
    """Negative evidence on the box (a gradient map of the box's negative class): ranked by |map|
    the box goes first and F is far above chance; ranked signed it goes last, below chance."""
    x, truth = box_case
    gradient_like = -truth * (1.0 + 0.01 * np.random.default_rng(3).random(SHAPE))
    by_abs = fid.fidelity(Softmax, x, gradient_like, 0, steps=6, replacement="air", air_value=0.0, importance="abs")
    signed = fid.fidelity(Softmax, x, gradient_like, 0, steps=6, replacement="air", air_value=0.0,
                          importance="signed", chance=by_abs.chance)
    relu = fid.fidelity(Softmax, x, gradient_like, 0, steps=6, replacement="air", air_value=0.0,
                        importance="relu", chance=by_abs.chance)
    assert by_abs.versus_random()["F_verdict"] == "above chance"
    assert signed.versus_random()["F_verdict"] == "below chance"
    assert relu.versus_random()["F_verdict"] == "within chance"  # ReLU(−box) = 0 everywhere: a random order
    assert by_abs.to_dict()["importance"] == "abs" and by_abs.to_dict()["ranked_by"] == "|map| (abs)"
    with pytest.raises(InputError, match="importance 'square' is not one of relu, abs, signed"):
        fid.fidelity(Softmax, x, truth, 0, importance="square")


@pytest.mark.slow
def test_hirescam_beats_a_random_map_on_the_demo_model_with_a_lung_lesion(demo_cpu):
    from saliency_inspector.models.preprocess import preprocess
    from saliency_inspector.synth.phantom import make_phantom

    clf = demo_cpu
    case = make_phantom(seed=3, size=(96, 96, 48), lesions=["lung_left"], lesion_scale=1.8)
    res = si.explain(clf, case.ct, methods=["hirescam"], classes="lung_left")
    prepared = preprocess(case.ct, clf.card.input)
    on_input = fid.map_on_input_grid(res.raw[("hirescam", "lung_left")], prepared.grid)
    result = fid.fidelity(clf, prepared.tensor, on_input, 0, steps=10, replacement="air", air_value=0.0,
                          batch_size=11)
    assert result.curves.F > result.random.F + 0.05, result.to_dict()
    assert result.versus_random()["F_verdict"] == "above chance"  # above the 20 random maps' whole band


def test_bad_fidelity_input(box_case):
    x, truth = box_case
    with pytest.raises(InputError, match="at least 2 steps"):
        fid.fidelity(Softmax, x, truth, 0, steps=1)
    with pytest.raises(InputError, match="replacement 'zero' is not one of air, mean, blur, impute"):
        fid.fidelity(Softmax, x, truth, 0, replacement="zero")
    with pytest.raises(InputError, match="bring it onto the input grid"):
        fid.fidelity(Softmax, x, truth[:-1], 0)
