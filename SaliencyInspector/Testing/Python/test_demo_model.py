"""The shipped demo classifier: architecture, exact HiResCAM head, shipped weights, and what it
does on phantoms it never saw (predicts the lesions; HiResCAM mass sits in the lesion's organ)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliency_inspector.models import demo_model as dm
from saliency_inspector.io.volume import Volume


def _random_model(seed=0):
    torch.manual_seed(seed)
    model = dm.build_demo_network(**dm.DEFAULT_ARCH_KWARGS).eval()
    with torch.no_grad():  # a non-trivial head (default init has tiny logits)
        model.classifier.weight.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def shipped():
    card = json.loads(dm.DEMO_CARD_PATH.read_text())
    model = dm.build_demo_network(**card["architecture"]["kwargs"])
    model.load_state_dict(torch.load(dm.DEMO_WEIGHTS_PATH, map_location="cpu", weights_only=True))
    return model.eval(), card


# ---- architecture and the exact head ---------------------------------------------------------------
def test_head_is_conv_flatten_linear_and_input_size_is_checked():
    model = _random_model()
    conv, sigmoid = model.lesion_map
    # the target layer has several channels (>= 8), so Grad-CAM has a weight per channel to differ by
    assert isinstance(conv, torch.nn.Conv3d) and conv.kernel_size == (1, 1, 1) and conv.out_channels == 8
    assert isinstance(sigmoid, torch.nn.Sigmoid)
    assert isinstance(model.classifier, torch.nn.Linear)
    assert model.feature_size == tuple(n // dm.POOLING for n in dm.INPUT_SIZE) == (8, 16, 16)
    assert model.classifier.in_features == 8 * 8 * 16 * 16
    x = torch.rand(2, 1, *dm.INPUT_SIZE)
    assert model(x).shape == (2, len(dm.DEMO_CLASSES))
    with pytest.raises(ValueError, match="input.size"):
        model(torch.rand(1, 1, 32, 64, 60))
    # the class scores are one linear layer over the flattened lesion map
    with torch.no_grad():
        cells = model.lesion_map(model.features(x)).flatten(1)
        torch.testing.assert_close(model(x), cells @ model.classifier.weight.T + model.classifier.bias)


def test_hirescam_matches_autograd_and_captum_and_sums_to_the_logit():
    from captum.attr import LayerGradCam, LayerGradientXActivation

    model = _random_model(1)
    x = torch.rand(2, 1, *dm.INPUT_SIZE)
    with torch.no_grad():
        logits, maps = model.hirescam(x)
    # faithfulness identity: the target layer feeds flatten -> linear directly
    torch.testing.assert_close(maps.sum(dim=(2, 3, 4)), logits - model.classifier.bias, atol=1e-4, rtol=1e-4)
    grad_x_act = LayerGradientXActivation(model, model.lesion_map)
    for c in range(len(dm.DEMO_CLASSES)):
        # Captum's per-channel G ⊙ A at the target layer, summed over channels = HiResCAM
        peer = grad_x_act.attribute(x, target=c).sum(dim=1)
        torch.testing.assert_close(maps[:, c], peer, atol=1e-5, rtol=1e-4)
    # HiResCAM and Grad-CAM genuinely differ with this head (the gradient varies over space)
    gradcam = LayerGradCam(model, model.lesion_map).attribute(x, target=0, relu_attributions=False)[:, 0]
    r = np.corrcoef(gradcam[0].detach().numpy().ravel(), maps[0, 0].numpy().ravel())[0, 1]
    assert r < 0.99


# ---- preprocessing -----------------------------------------------------------------------------------
def _box(volume):
    """The physical axis-aligned box around a grid's voxel boxes: (low corner, high corner)."""
    import itertools

    points = np.array([volume.index_to_physical(ijk) for ijk in
                       itertools.product(*[(-0.5, n - 0.5) for n in volume.size_xyz])])
    return points.min(0), points.max(0)


