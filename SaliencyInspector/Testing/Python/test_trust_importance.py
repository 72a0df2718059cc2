"""Issue 22 leftovers on the trust card: each method's declared importance (relu/abs/signed) is the
transform the card compares and ranks by (and it says so); the data-randomization criterion
(``--shuffled-model``); the randomization verdict's interval covering every cohort case."""

import functools
import json

import numpy as np
import pytest
from scipy import ndimage

import saliency_inspector as si
from saliency_inspector.cli import main
from saliency_inspector.explainers.randomization import prepare, randomized_maps
from saliency_inspector.explainers.registry import register_method, unregister_method
from saliency_inspector.scoring import similarity as sim
from saliency_inspector.scoring import trust
from saliency_inspector.scoring.masks import body_mask
from saliency_inspector.scoring.randomization_tests import DataRandomization
from saliency_inspector.scoring.trust_measures import auprc_pair
from saliency_inspector.synth.phantom import make_phantom
from saliency_inspector.workflows.trust import importance_of, run_trust


def smooth_field(seed, shape=(20, 24, 28), sigma=2.5):
    return ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)


@pytest.fixture(scope="module")
def demo():
    return si.load_classifier("demo", device="cpu")


@pytest.fixture(scope="module")
def case():
    return make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left", "liver"], lesion_scale=1.8)


@pytest.fixture(scope="module")
def negative_ct():
    """A signed toy method: minus the windowed CT minus 0.001 (every voxel negative, darker = less
    negative): ReLU would blank it, the signed map ranks air (the lungs) first."""
    name = "negative_ct_test"
    register_method(name, lambda model, x, target: -x[0, 0].detach() - 0.001, importance="signed", meaning="signed")
    yield name
    unregister_method(name)


# ---- the signed normalisation for SSIM -----------------------------------------------------------------
def test_signed_normalisation_keeps_both_signs_and_mirrors_under_negation():
    m = smooth_field(0)
    n = sim.normalise(m, "signed", clip_percentile=100.0)
    # min–max of the raw map: the most negative voxel 0, the most positive 1, zero in between
    assert n.min() == 0.0 and n.max() == 1.0
    assert n.ravel()[np.argmin(m)] == 0.0 and n.ravel()[np.argmax(m)] == 1.0
    assert np.allclose(n, (m - m.min()) / (m.max() - m.min()))
    # symmetric percentile clip: the negated map normalises to 1 − the map (default 1st–99th)
    assert np.allclose(sim.normalise(-m, "signed"), 1.0 - sim.normalise(m, "signed"), atol=1e-12)
    # a map and its negation: |map| sees the same map, the signed rule sees opposite evidence
    assert sim.compare_maps(m, -m, "abs").ssim == pytest.approx(1.0, abs=1e-12)
    opposite = sim.compare_maps(m, -m, "signed")
    assert opposite.ssim < -0.5 and opposite.spearman == pytest.approx(-1.0)
    assert sim.compare_maps(m, m, "signed").ssim == pytest.approx(1.0, abs=1e-12)


def test_signed_support_is_where_either_map_is_non_zero():
    a = np.zeros((12, 12, 12))
    a[3:6, 3:6, 3:6] = -1.0
    b = np.zeros_like(a)
    b[6:9, 6:9, 6:9] = 2.0
    got = sim.compare_maps(a, b, "signed")
    assert got.region == "support" and got.region_voxels == 54


def test_importance_of_is_the_registry_declaration():
    assert importance_of("hirescam") == "relu" and importance_of("gradient") == "abs"
    assert importance_of("ig") == "signed" and importance_of("ig", "relu") == "relu"
    with pytest.raises(si.InputError, match="importance"):
        importance_of("ig", "softmax")


# ---- the card uses and prints each method's importance ----------------------------------------------
def test_card_ranks_and_compares_each_method_by_its_declared_importance(case, demo, negative_ct, tmp_path):
    result = run_trust(case.ct, [demo], methods=["hirescam", negative_ct], class_name="lung_left",
                       masks=case.organs, segment="lung_left", out_dir=tmp_path, n_baseline=4, emprt_seeds=1,
                       allow_mismatch=True)
    card = result.card
    assert card.context["normalisation"] == {"hirescam": "relu", negative_ct: "signed"}
    assert card.curves[negative_ct].normalisation == "signed" and card.curves["hirescam"].normalisation == "relu"
    # localization ranks the signed map as it is (ReLU would make it all zero: AP = prevalence)
    loc = card.rows[negative_ct]["localization"]
    body = body_mask(case.ct)
    mask = case.organs.resampled_to(case.ct).mask("lung_left")
    from saliency_inspector.io.volume import resample_to
    raw = resample_to(card.curves[negative_ct].maps[0], case.ct, "linear").array.astype(np.float64)
    assert loc.details["map"]["average_precision"] == pytest.approx(auprc_pair(raw[body], mask[body])[0], abs=1e-9)
    assert loc.details["map"]["average_precision"] > 1.5 * loc.details["prevalence"]  # ReLU: = prevalence
    # the randomized map of a signed method is never called blank for having no positive voxel
    assert not any(card.curves[negative_ct].blank)
    # printed on the terminal table, in the JSON and on the page
    text = card.format()
    assert f"{negative_ct}: maps compared and ranked by signed map (signed)" in text
    assert "hirescam: maps compared and ranked by ReLU(map) (relu)" in text
    data = json.loads(result.json_path.read_text())
    assert data["context"]["importance"][negative_ct]["importance"] == "signed"
    assert "1st–99th percentiles" in data["context"]["importance"][negative_ct]["for_ssim"]
    html = result.report.read_text()
    assert "by signed map (signed)" in html and "by ReLU(map) (relu)" in html


