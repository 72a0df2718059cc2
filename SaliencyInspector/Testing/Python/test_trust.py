"""Trust card (evaluate/trust.py, explain/randomization.py, trust_card.py, `trust` CLI): known answers."""

import json
from html import escape

import numpy as np
import pytest
import torch

import saliency_inspector as si
from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.scoring import trust
from saliency_inspector.explainers.registry import register_method, unregister_method
from saliency_inspector.explainers.randomization import randomization_blocks
from saliency_inspector.io.volume import write_volume
from saliency_inspector.models.demo_model import MODELS_DIR
from saliency_inspector.synth.phantom import make_phantom
from saliency_inspector.workflows.trust import ct_intensity, run_trust

SEED1 = MODELS_DIR / "demo-phantom-lesions-seed1.pt"


@pytest.fixture(scope="module")
def case():
    # the demo model's own input size: no resampling cost, lesions the size it was trained on
    return make_phantom(seed=5, size=(64, 64, 32), lesions=["lung_left", "liver"], lesion_scale=1.8)


@pytest.fixture(scope="module")
def demo():
    return si.load_classifier("demo", device="cpu")


@pytest.fixture(scope="module")
def ct_echo():
    """The CT intensity as a custom estimator: a callable taking model and input (and the class)."""
    name = "ct_echo_test"
    register_method(name, ct_intensity, description="returns the input")
    yield name
    unregister_method(name)


@pytest.fixture(scope="module")
def card_run(case, demo, ct_echo, tmp_path_factory):
    before = {k: v.clone() for k, v in demo.module.state_dict().items()}
    out = tmp_path_factory.mktemp("trust")
    result = run_trust(case.ct, [demo, demo], methods=["hirescam", "gradcam", ct_echo], class_name="lung_left",
                       masks=case.lesions, out_dir=out, n_baseline=4)
    return result, before


def test_ct_intensity_fails_randomization_and_hirescam_passes(card_run, ct_echo):
    result, _ = card_run
    card = result.card
    echo = card.rows[ct_echo]["randomization"]
    assert echo.verdict == "fail"
    assert np.allclose(card.curves[ct_echo].ssim, 1.0, atol=1e-12)  # the map never changes
    assert np.allclose(card.curves[ct_echo].spearman, 1.0, atol=1e-12)
    hires = card.rows["hirescam"]["randomization"]
    assert hires.verdict == "pass" and hires.value < hires.baseline
    assert card.curves["hirescam"].blocks[0] == "original" and card.curves["hirescam"].ssim[0] == pytest.approx(1.0)
    # cascading goes from the output down through every block with parameters
    assert card.curves["hirescam"].blocks[1:3] == ["classifier", "lesion_map.0"]
    assert card.curves["hirescam"].blocks[-1] == "features.0"
    # re-initialising the linear head alone already moves HiResCAM (G = W^c at the lesion map)
    assert card.curves["hirescam"].ssim[1] < 0.9
    # Grad-CAM's result is whatever it is: it is on the card with its value, baseline and rule
    grad = card.rows["gradcam"]["randomization"]
    assert grad.verdict in ("pass", "fail") and grad.value is not None and grad.rule


def test_the_classifier_is_never_modified(card_run, demo):
    _, before = card_run
    after = demo.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_repeatability_of_a_model_with_itself_is_one(card_run):
    for method in ("hirescam", "gradcam"):
        rep = card_run[0].card.rows[method]["repeatability"]
        assert rep.value == pytest.approx(1.0, abs=1e-12) and rep.verdict == "pass"
        assert rep.details["spearman"] == pytest.approx(1.0) and rep.details["top_k_overlap"] == 1.0
        assert card_run[0].card.rows[method]["reproducibility"].verdict == "not measured"


def test_localization_flags_a_method_no_better_than_the_ct_intensity(card_run, ct_echo):
    rows = card_run[0].card.rows
    echo = rows[ct_echo]["localization"]
    # one CT: one case, below the minimum of 5 cases: INCONCLUSIVE, saying what this case shows
    assert echo.verdict == "inconclusive" and "CT intensity" in echo.note and echo.n == 1
    hires = rows["hirescam"]["localization"]
    d = hires.details
    assert hires.verdict == "inconclusive" and "the map beats" in hires.note and hires.estimate > 0
    assert d["mask"] == "lesion_lung_left"
    assert d["uniform"]["average_precision"] == pytest.approx(d["prevalence"])
    assert d["uniform"]["trapezoid"] == pytest.approx((1 + d["prevalence"]) / 2)