def test_model_grid_is_the_cards_lps_grid_over_the_field_of_view_and_ct_to_input_windows():
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # axes rotated
    ct = Volume(np.full((40, 100, 80), -1000, np.int16), (0.7, 0.9, 2.5), (-30.0, 12.0, 5.0), direction)
    grid = dm.model_grid(ct)
    assert grid.shape == dm.INPUT_SIZE
    np.testing.assert_allclose(grid.direction, np.eye(3))  # the card's orientation, LPS, whatever the storage
    for ours, theirs in zip(_box(grid), _box(ct)):  # the same field of view
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # a bright 10-voxel-wide block at a known physical place lands on the model voxel there
    arr = ct.array.copy()
    arr[20:30, 40:60, 30:50] = 1000
    x = dm.ct_to_input(ct.with_array(arr))
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == pytest.approx(1.0)
    k, j, i = np.unravel_index(np.argmax(x), x.shape)
    point = grid.index_to_physical([i, j, k])
    ijk = ct.physical_to_index(point)
    assert 30 <= ijk[0] < 50 and 40 <= ijk[1] < 60 and 20 <= ijk[2] < 30
    lo, hi = dm.WINDOW
    middle = np.full(ct.shape, (lo + hi) / 2, np.int16)
    middle[0, 0, 0] = -1000  # preprocessing refuses a constant image
    x_mid = dm.ct_to_input(ct.with_array(middle))
    np.testing.assert_allclose(np.median(x_mid), 0.5, atol=1e-6)  # the window's middle maps to 0.5


@pytest.mark.parametrize("oblique", [False, True])
def test_a_training_case_is_exactly_what_inference_feeds_the_network(oblique):
    """Training and inference share one preprocessing: a phantom made larger than the model input
    (and oblique) becomes the same tensor in make_example as through the shipped card."""
    from saliency_inspector.models.preprocess import preprocess
    from saliency_inspector.synth.phantom import make_phantom

    lesions, size = ["kidney_left"], (96, 96, 40)
    x, _, organs, body, _ = dm.make_example(4_000_003, lesions, dm.INPUT_SIZE, size, oblique)
    ct = make_phantom(seed=4_000_003, size=size, lesions=lesions, oblique=oblique, lesion_scale=dm.LESION_SCALE).ct
    card = json.loads(dm.DEMO_CARD_PATH.read_text())
    from saliency_inspector.models.card import ModelCard

    prepared = preprocess(ct, ModelCard.from_dict(card).input)
    np.testing.assert_array_equal(x, prepared.tensor[0, 0].numpy())
    # the masks are on that same grid: the body covers the bright part of the input
    assert prepared.grid.shape == body.shape and (x[body] > 0).mean() > 0.5 and (x[~body] > 0).mean() < 0.05


# ---- shipped weights and card ------------------------------------------------------------------------
def test_shipped_card_and_weights(shipped):
    model, card = shipped
    assert dm.DEMO_WEIGHTS_PATH.stat().st_size < 3 * 2**20
    assert card["classes"] == list(dm.DEMO_CLASSES) and card["multilabel"] is True
    assert card["input"] == {"size": list(dm.INPUT_SIZE), "spacing": None, "orientation": "LPS", "axes": "zyx",
                             "window": list(dm.WINDOW), "pad_value": -1000.0, "channels": 1}
    assert card["input"] == dm.demo_card()["input"]  # what train-demo writes
    assert isinstance(dict(model.named_modules())[card["target_layer"]], torch.nn.Sequential)
    assert card["training"]["validation"]["n_cases"] >= 20


def test_shipped_card_reports_validation_on_unseen_phantoms(shipped):
    """The card's validation (64 phantoms with seeds training never saw): every class's lesions are
    detected (ROC AUC >= 0.90), and HiResCAM mass sits in the present class's organ far above a
    uniform map's."""
    model, card = shipped
    val = card["training"]["validation"]
    assert val["n_cases"] >= 64
    assert all(val["roc_auc"][name] >= 0.90 for name in dm.DEMO_CLASSES), val["roc_auc"]
    assert val["hirescam_mass_in_organ"] > 3 * val["uniform_mass_in_organ"]
    assert model.lesion_map[0].out_channels >= 8
    assert card["architecture"]["kwargs"] == dm.DEFAULT_ARCH_KWARGS  # what train-demo builds


UNSEEN = [  # (phantom seed, lesion organs): seeds < 1_000_000 are never used in training
    (7, ["liver"]), (8, ["lung_left"]), (9, ["lung_right", "kidney_left"]), (10, ["kidney_right"]),
    (11, []), (12, ["liver", "lung_right"]), (13, ["spleen"]), (14, ["lung_left", "kidney_right"]),
    (15, ["lung_right"]), (16, []),
]


