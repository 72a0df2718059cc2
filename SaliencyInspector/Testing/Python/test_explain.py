"""explain(): maps on the CT's exact grid, a lesion found at its physical point, files, CLI errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from saliency_inspector.io.names import safe_name
import torch
from torch import nn

from saliency_inspector import cli
from saliency_inspector.errors import InputError
from saliency_inspector.explainers.explanation import explain
from saliency_inspector.models.card import ModelCard
from saliency_inspector.models.loaders import load_classifier
from saliency_inspector.io.volume import Volume, read_volume, write_volume

from toy_models import BlobDetector, blob_classifier

torch.set_num_threads(1)

DIRECTION = np.array([[0.9553, -0.1555, 0.2513],  # a rotation: tilted about two axes
                      [0.1700, 0.9850, -0.0300],
                      [-0.2429, 0.0741, 0.9672]])
DIRECTION = np.linalg.qr(DIRECTION)[0] * np.sign(np.diag(np.linalg.qr(DIRECTION)[1]))
SPACING = (1.1, 0.9, 2.5)
ORIGIN = (-31.0, 12.5, 140.0)
SHAPE = (24, 48, 44)  # z, y, x


def lesion_ct(center_lps, radius_mm=5.0, seed=0):
    """Soft tissue (40 HU, noisy) with a bright spherical lesion (300 HU) at a physical point."""
    grid = Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    pts = grid.index_to_physical(np.stack([i, j, k], -1))
    inside = np.linalg.norm(pts - np.asarray(center_lps), axis=-1) <= radius_mm
    rng = np.random.default_rng(seed)
    hu = np.where(inside, 300.0, 40.0) + rng.normal(0, 5, SHAPE)
    return grid.with_array(hu.astype(np.int16))


@pytest.fixture(scope="module")
def case():
    grid = Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    center = grid.index_to_physical(np.array([30.3, 14.6, 8.2]))  # off-centre, between voxels
    ct = lesion_ct(center)
    return ct, center, explain(blob_classifier(), ct, methods=["hirescam", "gradcam", "gradcampp"])


def test_maps_are_on_the_ct_grid_raw_and_signed(case):
    ct, _center, res = case
    assert set(res.maps) == {(m, c) for m in res.methods for c in ["lesion", "no lesion"]}
    for volume in res.maps.values():
        assert volume.same_grid(ct, atol=0) and volume.array.dtype == np.float32
    assert res.map("hirescam", "no lesion").array.min() < 0  # signed, not ReLU'd
    # faithfulness survives the trip: the raw feature map sums to logit - bias
    raw = res.raw[("hirescam", "lesion")]
    np.testing.assert_allclose(raw.array.sum(), res.logits[0] - 0.25, rtol=1e-5)
    np.testing.assert_allclose(res.probabilities.sum(), 1.0, rtol=1e-6)  # softmax card
    assert res.layer == "features"


def test_peak_lies_at_the_lesion_physical_centre(case):
    ct, center, res = case
    for method in ("hirescam", "gradcam", "gradcampp"):
        arr = res.map(method, "lesion").array
        k, j, i = np.unravel_index(np.argmax(arr), arr.shape)
        peak = ct.index_to_physical(np.array([i, j, k], dtype=float))
        assert np.linalg.norm(peak - center) < 4.0, (method, peak, center)
        # and on the feature grid itself (its own physical geometry)
        raw = res.raw[(method, "lesion")]
        k, j, i = np.unravel_index(np.argmax(raw.array), raw.shape)
        assert np.linalg.norm(raw.index_to_physical(np.array([i, j, k], float)) - center) < 5.0


def test_lesion_elsewhere_moves_the_peak():
    grid = Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    center = grid.index_to_physical(np.array([9.0, 33.0, 15.0]))
    ct = lesion_ct(center, seed=1)
    arr = explain(blob_classifier(), ct, methods="hirescam", classes="lesion").map("hirescam", 0).array
    k, j, i = np.unravel_index(np.argmax(arr), arr.shape)
    assert np.linalg.norm(ct.index_to_physical(np.array([i, j, k], float)) - center) < 4.0


def test_save_writes_nrrd_with_the_ct_geometry_and_predictions(case, tmp_path):
    ct, _center, res = case
    written = res.save(tmp_path / "out")
    names = sorted(p.name for p in written)
    # "no lesion" is not a safe file name: it is sanitised and made unique with a short stable hash
    # (io/names.py), so a class "no_lesion" could never share its file
    assert f"hirescam_{safe_name('no lesion')}.nrrd" in names and "predictions.json" in names
    assert safe_name("no lesion").startswith("no_lesion~") and "hirescam_no_lesion.nrrd" not in names
    image = sitk.ReadImage(str(tmp_path / "out" / "hirescam_lesion.nrrd"))
    assert image.GetSize() == ct.size_xyz
    np.testing.assert_allclose(image.GetSpacing(), ct.spacing)
    np.testing.assert_allclose(image.GetOrigin(), ct.origin)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), ct.direction)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), res.map("hirescam", "lesion").array)
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert pred["class_names"] == ["lesion", "no lesion"]
    np.testing.assert_allclose(pred["logits"], res.logits, rtol=1e-6)
    np.testing.assert_allclose(pred["probabilities"], res.probabilities, rtol=1e-6)


def test_class_selection_and_errors(case):
    ct, _center, _res = case
    clf = blob_classifier()
    res = explain(clf, ct, methods=["gradcam"], classes=["no lesion"])
    assert list(res.maps) == [("gradcam", "no lesion")]
    with pytest.raises(InputError, match="not one of the model's classes"):
        explain(clf, ct, classes="liver")
    with pytest.raises(InputError, match="unknown method"):
        explain(clf, ct, methods=["no-such-method"])


def test_model_input_mismatch_is_an_input_error(case):
    ct, _center, _res = case
    clf = blob_classifier()
    clf.card.input.channels = 3  # the network takes one channel
    with pytest.raises(InputError, match="rejected its input"):
        explain(clf, ct)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2))  # a 2D network
    with pytest.raises(InputError, match="rejected its input"):
        explain(load_classifier(flat, card={"classes": ["a", "b"]}, device="cpu"), ct)


def test_cardless_pt2_on_the_cts_own_grid(tmp_path):
    ct = lesion_ct((0.0, 30.0, 170.0))
    net = BlobDetector(SHAPE, classes=3).eval()
    path = tmp_path / "m.pt2"
    # exported with static shapes (the linear head pins them): the program's own input shape is used
    program = torch.export.export(net, (torch.zeros((1, 1) + SHAPE),))
    torch.export.save(program, str(path))
    clf = load_classifier(path, device="cpu")
    res = explain(clf, ct, methods=["hirescam"])
    assert res.class_names == ["0", "1", "2"]
    assert clf.card.classes is None  # explain names the outputs in its result, never in the caller's card
    one = explain(clf, ct, methods=["hirescam"], classes="1")
    assert one.classes == ["1"] and list(one.raw) == [("hirescam", "1")] and clf.card.classes is None
    assert res.map("hirescam", "2").same_grid(ct)
    # the program's own input size, on the LPS box around the (oblique) CT
    assert f"size {'×'.join(map(str, SHAPE[::-1]))} (x×y×z)" in res.info["input_grid"]
    assert res.info["orientation"] == "LPS"


def test_cli_explain_and_bad_inputs(case, tmp_path, capsys):
    ct, _center, _res = case
    ct_path = write_volume(ct, tmp_path / "ct.nrrd")
    net = BlobDetector((16, 32, 32)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 16, 32, 32),)), str(tmp_path / "blob.pt2"))
    (tmp_path / "blob.json").write_text(json.dumps({"classes": ["lesion", "none"], "target_layer": "features",
                                                    "input": {"size": [16, 32, 32], "window": [-1000, 500]}}))
    out = tmp_path / "maps"
    assert cli.main(["explain", str(ct_path), "--model", str(tmp_path / "blob.pt2"), "--out", str(out),
                     "--device", "cpu"]) == 0
    assert read_volume(out / "hirescam_lesion.nrrd").same_grid(ct)
    assert (out / "predictions.json").is_file()
    capsys.readouterr()

    nan_ct = ct.with_array(ct.array.astype(np.float32))
    nan_ct.array[0, 0, 0] = np.nan
    bad_ct = write_volume(nan_ct, tmp_path / "nan.nrrd")
    pickled = tmp_path / "pickled.pt"
    torch.save(net, pickled)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(scripted))
    two_channels = tmp_path / "two_channels.json"
    two_channels.write_text(json.dumps({"classes": ["a", "b"], "input": {"size": [16, 32, 32], "channels": 2}}))
    corrupt = tmp_path / "corrupt.pt2"
    corrupt.write_bytes(b"not a model")
    cases = [
        ([str(bad_ct), "--model", str(tmp_path / "blob.pt2")], "NaN"),
        ([str(ct_path), "--model", str(tmp_path / "blob.pt2"), "--layer", "nope"], "does not exist"),
        ([str(ct_path), "--model", str(pickled), "--arch", "DenseNet121"], "refused"),
        ([str(ct_path), "--model", str(scripted)], "TorchScript"),
        ([str(ct_path), "--model", str(corrupt)], "is not a torch.export program"),
        ([str(ct_path), "--model", str(tmp_path / "blob.pt2"), "--card", str(two_channels)], "rejected its input"),
    ]
    for args, needle in cases:
        assert cli.main(["explain", *args, "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "saliency-inspector: error:" in err and needle in err and "Traceback" not in err
