"""The network sees the CT in its card's orientation, whatever the file's direction or axis order.

The same physical phantom stored as identity, flipped, with axes swapped or cyclically permuted, as
NIfTI and as a DICOM series must give the same probabilities and the same maps in physical space;
an oblique re-sampling must give nearly the same answer with a spacing-fixed card; a card saying
"stored" keeps today's storage-order behaviour and says so; an xyz card equals its zyx twin.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.explainers.explanation import explain
from saliency_inspector.io.volume import Volume, from_sitk, read_volume, resample_to, to_sitk, write_volume
from saliency_inspector.models.card import InputSpec, ModelCard
from saliency_inspector.models.loaders import load_classifier
from saliency_inspector.models.preprocess import (ORIENTATION_CODES, covering_grid, input_grid,
                                                  orientation_direction, preprocess, resample_tensor)

from dicom_series import write_dicom_series
from toy_models import MaxPoolLesionDetector, XyzTwin, ZyxNet


@pytest.fixture(scope="module")
def phantom():
    from saliency_inspector.synth.phantom import make_phantom

    return make_phantom(seed=3, size=(128, 128, 60), lesions=["liver", "lung_left"], lesion_scale=1.8)


def stored_as(ct: Volume, code: str) -> Volume:
    """The same voxels stored along other axes (ITK's DICOMOrient: a pure permutation/flip)."""
    return from_sitk(sitk.DICOMOrient(to_sitk(ct), code))


def test_the_48_codes_are_itks():
    assert len(ORIENTATION_CODES) == len(set(ORIENTATION_CODES)) == 48
    image = sitk.Image([3, 4, 5], sitk.sitkInt16)
    for code in ORIENTATION_CODES:
        itk = np.asarray(sitk.DICOMOrient(image, code).GetDirection()).reshape(3, 3)
        np.testing.assert_array_equal(orientation_direction(code), itk)
    np.testing.assert_array_equal(orientation_direction("lps"), np.eye(3))


@pytest.mark.parametrize("code", ["RAS", "PLS", "PSL"])  # diag(-1,-1,1), x/y swapped, cyclic permutation
def test_input_tensor_is_the_same_whatever_the_storage(phantom, code):
    ct = phantom.ct
    other = stored_as(ct, code)
    assert not np.allclose(other.direction, ct.direction)
    for spec in (InputSpec(size=(32, 64, 64), window=(-200.0, 300.0)),  # resized
                 InputSpec(window=(-200.0, 300.0), orientation="RAS", axes="xyz")):  # CT spacing: exact reorder
        a, b = preprocess(ct, spec), preprocess(other, spec)
        assert a.grid.same_grid(b.grid)
        np.testing.assert_allclose(a.tensor.numpy(), b.tensor.numpy(), atol=1e-5)
    # the CT's own spacing in another orientation: voxels reordered, not interpolated
    exact = preprocess(other, InputSpec(window=(-1000.0, 1000.0)))
    np.testing.assert_array_equal(exact.tensor[0, 0].numpy(), np.clip((ct.array.astype(np.float32) + 1000) / 2000, 0, 1))


def _explain_everywhere(demo, ct):
    return explain(demo, ct, methods=["hirescam", "gradcam"], classes="all")


def _assert_same_maps(a, b, reference_ct, other_ct, classes=("lung_left", "liver")):
    for method in ("hirescam", "gradcam"):
        for name in classes:
            here = a.map(method, name).array
            there = resample_to(b.map(method, name), reference_ct, "linear").array
            corr = np.corrcoef(here.ravel(), there.ravel())[0, 1]
            assert corr >= 0.99, (method, name, corr)


def test_same_probabilities_and_maps_for_every_storage(phantom, demo_cpu, tmp_path):
    ct = phantom.ct
    reference = _explain_everywhere(demo_cpu, ct)
    assert reference.info["orientation"] == "LPS"
    stored = {code: stored_as(ct, code) for code in ("RAS", "PLS", "PSL")}
    nifti = write_volume(stored["RAS"], tmp_path / "ct.nii.gz")  # NIfTI as dcm2niix writes it (RAS axes)
    stored["nifti"] = read_volume(nifti)
    np.testing.assert_allclose(stored["nifti"].direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    stored["dicom"] = read_volume(write_dicom_series(ct, tmp_path / "dicom"))
    for label, other in stored.items():
        res = _explain_everywhere(demo_cpu, other)
        np.testing.assert_allclose(res.probabilities, reference.probabilities, atol=1e-4, err_msg=label)
        _assert_same_maps(res, reference, other, ct)
        assert "LPS orientation" in res.info["orientation_note"]


def test_stored_card_keeps_the_file_order_and_says_so(phantom, demo_cpu, tmp_path):
    ct = stored_as(phantom.ct, "RAS")
    spec = InputSpec(size=(32, 64, 64), window=(-200.0, 300.0), orientation="stored")
    prepared = preprocess(ct, spec)
    # today's recipe: the covering grid with the CT's own direction, resampled in physical space
    grid = covering_grid(ct, (32, 64, 64))
    assert prepared.grid.same_grid(grid)
    want = resample_tensor(ct.array[None].astype(np.float32), ct, grid)[0]
    np.testing.assert_allclose(prepared.tensor[0, 0].numpy(), np.clip((want + 200) / 500, 0, 1), atol=1e-6)
    card = dict(demo_cpu.card.to_dict(), input=dict(demo_cpu.card.to_dict()["input"], orientation="stored"))
    card_path = tmp_path / "stored.json"
    card_path.write_text(json.dumps(card))
    path = write_volume(ct, tmp_path / "ct.nrrd")
    assert main(["explain", str(path), "--model", "demo", "--card", str(card_path), "--class", "liver",
                 "--method", "hirescam", "--out", str(tmp_path / "out")]) == 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions["orientation"] == "stored"
    assert "depend on how the CT was saved" in predictions["orientation_note"]


def test_unknown_orientation_code_is_one_line(tmp_path, capsys):
    ct = Volume(np.zeros((4, 5, 6), np.int16))
    path = write_volume(ct, tmp_path / "ct.nrrd")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"classes": ["a"], "input": {"orientation": "LPX"}}))
    before = path.read_bytes()
    assert main(["explain", str(path), "--model", "demo", "--card", str(card), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "'LPX' is not an orientation code" in err[0] and "one of L/R" in err[0]
    assert path.read_bytes() == before and not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="48 codes"):
        ModelCard.from_dict({"input": {"orientation": "LLS"}})


# ---- oblique storage with a spacing-fixed card ----------------------------------------------------------
def _lesion_ct(direction, shape=(40, 56, 48), spacing=(2.0, 2.0, 2.5), center=(4.0, -6.0, 12.0)):
    """Soft tissue with a 9 mm lesion at a physical point, on a grid centred at the origin."""
    direction = np.asarray(direction, dtype=float)
    half = direction @ (np.asarray(spacing) * (np.asarray(shape[::-1]) - 1) / 2)
    grid = Volume(np.zeros(shape, np.int16), spacing, tuple(-half), direction)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = grid.index_to_physical(np.stack([i, j, k], -1))
    distance = np.linalg.norm(points - np.asarray(center), axis=-1)
    array = np.where(distance <= 9.0, 300, 40).astype(np.int16)
    return grid.with_array(array)


def test_oblique_30_degrees_with_a_spacing_card():
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    tilted = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    center = np.array([4.0, -6.0, 12.0])
    straight, oblique = _lesion_ct(np.eye(3), center=center), _lesion_ct(tilted, center=center)
    card = {"classes": ["lesion", "none"], "input": {"spacing": [3.0, 3.0, 3.0], "window": [-160, 240]}}
    clf = load_classifier(MaxPoolLesionDetector(), card=card, device="cpu")
    a = explain(clf, straight, methods=["hirescam"], layer="pool")
    b = explain(clf, oblique, methods=["hirescam"], layer="pool")
    assert a.probabilities[0] > 0.9
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=0.05)
    raw = b.raw[("hirescam", "lesion")]
    np.testing.assert_allclose(raw.direction, np.eye(3), atol=1e-12)  # the LPS box around the oblique CT
    peak = raw.index_to_physical(np.unravel_index(np.argmax(raw.array), raw.shape)[::-1])
    assert np.all(np.abs(peak - center) <= np.asarray(raw.spacing) + 1e-6), (peak, center, raw.spacing)
    # the part of the box outside the oblique CT is padded with -1000 HU (windowed: 0)
    prepared = preprocess(oblique, clf.card.input)
    assert float(prepared.tensor[0, 0, 0, 0, 0]) == 0.0