@pytest.mark.slow
def test_unseen_phantoms_hirescam_points_at_the_lesion_organ_and_lungs_are_predicted(shipped):
    """On phantoms it never saw, at a CT size other than the model's: the HiResCAM map of a present
    class (mapped onto the CT's own grid) has far more mass in that organ than a uniform map would,
    and lung lesions are told from lesion-free lungs (pooled ROC AUC ≥ 0.8)."""
    from saliency_inspector.synth.phantom import make_phantom
    from saliency_inspector.io.volume import resample_to

    model, card = shipped
    probs, truth, masses, uniforms = [], [], [], []
    for seed, lesions in UNSEEN:
        case = make_phantom(seed=seed, size=(96, 96, 40), lesions=lesions, lesion_scale=dm.LESION_SCALE)
        x = torch.from_numpy(dm.ct_to_input(case.ct))[None, None]
        with torch.no_grad():
            logits, maps = model.hirescam(x)
        probs.append(torch.sigmoid(logits)[0].numpy())
        truth.append(dm.labels_for(lesions))
        # raw feature map -> CT grid through physical space (same field of view)
        grid = dm.model_grid(case.ct, model.feature_size)
        body = case.organs.mask("body")
        for k in np.nonzero(truth[-1])[0]:
            on_ct = resample_to(grid.with_array(F.relu(maps[0, k]).numpy()), case.ct, "linear").array
            organ = np.zeros(body.shape, bool)
            for name in dm.CLASS_ORGANS[dm.DEMO_CLASSES[k]]:
                organ |= case.organs.mask(name)
            organ &= body
            masses.append(on_ct[organ].sum() / on_ct[body].sum())
            uniforms.append(organ.sum() / body.sum())
    probs, truth = np.array(probs), np.array(truth) > 0.5
    masses, uniforms = np.array(masses), np.array(uniforms)
    assert np.all(masses > 2 * uniforms)
    assert masses.mean() > 4 * uniforms.mean()
    from sklearn.metrics import roc_auc_score

    lungs = [dm.DEMO_CLASSES.index("lung_left"), dm.DEMO_CLASSES.index("lung_right")]
    assert roc_auc_score(truth[:, lungs].ravel(), probs[:, lungs].ravel()) >= 0.8


def test_demo_classifier_through_the_public_pipeline_matches_the_direct_path(shipped):
    """models.demo_classifier + explain give the same logits and (raw, feature-grid) HiResCAM as the
    network's own exact head, and maps on the CT's grid."""
    from saliency_inspector.explainers.explanation import explain
    from saliency_inspector.models.demo_model import demo_classifier
    from saliency_inspector.synth.phantom import make_phantom

    model, _ = shipped
    clf = demo_classifier(device="cpu")
    assert list(clf.class_names) == list(dm.DEMO_CLASSES)
    case = make_phantom(seed=21, size=(96, 96, 40), lesions=["liver"], lesion_scale=dm.LESION_SCALE)
    result = explain(clf, case.ct, methods=("hirescam",), classes="all")
    with torch.no_grad():
        logits, maps = model.hirescam(torch.from_numpy(dm.ct_to_input(case.ct))[None, None])
    np.testing.assert_allclose(np.ravel(result.logits), logits[0].numpy(), atol=1e-3, rtol=1e-3)
    liver = result.map("hirescam", "liver")
    assert liver.same_grid(case.ct)
    np.testing.assert_allclose(result.raw[("hirescam", "liver")].array,
                               maps[0, dm.DEMO_CLASSES.index("liver")].numpy(), atol=1e-3, rtol=1e-3)


# ---- training ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_demo_is_reproducible_from_a_seed(tmp_path):
    from saliency_inspector.training.demo_recipe import train_demo_model

    small = dict(n_train=12, n_validation=4, epochs=1)
    a = train_demo_model(tmp_path / "a", seed=3, **small)
    b = train_demo_model(tmp_path / "b", seed=3, **small)
    sa = torch.load(a["weights"], weights_only=True)
    sb = torch.load(b["weights"], weights_only=True)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    card = json.loads(a["card"].read_text())
    assert card["training"]["seed"] == 3 and card["architecture"]["name"] == "demo"
    # a seed other than 0 never overwrites the shipped model: its files and card carry the seed
    assert a["weights"].name == "demo-phantom-lesions-seed3.pt" and card["name"] == "demo-phantom-lesions-seed3"
    model = dm.build_demo_network(**card["architecture"]["kwargs"])
    model.load_state_dict(sa)  # a plain state dict that loads with weights_only=True