def test_card_json_and_report_come_from_the_criteria_registry(card_run):
    result, _ = card_run
    data = json.loads(result.json_path.read_text())
    assert set(data["criteria"]) == set(trust.CRITERIA)
    for row in data["methods"].values():
        assert set(row) == set(trust.CRITERIA)
        assert all(v["verdict"] in trust.VERDICTS and v["rule"] for v in row.values())
        measured = [v for v in row.values() if v["verdict"] != "not measured"]
        assert all(v["n"] >= 1 and len(v["interval"]) == 2 and v["statistic"] for v in measured)
    html = result.report.read_text()
    for c in trust.CRITERIA.values():
        assert escape(c.name) in html and escape(c.rule) in html
    for png in ("trust_randomization.png", "trust_randomized_maps.png"):
        assert (result.report.parent / png).stat().st_size > 5000 and png in html
    assert "gaze" in data["methods"]["hirescam"] and data["methods"]["hirescam"]["gaze"]["verdict"] == "not measured"


def test_auprc_pair_equals_scikit_learn():
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500).astype(float)  # ties
    labels = rng.random(500) < 0.1 + scores / 40
    ap, trapezoid = trust.auprc_pair(scores, labels)
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert trapezoid == pytest.approx(auc(recall, precision), abs=1e-12)


def test_blocks_follow_execution_order_for_a_monai_densenet():
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    blocks = randomization_blocks(net, torch.zeros(1, 1, 32, 32, 32))
    assert blocks == ["features.conv0", "features.norm0", "features.denseblock1", "features.transition1",
                      "features.denseblock2", "features.transition2", "features.denseblock3",
                      "features.transition3", "features.denseblock4", "features.norm5", "class_layers.out"]


def test_independent_randomization_restores_each_block(case, demo, card_run):
    from saliency_inspector.explainers.randomization import randomized_maps

    steps = list(randomized_maps(demo, case.ct, "hirescam", "lung_left", mode="independent"))
    curve = trust.randomization_curve(steps, "hirescam", "independent")
    # only the classifier randomized vs only the first convolution: two different maps, neither the original
    assert curve.ssim[1] < 0.99 and curve.ssim[-1] < 0.99
    cascading = card_run[0].card.curves["hirescam"].maps
    assert not np.allclose(cascading[-1].array, steps[-1][1].volume.array)
    # seeded: the same run gives the same maps
    again = list(randomized_maps(demo, case.ct, "hirescam", "lung_left", mode="independent"))
    assert all(np.array_equal(a[1].volume.array, b[1].volume.array) for a, b in zip(steps, again))


@pytest.mark.skipif(not SEED1.is_file(), reason="the seed-1 demo model is not shipped")
def test_repeatability_with_a_seed1_retrain_is_below_one(case, demo):
    twin = si.load_classifier(str(SEED1), device="cpu")
    result = run_trust(case.ct, [demo, twin], methods=["hirescam"], class_name="lung_left", n_baseline=4)
    rep = result.card.rows["hirescam"]["repeatability"]
    assert rep.verdict in ("pass", "fail") and 0 < rep.value < 0.999, rep
    assert rep.details["models"] == ["demo-phantom-lesions", "demo-phantom-lesions-seed1"]


def test_models_with_different_classes_are_refused_naming_them(case, demo):
    from saliency_inspector.models.card import ModelCard
    from saliency_inspector.models.loaders import Classifier
    import copy

    card = ModelCard.from_dict({**demo.card.to_dict(), "name": "other",
                                "classes": ["lung_left", "lung_right", "liver", "spleen"]})
    other = Classifier(copy.deepcopy(demo.module), card, demo.device)
    with pytest.raises(InputError, match="only in 'demo-phantom-lesions': kidney; only in 'other': spleen"):
        run_trust(case.ct, [demo, other], methods=["hirescam"], class_name="liver")


