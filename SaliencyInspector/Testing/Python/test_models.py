"""Loading classifiers: .pt2 exports, MONAI bundles, state dicts + architecture, demo; bad files refused."""

import json

import pytest
import torch
from torch import nn

from saliency_inspector.explainers.cam import compute_cams
from saliency_inspector.errors import InputError
from saliency_inspector.models.card import ModelCard
from saliency_inspector.models.loaders import load_classifier

from toy_models import SmallNet

torch.set_num_threads(1)


SMALL_DENSENET = {"name": "DenseNet", "kwargs": {"init_features": 8, "growth_rate": 4, "block_config": [2, 2],
                                                 "bn_size": 2}}


def _x(shape=(1, 1, 8, 8, 8), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _same_maps(a, b):
    for m in a.maps:
        torch.testing.assert_close(a.maps[m], b.maps[m], rtol=1e-5, atol=1e-6)


def test_pt2_export_loads_hooks_and_gives_the_same_maps(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = _x()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    clf = load_classifier(path, device="cpu")
    assert clf.kind == "pt2" and clf.class_names is None  # no card: names come from the output size
    assert clf.card.input.size == (8, 8, 8) and clf.card.input.window == (-1000.0, 1000.0)
    torch.testing.assert_close(clf.predict(x), model(x))
    _same_maps(compute_cams(clf.module, x, layer="features.2"), compute_cams(model, x, layer="features.2"))
    # a card beside the model is picked up
    (tmp_path / "net.json").write_text(json.dumps({"classes": ["a", "b", "c"], "target_layer": "features"}))
    assert load_classifier(path, device="cpu").class_names == ["a", "b", "c"]


def test_state_dict_with_monai_architecture_and_parallel_prefix(tmp_path):
    from monai.networks.nets import DenseNet

    torch.manual_seed(1)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, **SMALL_DENSENET["kwargs"]).eval()
    wrapped = nn.DataParallel(net)
    path = tmp_path / "weights.pth"
    torch.save({"epoch": 3, "state_dict": wrapped.state_dict()}, path)  # keys start with "module."
    card = {"classes": ["no", "yes"], "input": {"size": [8, 8, 8]}, "target_layer": "class_layers.relu"}
    clf = load_classifier(path, card=card, arch=json.dumps(SMALL_DENSENET), device="cpu")
    x = _x()
    torch.testing.assert_close(clf.predict(x), net(x))
    assert clf.card.architecture["name"] == "DenseNet"
    # the architecture may also come from the card beside the weights
    (tmp_path / "weights.json").write_text(json.dumps({**card, "architecture": SMALL_DENSENET}))
    torch.testing.assert_close(load_classifier(path, device="cpu").predict(x), net(x))
    # an nn.DataParallel module is unwrapped
    assert load_classifier(wrapped, card=card, device="cpu").module is net


def test_monai_bundle_folder(tmp_path):
    from monai.networks.nets import DenseNet

    torch.manual_seed(2)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, **SMALL_DENSENET["kwargs"]).eval()
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    network_def = {"_target_": "DenseNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                   **SMALL_DENSENET["kwargs"]}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def}))
    meta = {"network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [8, 8, 8]}},
        "outputs": {"pred": {"channel_def": {"0": "normal", "1": "abnormal"}}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    clf = load_classifier(bundle, device="cpu")
    assert clf.kind == "monai_bundle"
    assert clf.class_names == ["normal", "abnormal"] and clf.card.input.axes == "xyz"
    x = _x(seed=3)
    torch.testing.assert_close(clf.predict(x), net(x))


def test_demo_classifier_loads_with_the_contract(tmp_path, monkeypatch):
    """Arch "demo" → demo_model.build_demo_network(**kwargs), weights/card at the DEMO_* paths."""
    from saliency_inspector.models import demo_model

    torch.manual_seed(3)
    card = demo_model.demo_card()
    card["architecture"]["kwargs"] = {"channels": [4, 4, 8], "input_size": [8, 16, 16]}
    card["input"]["size"] = [8, 16, 16]
    net = demo_model.build_demo_network(**card["architecture"]["kwargs"]).eval()
    weights, card_path = tmp_path / "demo.pt", tmp_path / "demo.json"
    torch.save(net.state_dict(), weights)
    card_path.write_text(json.dumps(card))
    monkeypatch.setattr(demo_model, "DEMO_WEIGHTS_PATH", weights)
    monkeypatch.setattr(demo_model, "DEMO_CARD_PATH", card_path)
    clf = load_classifier("demo", device="cpu")
    assert clf.class_names == list(demo_model.DEMO_CLASSES) and clf.card.multilabel
    x = _x((1, 1, 8, 16, 16), seed=4)
    torch.testing.assert_close(clf.predict(x), net(x))
    # HiResCAM at the card's layer (`lesion_map`) equals the network's own closed form (W^c ⊙ lesion map)
    ours = compute_cams(clf.module, x, methods=["hirescam"], layer=card["target_layer"]).maps["hirescam"]
    _, theirs = net.hirescam(x)
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-5)


def test_missing_demo_weights_say_how_to_make_them(tmp_path, monkeypatch):
    from saliency_inspector.models import demo_model

    monkeypatch.setattr(demo_model, "DEMO_WEIGHTS_PATH", tmp_path / "none.pt")
    with pytest.raises(InputError, match="train-demo"):
        load_classifier("demo")


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(SmallNet(), path)  # a whole pickled module: custom classes, code on load
    with pytest.raises(InputError, match="refused.*pickled"):
        load_classifier(path, arch="DenseNet121")


def test_torchscript_points_to_pt2(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.script(SmallNet().eval()).save(str(path))
    with pytest.raises(InputError, match="TorchScript.*pt2"):
        load_classifier(path)


@pytest.mark.parametrize("name", ["model.pt", "model.pt2"])
def test_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(InputError, match="is not a (PyTorch weights file|torch.export program)"):
        load_classifier(path, arch="DenseNet121")


def test_state_dict_problems(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(SmallNet().state_dict(), path)
    with pytest.raises(InputError, match="--arch"):
        load_classifier(path)
    with pytest.raises(InputError, match="not a MONAI network"):
        load_classifier(path, arch="NoSuchNet")
    with pytest.raises(InputError, match="do not fit"):
        load_classifier(path, arch=SMALL_DENSENET | {"kwargs": {**SMALL_DENSENET["kwargs"], "out_channels": 3}})
    with pytest.raises(InputError, match="not found"):
        load_classifier(tmp_path / "missing.pt")


def test_model_card_validation():
    with pytest.raises(InputError, match="window"):
        ModelCard.from_dict({"input": {"window": [400, -1000]}})
    with pytest.raises(InputError, match="size"):
        ModelCard.from_dict({"input": {"size": [8, 8]}})
    card = ModelCard.from_dict({"classes": ["a"], "input": {"size": [4, 5, 6], "window": [-1, 1]},
                                "training": {"seed": 0}})
    assert ModelCard.from_dict(card.to_dict()).to_dict() == card.to_dict()


def test_monai_architectures_get_channels_and_classes_from_the_card():
    from saliency_inspector.models.loaders import build_network

    card = ModelCard.from_dict({"classes": ["a", "b", "c"], "input": {"channels": 2}})
    resnet = build_network({"name": "resnet10", "kwargs": {"conv1_t_stride": 2}}, card)  # ResNet's own names
    assert resnet.conv1.weight.shape[:2] == (64, 2) and resnet.conv1.weight.ndim == 5
    assert resnet.fc.out_features == 3
    dense = build_network({"name": "DenseNet", "kwargs": SMALL_DENSENET["kwargs"]}, card)
    assert dense.features.conv0.weight.shape[1] == 2 and dense.class_layers.out.out_features == 3
