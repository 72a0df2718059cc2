"""The tensor an "RAS"/xyz card feeds equals MONAI's own preprocessing; bundle configs make the card.

MONAI's LoadImage(image_only=True, ensure_channel_first=True) + Orientation("RAS") + Resize
(trilinear) + ScaleIntensityRange is what a MONAI-trained classifier saw; our preprocessing of
the same file with the equivalent card must give the same tensor (NRRD and NIfTI files, stored
along other axes than RAS).
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from saliency_inspector.cli import main
from saliency_inspector.explainers.explanation import explain
from saliency_inspector.io.volume import Volume, from_sitk, to_sitk, write_volume
from saliency_inspector.models.card import ModelCard
from saliency_inspector.models.loaders import load_classifier
from saliency_inspector.models.preprocess import preprocess

SIZE_XYZ = (20, 14, 10)
WINDOW = (-150.0, 250.0)


def smooth_ct(code="LPS"):
    """A smooth anisotropic volume (so linear interpolation is well conditioned), stored along ``code``."""
    rng = np.random.default_rng(5)
    coarse = rng.normal(0, 200, (5, 7, 6)).astype(np.float32)
    array = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=(22, 30, 26),
                                            mode="trilinear", align_corners=False)[0, 0].numpy()
    ct = Volume(array.astype(np.int16), (1.2, 0.9, 2.5), (-12.0, 30.5, -80.0))
    return from_sitk(sitk.DICOMOrient(to_sitk(ct), code))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
@pytest.mark.parametrize("code", ["LPS", "PSL"])
def test_ras_xyz_card_equals_monai_loadimage_orientation_resize_window(tmp_path, suffix, code):
    from monai.transforms import LoadImage, Orientation, Resize, ScaleIntensityRange

    ct = smooth_ct(code)
    path = write_volume(ct, tmp_path / f"ct{suffix}")
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    image = Orientation(axcodes="RAS")(image)
    image = Resize(spatial_size=SIZE_XYZ, mode="trilinear", align_corners=False)(image)
    theirs = ScaleIntensityRange(a_min=WINDOW[0], a_max=WINDOW[1], b_min=0.0, b_max=1.0, clip=True)(image)
    card = ModelCard.from_dict({"input": {"size": list(SIZE_XYZ), "axes": "xyz", "orientation": "RAS",
                                          "window": list(WINDOW)}})
    from saliency_inspector.io.volume import read_volume

    ours = preprocess(read_volume(path), card.input).tensor[0]
    assert tuple(ours.shape) == tuple(theirs.shape) == (1,) + SIZE_XYZ
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), atol=2e-5)


def write_bundle(folder, preprocessing, net):
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    network_def = {"_target_": "DenseNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                   "init_features": 4, "growth_rate": 4, "block_config": [1, 1], "bn_size": 2}
    config = {"network_def": network_def, "preprocessing": {"_target_": "Compose", "transforms": preprocessing}}
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    meta = {"network_data_format": {"inputs": {"image": {"num_channels": 1}},
                                    "outputs": {"pred": {"channel_def": {"0": "normal", "1": "abnormal"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def test_bundle_config_gives_the_card_and_says_what_was_found(tmp_path, capsys):
    from monai.networks.nets import DenseNet

    torch.manual_seed(1)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                   block_config=(1, 1), bn_size=2).eval()
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 3.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 200, "b_min": -1.0,
         "b_max": 1.0, "clip": True},
    ]
    bundle = write_bundle(tmp_path / "bundle", preprocessing, net)
    clf = load_classifier(bundle, device="cpu")
    spec = clf.card.input
    assert (spec.orientation, spec.axes, spec.spacing, spec.size) == ("RAS", "xyz", (2.0, 2.0, 3.0), None)
    assert spec.window == (-100.0, 200.0) and spec.clip
    # b_min=-1, b_max=1: 2w - 1 == (w - 0.5) / 0.5
    assert (spec.mean, spec.std) == (0.5, 0.5)
    notes = clf.card.extra["input_notes"]
    assert "orientation RAS (Orientationd)" in notes and "spacing [2.0, 2.0, 3.0] mm (Spacingd)" in notes
    assert "Defaulted: nothing" in notes
    ct = smooth_ct("LPS")
    prepared = preprocess(ct, spec)
    assert float(prepared.tensor.min()) >= -1.0 and float(prepared.tensor.min()) < -0.5
    np.testing.assert_allclose(prepared.grid.direction, np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(prepared.grid.spacing, (2.0, 2.0, 3.0), rtol=0.1)
    # a bundle without Orientationd and ScaleIntensityRanged: stored order and the default window, said so
    bare = write_bundle(tmp_path / "bare", [{"_target_": "LoadImaged", "keys": "image"}], net)
    card = load_classifier(bare, device="cpu").card
    assert card.input.orientation == "stored"
    assert "Defaulted: orientation: stored" in card.extra["input_notes"] and "window" in card.extra["input_notes"]
    # end to end: the CLI says where the input recipe came from and predictions.json keeps it
    path = write_volume(ct, tmp_path / "ct.nrrd")
    assert main(["explain", str(path), "--model", str(bundle), "--method", "gradcam", "--out",
                 str(tmp_path / "out")]) == 0
    assert "from the bundle's config: orientation RAS" in capsys.readouterr().err
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions["orientation"] == "RAS" and "Spacingd" in predictions["card_input"]
    res = explain(clf, ct, methods=["gradcam"])
    assert res.map("gradcam", "abnormal").same_grid(ct)