def test_train_demo_cli_rejects_a_file_as_output_folder(tmp_path, capsys):
    from saliency_inspector.cli import main

    target = tmp_path / "not-a-folder"
    target.write_text("keep me")
    assert main(["train-demo", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "not-a-folder" in err and "not a folder" in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep me"


def test_a_multichannel_lesion_map_gives_class_specific_gradcam_and_keeps_the_exact_head():
    """With ``map_channels`` ≥ the class count the target layer has several channels: HiResCAM still
    sums to logit − bias, and Grad-CAM (channel weights = spatial means of W^c) differs between
    classes; with the shipped one-channel map every class's Grad-CAM is the same picture (|r| = 1)."""
    from saliency_inspector.explainers.cam import compute_cams

    def gradcam_correlations(map_channels):
        torch.manual_seed(4)
        model = dm.build_demo_network(**{**dm.DEFAULT_ARCH_KWARGS, "map_channels": map_channels}).eval()
        with torch.no_grad():
            model.classifier.weight.normal_(0, 0.05)
        x = torch.rand(1, 1, *dm.INPUT_SIZE)
        with torch.no_grad():
            logits, maps = model.hirescam(x)
        torch.testing.assert_close(maps.sum(dim=(2, 3, 4)), logits - model.classifier.bias, atol=1e-4, rtol=1e-4)
        cams = compute_cams(model, x, methods=("hirescam", "gradcam"), layer="lesion_map")
        torch.testing.assert_close(cams.maps["hirescam"], maps, atol=1e-5, rtol=1e-4)
        g = cams.maps["gradcam"][0].flatten(1).numpy()
        r = np.corrcoef(g)
        return np.abs(r[np.triu_indices(len(g), 1)])

    assert dm.build_demo_network(**{**dm.DEFAULT_ARCH_KWARGS, "map_channels": 8}).classifier.in_features \
        == 8 * 8 * 16 * 16
    np.testing.assert_allclose(gradcam_correlations(1), 1.0, atol=1e-5)
    assert gradcam_correlations(8).max() < 0.9


def test_shipped_model_gives_each_class_its_own_gradcam(shipped, demo_cpu):
    """On a phantom with lesions in two organs, the shipped model's Grad-CAM maps (raw, at the target
    layer) differ between every pair of classes (|Pearson r| < 0.9): with a one-channel target layer
    they were one picture scaled (r = 1), whatever the class."""
    import saliency_inspector as si
    from saliency_inspector.synth.phantom import make_phantom

    case = make_phantom(seed=31, size=(96, 96, 40), lesions=["liver", "lung_left"], lesion_scale=dm.LESION_SCALE)
    res = si.explain(demo_cpu, case.ct, methods=("gradcam", "hirescam"), classes="all")
    for method in ("gradcam", "hirescam"):
        maps = np.stack([res.raw[(method, c)].array.ravel() for c in dm.DEMO_CLASSES])
        r = np.abs(np.corrcoef(maps)[np.triu_indices(len(maps), 1)])
        assert r.max() < 0.9, (method, r)


def test_coordinate_channels_give_each_cell_its_position_and_stay_out_of_the_state_dict():
    """With ``coordinates`` the features end with 3 fixed channels (z, y, x in [-1, 1]); they are
    rebuilt from input_size, not stored, so a state dict holds only learned weights; without them the
    network's features are translation-equivariant and the lesion-map conv has 3 fewer inputs."""
    model = dm.build_demo_network(**dm.DEFAULT_ARCH_KWARGS).eval()
    assert dm.DEFAULT_ARCH_KWARGS["coordinates"] is True
    x = torch.rand(2, 1, *dm.INPUT_SIZE)
    with torch.no_grad():
        features = model.features(x)
    d, h, w = model.feature_size
    coords = features[:, -3:]
    assert coords.shape == (2, 3, d, h, w)
    torch.testing.assert_close(coords[0, 0, :, 0, 0], torch.linspace(-1, 1, d))  # z along dim 2
    torch.testing.assert_close(coords[1, 1, 0, :, 0], torch.linspace(-1, 1, h))  # y along dim 3
    torch.testing.assert_close(coords[0, 2, 0, 0, :], torch.linspace(-1, 1, w))  # x along dim 4
    assert not any("grid" in key for key in model.state_dict())
    plain = dm.build_demo_network(**{**dm.DEFAULT_ARCH_KWARGS, "coordinates": False})
    assert plain.lesion_map[0].in_channels == model.lesion_map[0].in_channels - 3
