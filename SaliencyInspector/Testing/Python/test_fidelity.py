"""Fidelity curves: known answers on a box model, HiResCAM beats chance on the demo model, batching."""

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
    runs = {name: fid.fidelity(Softmax, x, m, 0, steps=10, replacement=replacement, air_value=0.0, seed=3)
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
    assert one.forwards == many.forwards == 2 * 2 * 8  # 8 steps per curve, 2 curves, map + random
    for a, b in ((one.curves, many.curves), (one.random, many.random)):
        for key in ("mif_probability", "lif_probability", "mif_logit", "lif_logit"):
            np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-6, atol=1e-7)


def test_imputation_solves_the_six_neighbour_mean():
    rng = np.random.default_rng(0)
    image = rng.random((5, 6, 7))
    removed = np.zeros(image.shape, bool)
    removed[1:4, 2:5, 2:6] = True
    out = fid.impute(image, removed, 0.0, rng)
    np.testing.assert_array_equal(out[~removed], image[~removed])
    padded = np.pad(out, 1, mode="constant", constant_values=np.nan)
    neighbours = np.stack([np.roll(padded, s, a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (-1, 1)])
    np.testing.assert_allclose(out[removed], np.nanmean(neighbours, 0)[removed], atol=1e-5)


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


def test_bad_fidelity_input(box_case):
    x, truth = box_case
    with pytest.raises(InputError, match="at least 2 steps"):
        fid.fidelity(Softmax, x, truth, 0, steps=1)
    with pytest.raises(InputError, match="replacement 'zero' is not one of air, mean, blur, impute"):
        fid.fidelity(Softmax, x, truth, 0, replacement="zero")
    with pytest.raises(InputError, match="bring it onto the input grid"):
        fid.fidelity(Softmax, x, truth[:-1], 0)