@pytest.mark.slow
def test_cli_trust_with_fixations_outside_the_ct_and_bad_input(case, tmp_path, capsys):
    from saliency_inspector.scoring import fixations

    ct_path = write_volume(case.ct, tmp_path / "ct.nrrd")
    truth = si.explain(si.load_classifier("demo", device="cpu"), case.ct, methods=["hirescam"], classes="lung_left")
    fx = fixations.sample_fixations(truth.map("hirescam", "lung_left"), 200, seed=1)
    fx = fixations.Fixations.concat([fx, fixations.Fixations(np.array([[900.0, 900.0, 900.0]]), np.ones(1),
                                          np.array(["reader"], dtype=object))])
    fx_path = fixations.write_fixations_csv(fx, tmp_path / "fx.csv", "RAS")
    rc = main(["trust", str(ct_path), "--model", "demo", "--method", "hirescam", "--class", "lung_left",
               "--fixations", str(fx_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads((tmp_path / "out" / "trust.json").read_text())
    g = data["methods"]["hirescam"]["gaze"]
    assert "1 of 201 fixations lie outside the CT and were dropped" in g["note"]
    assert g["value"] > 0.5 and g["details"]["metrics"]["nss"] > 1
    assert "Readers' gaze" in out.out
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    import shutil  # a second model whose card lists other classes
    shutil.copy(MODELS_DIR / "demo-phantom-lesions.pt", tmp_path / "other.pt")
    card = json.loads((MODELS_DIR / "demo-phantom-lesions.json").read_text())
    card.update(name="other", classes=["lung_left", "lung_right", "liver", "spleen"])
    (tmp_path / "other.json").write_text(json.dumps(card))
    for argv, message in (
            (["--model", str(tmp_path / "other.pt")], "only in 'demo-phantom-lesions': kidney; only in 'other': spleen"),
            (["--fixations", str(empty)], "empty"),
            (["--class", "spleen"], "not one of the model's classes"),
            (["--model", str(tmp_path / "missing.pt")], "model not found")):
        args = ["trust", str(ct_path), "--model", "demo", "--method", "hirescam", "--class", "lung_left",
                "--out", str(tmp_path / "bad")]
        for i in range(0, len(argv), 2):
            flag = argv[i]
            if flag in args and flag != "--model":
                args[args.index(flag) + 1] = argv[i + 1]
            else:
                args += argv[i:i + 2]
        assert main(args) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines come first
        assert message in last and last.startswith("saliency-inspector: error:"), last


@pytest.mark.slow
def test_a_cohort_gives_the_baseline_pairs_and_the_location_prior(case, demo):
    others = [make_phantom(seed=s, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8) for s in (11, 12, 13)]
    result = run_trust(case.ct, [demo], methods=["hirescam"], class_name="lung_left", masks=case.lesions,
                       cohort=[(o.ct, o.lesions) for o in others])
    row = result.card.rows["hirescam"]
    assert row["randomization"].details["baseline_source"].startswith("this CT and 3 cohort cases")
    # 4 cases give 6 pairs, below the minimum of 10: the verdict cannot be judged and says so
    assert row["randomization"].n == 6 and row["randomization"].verdict == "inconclusive"
    assert "6 pairs of cases (fewer than 10)" in row["randomization"].note
    prior = row["localization"].details["location_prior"]
    # where the other cases' lesions miss this one, the prior scores like the uniform map; never below
    assert prior["average_precision"] >= row["localization"].details["uniform"]["average_precision"]
    assert row["localization"].n == 4  # this CT and the 3 cohort cases with masks


def test_location_prior_moves_masks_by_the_body_box():
    source_body = np.zeros((40, 40, 40), bool)
    source_body[10:30, 10:30, 10:30] = True
    mask = np.zeros_like(source_body)
    mask[18:22, 18:22, 18:22] = True  # centred in the source body box
    target_body = np.zeros((60, 60, 60), bool)
    target_body[5:45, 5:45, 5:45] = True  # twice the size, shifted
    prior = trust.location_prior(target_body, [(mask, source_body), (mask, source_body)])
    centroid = np.array([(prior.sum(axis=tuple(a for a in range(3) if a != ax)) * np.arange(60)).sum()
                         for ax in range(3)]) / prior.sum()
    assert np.allclose(centroid, 24.5, atol=0.05)  # the target box's centre (voxels 5..44)
    assert prior.sum() == pytest.approx(mask.sum() * 8, rel=0.05) and prior.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_another_training_seed_is_repeatability_below_one_and_another_architecture_reproducibility(
        case, demo, tmp_path):
    """Two trainings of the same architecture (a short seed-1 training here) are compared as
    repeatability; a network with other widths as reproducibility."""
    from saliency_inspector.models import demo_model as dm
    from saliency_inspector.models.card import ModelCard
    from saliency_inspector.models.loaders import Classifier
    from saliency_inspector.training.demo_recipe import train_demo_model

    trained = train_demo_model(tmp_path, seed=1, n_train=4, n_validation=2, epochs=1)
    twin = si.load_classifier(str(trained["weights"]), device="cpu")
    row = run_trust(case.ct, [demo, twin], methods=["hirescam"], class_name="lung_left", n_baseline=1,
                    randomize=False).card.rows["hirescam"]
    assert row["repeatability"].verdict == "inconclusive" and 0 < row["repeatability"].value < 0.999  # 1 pair
    assert row["repeatability"].details["models"] == ["demo-phantom-lesions", "demo-phantom-lesions-seed1"]
    assert row["reproducibility"].verdict == "not measured"

    torch.manual_seed(0)
    kwargs = {**dm.DEFAULT_ARCH_KWARGS, "channels": [4, 8, 16]}
    card = ModelCard.from_dict({**demo.card.to_dict(), "name": "narrow", "architecture": {"name": "demo", "kwargs": kwargs}})
    narrow = Classifier(dm.build_demo_network(**kwargs), card, demo.device)
    row = run_trust(case.ct, [demo, narrow], methods=["hirescam"], class_name="lung_left", n_baseline=1,
                    randomize=False).card.rows["hirescam"]
    assert row["reproducibility"].value < 0.999 and row["repeatability"].verdict == "not measured"
    assert row["randomization"].verdict == "not measured"