# ---- xyz cards (every MONAI bundle) against their zyx twin ---------------------------------------------------
def test_xyz_card_maps_equal_its_zyx_twin_on_a_non_cubic_oblique_ct():
    from test_preprocess import oblique_ct

    ct = oblique_ct(shape=(18, 30, 26))
    zyx_net = ZyxNet()
    classes = ["a", "b", "c"]
    zyx = load_classifier(zyx_net, card={"classes": classes, "input": {"size": [12, 16, 20], "orientation": "RAS"}},
                          device="cpu")
    xyz = load_classifier(XyzTwin(zyx_net), card={"classes": classes, "input": {
        "size": [20, 16, 12], "axes": "xyz", "orientation": "RAS"}}, device="cpu")
    a = explain(zyx, ct, methods=["hirescam", "gradcam"], layer="features")
    b = explain(xyz, ct, methods=["hirescam", "gradcam"], layer="to_xyz")
    np.testing.assert_allclose(b.logits, a.logits, rtol=1e-5, atol=1e-6)
    for key in a.raw:
        assert b.raw[key].same_grid(a.raw[key])
        np.testing.assert_allclose(b.raw[key].array, a.raw[key].array, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.map(*key).array, a.map(*key).array, rtol=1e-5, atol=1e-6)
        assert np.ptp(a.map(*key).array) > 0
