"""Training on a manifest with Draelos's HiResCAM mask loss: the loss itself (known answers, hand
computation), its gradient path, reproducibility, augmentation in physical space, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saliency_inspector.errors import InputError
from saliency_inspector.explainers.cam import compute_cams, differentiable_cams
from saliency_inspector.training import loop
from saliency_inspector.training.mask_loss import forbidden_cells, mask_loss, to_feature_grid

from toy_models import MaskLossToy


# ---- the loss -------------------------------------------------------------------------------------
def test_mask_loss_is_zero_inside_the_allowed_region_and_grows_with_mass_outside():
    allowed = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    allowed[..., :2, :, :] = True
    labels = torch.ones(1, 1)
    inside = torch.zeros(1, 1, 4, 4, 4)
    inside[..., :2, :, :] = torch.rand(2, 4, 4) * 5
    assert mask_loss(inside, allowed, labels).item() == pytest.approx(0.0, abs=1e-7)
    values = []
    for mass in (0.5, 1.0, 2.0, 4.0):
        m = inside.clone()
        m[..., 3, 1, 1] = mass
        values.append(mask_loss(m, allowed, labels).item())
    assert all(b > a > 0 for a, b in zip(values, values[1:]))
    # an absent label forbids the whole volume: the same map inside the organ now costs
    assert mask_loss(inside, allowed, torch.zeros(1, 1)).item() > 0.1


def test_differentiable_cams_equal_the_explain_engine():
    torch.manual_seed(0)
    model = MaskLossToy().eval()
    x = torch.rand(3, 1, 2, 4, 4)
    logits, maps = differentiable_cams(model, x, "head_map", methods=("hirescam", "gradcam"))
    ref = compute_cams(model, x, methods=("hirescam", "gradcam"), layer="head_map")
    for m in ("hirescam", "gradcam"):
        torch.testing.assert_close(maps[m].detach(), ref.maps[m])
    torch.testing.assert_close(logits.detach(), ref.logits)


def test_mask_loss_equals_a_hand_computation_on_a_toy_network():
    """HiResCAM at the layer feeding flatten → linear is Σ_k W^c_k ⊙ A_k (G = W^c); the loss is the
    mean softplus over the forbidden cells minus log 2, computed here with numpy from the weights."""
    torch.manual_seed(1)
    model = MaskLossToy().eval()
    x = torch.rand(2, 1, 2, 4, 4)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    allowed = torch.zeros(2, 2, 2, 4, 4, dtype=torch.bool)
    allowed[:, 0, :, :2] = True  # class 0 may look at the front half
    allowed[:, 1, 1] = True  # class 1 at the second slice
    _, maps = differentiable_cams(model, x, "head_map")
    loss = mask_loss(maps["hirescam"], allowed, labels).item()

    with torch.no_grad():
        A = model.head_map(model.features(x)).numpy()  # (B, 2, 2, 4, 4)
    W = model.classifier.weight.detach().numpy().reshape(2, 2, 2, 4, 4)  # (classes, channels, *grid)
    values = []
    for b in range(2):
        for c in range(2):
            cam = (W[c] * A[b]).sum(0)
            forbid = ~allowed[b, c].numpy() if labels[b, c] else np.ones(cam.shape, bool)
            values.extend(cam[forbid])
    hand = np.mean(np.log1p(np.exp(np.array(values, np.float64)))) - np.log(2)
    assert loss == pytest.approx(hand, rel=1e-5, abs=1e-6)


def test_mask_loss_gradient_reaches_weights_before_the_target_layer():
    torch.manual_seed(2)
    model = MaskLossToy()
    x = torch.rand(2, 1, 2, 4, 4)
    labels = torch.zeros(2, 2)  # absent: the whole map is forbidden
    _, maps = differentiable_cams(model, x, "head_map")
    mask_loss(maps["hirescam"], torch.zeros_like(maps["hirescam"], dtype=torch.bool), labels).backward()
    first = model.features[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    before = first.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, first.detach())


def test_forbidden_cells_and_feature_grid_pooling():
    allowed = torch.zeros(1, 2, 4, 4, 4, dtype=torch.bool)
    allowed[0, :, 0, 0, 0] = True
    f = forbidden_cells(allowed, torch.tensor([[1.0, 0.0]]))
    assert not f[0, 0, 0, 0, 0] and f[0, 0].sum() == 63 and f[0, 1].all()
    pooled = to_feature_grid(allowed, (2, 2, 2))
    assert pooled.shape == (1, 2, 2, 2, 2) and pooled[0, 0, 0, 0, 0] and pooled[0, 0].sum() == 1


# ---- augmentation in physical space ----------------------------------------------------------------
@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, 1.0]),
                                       np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])])
def test_augmentation_turns_the_patient_about_the_field_of_view_centre(direction):
    """A bright voxel off centre moves where a 90° turn about the patient's z axis takes it, in
    physical space, whatever the grid's direction (flipped, permuted storage)."""
    from saliency_inspector.models.preprocess import geometry

    grid = geometry((8, 16, 16), (2.0, 2.0, 3.0), (5.0, -7.0, 11.0), direction)
    x = torch.zeros(1, 1, 8, 16, 16)
    x[0, 0, 4, 8, 12] = 1.0
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z
    source = loop.turned_grid(grid, rotation)
    from saliency_inspector.models.preprocess import resample_tensor

    moved = resample_tensor(x[0], source, grid, as_numpy=False)[0]
    center = grid.index_to_physical((np.asarray(grid.size_xyz) - 1) / 2)
    before = grid.index_to_physical([12, 8, 4])
    expected = center + rotation @ (before - center)
    k, j, i = np.unravel_index(int(torch.argmax(moved)), moved.shape)
    np.testing.assert_allclose(grid.index_to_physical([i, j, k]), expected, atol=1e-6)
    assert float(moved.max()) == pytest.approx(1.0, abs=1e-5)