# ---- data randomization -------------------------------------------------------------------------------
def test_data_randomization_judge_carries_n_interval_and_verdict():
    d = DataRandomization(ssim=[0.2] * 5, baseline=[0.6] * 5, difference=-0.4, interval=[-0.5, -0.3], n=5,
                          verdict="pass", why="", normalisation="relu")
    v = trust.CRITERIA["data_randomization"].judge(trust.Evidence(data_randomization=d))
    assert (v.verdict, v.n, v.interval, v.estimate) == ("pass", 5, [-0.5, -0.3], -0.4)
    assert v.value == pytest.approx(0.2) and v.baseline == pytest.approx(0.6)
    missing = trust.CRITERIA["data_randomization"].judge(trust.Evidence())
    assert missing.verdict == trust.NOT_MEASURED and "--shuffled-model" in missing.note


def test_the_real_model_as_its_own_shuffled_model_fails_data_randomization(case, demo, tmp_path):
    result = run_trust(case.ct, [demo], methods=["hirescam"], class_name="lung_left", randomize=False,
                       n_baseline=4, shuffled_model=demo, out_dir=tmp_path)
    v = result.card.rows["hirescam"]["data_randomization"]
    assert v.verdict == "fail" and v.n == 5 and v.value == pytest.approx(1.0)
    assert v.interval[0] > 0
    data = json.loads(result.json_path.read_text())
    assert data["methods"]["hirescam"]["data_randomization"]["n"] == 5 and "data_randomization" in data["criteria"]
    assert "Data randomization" in result.report.read_text() and "Data randomization" in result.card.format()


@pytest.mark.slow
def test_cli_trust_with_a_tiny_shuffled_label_model(case, tmp_path, monkeypatch):
    """A deliberately tiny shuffled-label training (16 phantoms, 1 epoch) through ``train-demo``, then
    ``trust --shuffled-model``: the criterion is on the card with n, interval and verdict."""
    from saliency_inspector.io.volume import write_volume
    from saliency_inspector.training import demo_recipe

    monkeypatch.setattr(demo_recipe, "train_demo_model",
                        functools.partial(demo_recipe.train_demo_model, n_train=16, n_validation=8, epochs=1))
    assert main(["train-demo", "--shuffle-labels", "--seed", "3", "--out", str(tmp_path / "m")]) == 0
    write_volume(case.ct, tmp_path / "ct.nrrd")
    assert main(["trust", str(tmp_path / "ct.nrrd"), "--model", "demo", "--method", "hirescam", "--class",
                 "lung_left", "--skip-randomization", "--shuffled-model",
                 str(tmp_path / "m" / "demo-phantom-lesions-shuffled-seed3.pt"), "--out", str(tmp_path / "t")]) == 0
    v = json.loads((tmp_path / "t" / "trust.json").read_text())["methods"]["hirescam"]["data_randomization"]
    assert v["n"] == 5 and len(v["interval"]) == 2 and v["verdict"] in ("pass", "fail", "inconclusive")
    assert v["interval"][0] <= v["estimate"] <= v["interval"][1]
    assert v["value"] < 0.999  # another model's maps, not the real model's
    print(f"tiny shuffled model: SSIM {v['value']:.3f} vs {v['baseline']:.3f}, Δ {v['estimate']:+.3f} "
          f"{v['interval']} n={v['n']} -> {v['verdict']}")


# ---- the randomization interval covers the cohort's randomized cases ---------------------------------
@pytest.mark.slow
def test_cohort_cases_are_randomized_with_the_same_last_step_model(case, demo):
    cohort = [make_phantom(seed=41 + i, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8).ct
              for i in range(2)]
    result = run_trust(case.ct, [demo], methods=["hirescam"], class_name="lung_left", cohort=cohort, emprt_seeds=1)
    v = result.card.rows["hirescam"]["randomization"]
    per_case = v.details["ssim_per_case"]
    assert len(per_case) == 3 and per_case[0] == v.details["ssim_this_ct"] == result.card.curves["hirescam"].ssim[-1]
    assert v.value == pytest.approx(np.mean(per_case))
    # known answer: a cohort case's entry is the last step of that case's own cascade (same seed)
    steps = list(randomized_maps(demo, cohort[1], "hirescam", "lung_left", seed=0))
    body = body_mask(cohort[1], prepare(demo, cohort[1]).grid)
    expected = sim.compare_maps(steps[0][1].volume, steps[-1][1].volume, "relu", body).ssim
    assert per_case[2] == pytest.approx(expected, abs=1e-9)
    single = run_trust(case.ct, [demo], methods=["hirescam"], class_name="lung_left", emprt_seeds=1)
    assert "taken as measured on this CT alone" in single.card.rows["hirescam"]["randomization"].note
