"""eMPRT (entropy ratio, Quantus' EfficientMPRT) and the data-randomization check (a model trained on
shuffled labels): known answers on synthetic maps, then on the demo model in 3D."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from saliency_inspector.errors import InputError
from saliency_inspector.scoring import randomization_tests as rt


def test_discrete_entropy_and_emprt_known_answers():
    halves = np.r_[np.zeros(500), np.ones(500)].reshape(10, 10, 10)  # two equally full bins
    even = (np.arange(10_000) % 100).astype(float).reshape(10, 10, 100)  # 100 equally full bins
    assert rt.discrete_entropy(halves) == pytest.approx(math.log(2), abs=1e-12)
    assert rt.discrete_entropy(even) == pytest.approx(math.log(100), abs=1e-12)
    assert rt.discrete_entropy(np.full((4, 4, 4), 3.0)) == 0.0
    assert rt.discrete_entropy(even, n_bins=10) == pytest.approx(math.log(10), abs=1e-12)
    # Quantus: (H(randomized) - H(original)) / H(original)
    assert rt.emprt_score(halves, even) == pytest.approx(math.log(100) / math.log(2) - 1, abs=1e-12)
    assert rt.emprt_score(even, halves) == pytest.approx(math.log(2) / math.log(100) - 1, abs=1e-12)
    assert math.isnan(rt.emprt_score(np.zeros((3, 3, 3)), even))


def test_emprt_verdict_needs_an_interval_over_seeds():
    rng = np.random.default_rng(0)
    blob = np.zeros((20, 20, 20))
    blob[8:12, 8:12, 8:12] = 1.0
    blob = ndimage.gaussian_filter(blob, 2)  # a compact map: most voxels ~0, low entropy
    noisy = [(s, blob, rng.normal(size=blob.shape)) for s in range(4)]  # randomized: noise, high entropy
    result = rt.emprt(noisy)
    assert result.verdict == rt.PASS and result.interval[0] > 0 and result.seeds == [0, 1, 2, 3]
    assert result.mean == pytest.approx(np.mean([rt.emprt_score(blob, r) for _, _, r in noisy]))
    simpler = [(s, rng.normal(size=blob.shape), blob > 0.5 * blob.max()) for s in range(4)]
    assert rt.emprt(simpler).verdict == rt.FAIL
    one = rt.emprt(noisy[:1])
    assert one.verdict == rt.INCONCLUSIVE and "at least 3" in one.why
    with pytest.raises(InputError):
        rt.emprt([])


def _cases(n, rng, shape=(16, 16, 16)):
    """Maps of n cases under a model that looks at one place (a shared blob, shifted a little)."""
    out = []
    for i in range(n):
        m = np.zeros(shape)
        m[5 + i % 2:9, 6:10, 4:8] = 1.0
        out.append(ndimage.gaussian_filter(m, 1.5) + 0.05 * rng.random(shape))
    return out


def test_data_randomization_fails_for_the_same_maps_and_passes_for_unrelated_ones():
    rng = np.random.default_rng(3)
    real = _cases(6, rng)
    same = rt.data_randomization(real, [m.copy() for m in real], seed=0, resamples=500)
    assert same.verdict == rt.FAIL and same.interval[0] > 0 and same.ssim == pytest.approx([1.0] * 6)
    unrelated = [ndimage.gaussian_filter(rng.random((16, 16, 16)), 2) for _ in range(6)]
    other = rt.data_randomization(real, unrelated, seed=0, resamples=500)
    assert other.verdict == rt.PASS and other.interval[1] < 0
    # the baseline is each case's real map against the other cases' real maps, as arrays
    from saliency_inspector.scoring.similarity import compare_maps

    expected = np.mean([compare_maps(real[0], real[j], "relu").ssim for j in range(1, 6)])
    assert other.baseline[0] == pytest.approx(expected, abs=1e-12)
    few = rt.data_randomization(real[:3], unrelated[:3], seed=0, resamples=500)
    assert few.verdict == rt.INCONCLUSIVE and few.n == 3
    with pytest.raises(InputError, match="model-input grid"):
        rt.data_randomization(real[:2], [np.zeros((8, 8, 8))] * 2)


@pytest.mark.slow
def test_emprt_on_the_trust_card_of_the_demo_model(tmp_path):
    import saliency_inspector as si
    from saliency_inspector.synth.phantom import make_phantom
    from saliency_inspector.workflows.trust import run_trust

    case = make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8)
    clf = si.load_classifier("demo", device="cpu")
    result = run_trust(case.ct, [clf], methods=["hirescam"], class_name="lung_left", n_baseline=2,
                       emprt_seeds=3, out_dir=tmp_path)
    verdict = result.card.rows["hirescam"]["emprt"]
    assert verdict.details["seeds"] == [0, 1, 2] and len(verdict.details["scores"]) == 3
    assert np.isfinite(verdict.value) and verdict.verdict in (rt.PASS, rt.FAIL, rt.INCONCLUSIVE)
    # seed 0's score is the cascade's own last step: the same maps the SSIM curve used
    curve = result.card.curves["hirescam"]
    assert verdict.details["scores"][0] == pytest.approx(rt.emprt_score(curve.maps[0].array, curve.maps[-1].array))
    data = json.loads((tmp_path / "trust.json").read_text())
    assert data["methods"]["hirescam"]["emprt"]["verdict"] == verdict.verdict and "emprt" in data["criteria"]


@pytest.mark.slow
def test_train_demo_shuffle_labels_and_the_data_randomization_check(tmp_path, monkeypatch):
    """A small shuffled-label training (16 phantoms, 1 epoch) through the CLI, then the check against
    the shipped demo model on 5 phantoms: the same model twice fails; the shuffled model's maps are
    judged against the cross-case baseline."""
    import saliency_inspector as si
    from saliency_inspector.cli import main
    from saliency_inspector.synth.phantom import make_phantom
    from saliency_inspector.training import demo_recipe
    from saliency_inspector.workflows.randomization_checks import data_randomization_check

    small = functools.partial(demo_recipe.train_demo_model, n_train=16, n_validation=8, epochs=1)
    monkeypatch.setattr(demo_recipe, "train_demo_model", small)
    assert main(["train-demo", "--shuffle-labels", "--seed", "3", "--out", str(tmp_path / "m")]) == 0
    card = json.loads((tmp_path / "m" / "demo-phantom-lesions-shuffled-seed3.json").read_text())
    assert card["training"]["labels"].startswith("shuffled")
    real = si.load_classifier("demo", device="cpu")
    shuffled = si.load_classifier(str(tmp_path / "m" / "demo-phantom-lesions-shuffled-seed3.pt"),
                                  card=str(tmp_path / "m" / "demo-phantom-lesions-shuffled-seed3.json"), device="cpu")
    cts = [make_phantom(seed=40 + i, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8).ct for i in range(5)]
    same = data_randomization_check(real, real, cts, "hirescam", "lung_left", resamples=500)
    assert same.verdict == rt.FAIL and same.ssim == pytest.approx([1.0] * 5)
    check = data_randomization_check(real, shuffled, cts, "hirescam", "lung_left", resamples=500)
    assert check.n == 5 and check.difference < same.difference
    print(f"data randomization: SSIM real vs shuffled {np.mean(check.ssim):.3f}, cross-case baseline "
          f"{np.mean(check.baseline):.3f}, difference {check.difference:+.3f} {check.interval} -> {check.verdict}")