# ---- training on a cohort ----------------------------------------------------------------------------
def _tiny_card(name="tiny"):
    return {"name": name, "classes": ["lung_left", "lung_right", "liver", "kidney"], "multilabel": True,
            "input": {"size": [8, 16, 16], "window": [-200, 300], "channels": 1}, "target_layer": "lesion_map",
            "architecture": {"name": "demo", "kwargs": {"num_classes": 4, "channels": [2, 4, 4],
                                                        "input_size": [8, 16, 16], "map_channels": 4}}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from saliency_inspector.synth.cohort import phantom_cohort

    return phantom_cohort(tmp_path_factory.mktemp("cohort"), 10, seed=5, size=(48, 48, 24), confounder="liver",
                          fractions=(0.6, 0.2, 0.2))


def test_training_is_reproducible_and_writes_weights_card_and_export(cohort, tmp_path):
    kw = dict(mask_loss_lambda=1 / 3, epochs=2, batch_size=3, seed=7)
    a = loop.train(cohort, tmp_path / "a", _tiny_card(), **kw)
    b = loop.train(cohort, tmp_path / "b", _tiny_card(), **kw)
    sa, sb = torch.load(a["weights"], weights_only=True), torch.load(b["weights"], weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = loop.train(cohort, tmp_path / "c", _tiny_card(), **{**kw, "seed": 8})
    sc = torch.load(c["weights"], weights_only=True)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    card = json.loads(a["card"].read_text())
    assert card["training"]["mask_loss_lambda"] == pytest.approx(1 / 3)
    assert len(card["training"]["history"]) == 2 and card["training"]["n_train"] == 6
    assert card["training"]["class_organs"]["kidney"] == ["kidney_left", "kidney_right"]
    # the state dict, the card and the .pt2 load through the generic loader and agree
    from saliency_inspector.models.loaders import load_classifier

    x = torch.rand(1, 1, 8, 16, 16)
    by_state = load_classifier(str(a["weights"]), card=str(a["card"]), device="cpu")
    by_export = load_classifier(str(a["export"]), card=str(a["card"]), device="cpu")
    torch.testing.assert_close(by_state.predict(x), by_export.predict(x))
    # the export holds one sample input (1×1×8×16×16 floats), not the whole training tensor
    import zipfile

    samples = [i.file_size for i in zipfile.ZipFile(a["export"]).infolist() if "sample_inputs" in i.filename]
    assert samples and max(samples) < 2 * 8 * 16 * 16 * 4 + 4096


def test_bad_training_input_gives_clear_errors(cohort, tmp_path):
    from saliency_inspector.io.volume import read_volume, write_volume

    with pytest.raises(InputError, match="λ must be ≥ 0"):
        loop.train(cohort, tmp_path / "o", _tiny_card(), mask_loss_lambda=-0.1)
    with pytest.raises(InputError, match="'no_such_layer' does not exist"):
        loop.train(cohort, tmp_path / "o", _tiny_card(), mask_loss_lambda=0.3, target_layer="no_such_layer")
    # a manifest row whose CT is missing: the error names the row
    text = cohort.read_text().splitlines()
    broken = tmp_path / "broken" / "manifest.csv"
    broken.parent.mkdir()
    row = text[2].split(",")
    row[2] = str(cohort.parent / "case0001" / "gone.nrrd")
    broken.write_text("\n".join([text[0], text[1].replace("case0000/", f"{cohort.parent}/case0000/"),
                                 ",".join(row)]) + "\n")
    with pytest.raises(InputError, match=r"row 2 \(case0001\): ct .*gone.nrrd does not exist"):
        loop.train(broken, tmp_path / "o", _tiny_card())
    # a label that is not 0/1
    bad = tmp_path / "bad.csv"
    bad.write_text(cohort.read_text().replace(",1\n", ",yes\n", 1).replace("case0", f"{cohort.parent}/case0")
                   .replace(f"{cohort.parent}/case0000,", "case0000,"))
    with pytest.raises(InputError, match="is not 0, 1 or blank"):
        loop.train(bad, tmp_path / "o", _tiny_card())
    # organ masks on a grid that cannot be matched to the CT (moved 1 m away): the row is named
    moved = tmp_path / "moved"
    moved.mkdir()
    lines = cohort.read_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    ct = read_volume(cohort.parent / first[2])
    far = ct.__class__((ct.array > 0).astype(np.uint8), ct.spacing, tuple(np.asarray(ct.origin) + 1000.0),
                       ct.direction)
    write_volume(far, moved / "organs.nrrd")
    first[2], first[3], first[4] = (str(cohort.parent / first[2]), str(moved / "organs.nrrd"),
                                    str(cohort.parent / first[4]))
    first[5] = ""  # no marker
    first[1] = "train"
    (moved / "manifest.csv").write_text(header + "\n" + ",".join(first) + "\n")
    with pytest.raises(InputError, match=r"manifest row 1 \(case0000\).*do not overlap"):
        loop.train(moved / "manifest.csv", tmp_path / "o", _tiny_card(), mask_loss_lambda=0.3,
                   class_organs={c: ["label_1"] for c in _tiny_card()["classes"]})


def test_train_cli_reports_bad_input_in_one_line(cohort, tmp_path, capsys):
    from saliency_inspector.cli import main

    card = tmp_path / "card.json"
    card.write_text(json.dumps(_tiny_card()))
    assert main(["train", str(cohort), "--card", str(card), "--mask-loss", "-1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "λ must be ≥ 0" in err and len(err.strip().splitlines()) == 1
    assert main(["train", str(cohort), "--out", str(tmp_path / "o")]) == 2
    assert "--card" in capsys.readouterr().err
    assert main(["train", str(cohort), "--card", str(card), "--class-organs", "{bad", "--out", str(tmp_path / "o")]) == 2
    assert "--class-organs is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
