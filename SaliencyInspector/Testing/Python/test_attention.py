"""The `attention` method: gate coefficients read by forward hooks, put on the CT grid like every map.

Known answers: a gate that is a fixed box on the feature grid comes back as that box on the CT grid,
computed here by hand (trilinear between feature-cell centres), for identity and flipped storage;
a gate that opens where the CT is bright comes back as the bright block of an oblique CT, whatever
the storage; a MONAI AttentionBlock's map is its sigmoid ``psi`` (not the gated features ``x·psi``);
several gates combine by their mean; a model without gates is one clear InputError.
"""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.explainers.attention import combined, find_gates, gate_maps
from saliency_inspector.explainers.explanation import explain
from saliency_inspector.explainers.registry import METHODS
from saliency_inspector.io.volume import Volume, resample_to, write_volume
from saliency_inspector.models.card import ModelCard
from saliency_inspector.models.loaders import load_classifier

from conftest import rotation

BOX = (slice(2, 5), slice(3, 6), slice(1, 4))  # feature-grid cells (z, y, x) of the fixed gate


class FixedGate(nn.Module):
    """A gate that is the same box whatever the input: (B, 1, 8, 8, 8)."""

    def __init__(self):
        super().__init__()
        box = torch.zeros(1, 1, 8, 8, 8)
        box[(0, 0, *BOX)] = 1.0
        self.register_buffer("box", box)

    def forward(self, features):
        return self.box.expand(features.shape[0], -1, -1, -1, -1)


class BrightGate(nn.Module):
    """A gate open where the (windowed) input is bright: sigmoid(20 (x − 0.5)) on the input grid."""

    def forward(self, x):
        return torch.sigmoid(20 * (x - 0.5))


class GatedNet(nn.Module):
    """features (avg-pooled input) × gate → mean → linear: 2 classes."""

    def __init__(self, gate, pool=2):
        super().__init__()
        self.pool = nn.AvgPool3d(pool) if pool > 1 else nn.Identity()
        self.gate = gate
        self.fc = nn.Linear(1, 2)

    def forward(self, x):
        features = self.pool(x)
        return self.fc((features * self.gate(features)).mean((2, 3, 4)))


def _card(size, gates=("gate",)):
    return {"name": "gated", "classes": ["a", "b"], "multilabel": True,
            "input": {"size": list(size), "window": [-1000, 1000]}, "attention_gates": list(gates)}


def _flipped(ct: Volume, axes=(0, 2)) -> Volume:
    """The same physical voxels stored with the (z, y, x) array axes ``axes`` reversed."""
    array, direction, ijk = ct.array, ct.direction.copy(), [0, 0, 0]
    for axis in axes:
        column = 2 - axis  # array axis 0 (z) is index k, direction column 2
        ijk[column] = ct.shape[axis] - 1
        direction[:, column] *= -1
        array = np.flip(array, axis)
    origin = ct.index_to_physical(np.array([ijk], float))[0]
    return Volume(np.ascontiguousarray(array), ct.spacing, tuple(origin), direction)


def _box_on_ct(n_ct=32, n_feature=8):
    """The fixed box, by hand, on a CT of n_ct voxels per axis whose field of view the feature grid
    tiles with n_feature cells: feature cell k's centre lies at CT index (k + ½)·cell − ½."""
    cell = n_ct / n_feature
    centres = (np.arange(n_feature) + 0.5) * cell - 0.5
    profiles = []
    for box in BOX:
        on = np.zeros(n_feature)
        on[box] = 1.0
        profiles.append(np.interp(np.arange(n_ct), centres, on))  # edge cells hold their value
    return profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]


def test_a_fixed_box_gate_is_that_box_on_the_ct_grid_for_every_storage():
    ct = Volume(np.indices((32, 32, 32)).sum(0).astype(np.int16), spacing=(0.8, 1.1, 2.0), origin=(-40.0, 12.5, 300.0))
    clf = load_classifier(GatedNet(FixedGate()), card=_card((16, 16, 16)), device="cpu")
    want = _box_on_ct()
    got = explain(clf, ct, methods=["attention"], classes="a").map("attention", "a")
    assert got.same_grid(ct)
    np.testing.assert_allclose(got.array, want, atol=1e-5)
    flipped = _flipped(ct)
    assert np.allclose(flipped.index_to_physical(np.array([[31, 0, 31]])), ct.index_to_physical(np.array([[0, 0, 0]])))
    back = explain(clf, flipped, methods=["attention"], classes="a").map("attention", "a")
    np.testing.assert_allclose(back.array[::-1, :, ::-1], want, atol=1e-5)


def _oblique_block(direction):
    array = np.full((40, 40, 40), -1000, np.int16)
    array[12:28, 10:30, 14:26] = 500
    return Volume(array, spacing=(1.0, 1.0, 1.0), origin=(10.0, -20.0, 5.0), direction=direction)


@pytest.mark.parametrize("flip", [False, True])
def test_an_oblique_ct_gets_its_bright_block_back(flip):
    ct = _oblique_block(rotation(12.0, -7.0, 20.0))
    if flip:
        ct = _flipped(ct, axes=(0, 1))
    clf = load_classifier(GatedNet(BrightGate(), pool=1), card=_card((48, 48, 48)), device="cpu")
    got = explain(clf, ct, methods=["attention"], classes="b").map("attention", "b")
    assert got.same_grid(ct)
    block = ct.array > 0
    inside = ndimage.binary_erosion(block, iterations=3)
    outside = ~ndimage.binary_dilation(block, iterations=3)
    assert got.array[inside].min() > 0.9 and got.array[outside].max() < 0.1
    dice = 2 * ((got.array > 0.5) & block).sum() / ((got.array > 0.5).sum() + block.sum())
    assert dice > 0.9


class MonaiGated(nn.Module):
    """Two MONAI AttentionBlocks (found without a card): gate at full and at half resolution."""

    def __init__(self):
        super().__init__()
        from monai.networks.nets.attentionunet import AttentionBlock

        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.down = nn.MaxPool3d(2)
        self.first = AttentionBlock(3, f_int=2, f_g=4, f_l=4)
        self.second = AttentionBlock(3, f_int=2, f_g=4, f_l=4)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        b = self.down(a)
        return self.fc(torch.cat([self.first(a, a).mean((2, 3, 4)), self.second(b, b).mean((2, 3, 4))], 1))


def _monai_psi(block, g, x):
    """MONAI's AttentionBlock.forward up to its gate: psi(relu(W_g g + W_x x))."""
    return block.psi(block.relu(block.W_g(g) + block.W_x(x)))


def test_monai_attention_blocks_are_hooked_at_their_sigmoid_gate():
    model = MonaiGated().eval()
    x = torch.rand(1, 1, 8, 12, 10)
    gates = find_gates(model)
    assert [name for name, _ in gates] == ["first", "second"]
    maps = dict(gate_maps(model, x))
    with torch.no_grad():
        a = torch.relu(model.conv(x))
        b = model.down(a)
        want_first, want_second = _monai_psi(model.first, a, a)[0, 0], _monai_psi(model.second, b, b)[0, 0]
    np.testing.assert_allclose(maps["first"].numpy(), want_first.numpy(), atol=1e-6)
    np.testing.assert_allclose(maps["second"].numpy(), want_second.numpy(), atol=1e-6)
    assert tuple(maps["second"].shape) == (4, 6, 5)
    # attention = the mean of the gates, the coarse one upsampled (edges aligned) to the fine grid
    up = torch.nn.functional.interpolate(want_second[None, None], size=(8, 12, 10), mode="trilinear",
                                         align_corners=False)[0, 0]
    np.testing.assert_allclose(combined(list(maps.items())).numpy(), ((want_first + up) / 2).numpy(), atol=1e-6)


def test_several_gates_give_one_map_each_and_their_mean(tmp_path):
    ct = Volume(np.random.default_rng(0).normal(0, 300, (16, 24, 20)).astype(np.int16), spacing=(1.5, 1.0, 2.0))
    clf = load_classifier(MonaiGated(), card={"classes": ["a", "b", "c"], "input": {"size": [8, 12, 10]}},
                          device="cpu")
    assert METHODS["attention"].available_for(clf) and METHODS["attention_gate2"].available_for(clf)
    assert not METHODS["attention_gate3"].available_for(clf)
    res = explain(clf, ct, methods=["attention", "attention_gate1", "attention_gate2"], classes=["a", "c"])
    mean = (res.map("attention_gate1", "a").array + res.map("attention_gate2", "a").array) / 2
    np.testing.assert_allclose(res.map("attention", "a").array, mean, atol=2e-3)  # the mean before vs after upsampling
    np.testing.assert_array_equal(res.map("attention", "a").array, res.map("attention", "c").array)
    assert res.info["estimators"]["attention"]["a"]["gates"] == ["first", "second"]
    assert res.info["estimators"]["attention"]["a"]["combined"] == "mean"
    with pytest.raises(InputError, match="has 2 attention gate"):
        explain(clf, ct, methods=["attention_gate3"], classes="a")


def test_a_model_without_gates_is_one_clear_error(tmp_path, capsys):
    clf = load_classifier(GatedNet(FixedGate()), card=_card((16, 16, 16), gates=()) | {"attention_gates": None},
                          device="cpu")
    ct = Volume(np.indices((32, 32, 32)).sum(0).astype(np.int16))
    assert not METHODS["attention"].available_for(clf)
    assert METHODS["hirescam"].available_for(clf)
    with pytest.raises(InputError, match="no attention gates"):
        explain(clf, ct, methods=["attention"])
    path = write_volume(ct, tmp_path / "ct.nrrd")
    assert main(["explain", str(path), "--model", "demo", "--method", "attention", "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "no attention gates" in err[0]
    assert not (tmp_path / "o").exists()


def test_the_card_declares_gates_and_rejects_bad_ones():
    card = ModelCard.from_dict(_card((16, 16, 16), gates=("gate",)))
    assert card.attention_gates == ["gate"] and card.to_dict()["attention_gates"] == ["gate"]
    assert "attention_gates" not in card.extra
    assert ModelCard.from_dict(card.to_dict()).attention_gates == ["gate"]
    with pytest.raises(InputError, match="attention_gates"):
        ModelCard.from_dict({"attention_gates": "gate"})
    with pytest.raises(InputError, match="is not a module of the model"):
        find_gates(GatedNet(FixedGate()), ["nope"])


@pytest.mark.slow
def test_explain_writes_the_attention_map_from_the_cli(tmp_path):
    ct = Volume(np.indices((32, 32, 32)).sum(0).astype(np.int16), spacing=(0.8, 1.1, 2.0))
    model_path = tmp_path / "gated.pt2"
    program = torch.export.export(GatedNet(FixedGate()).eval(), (torch.zeros(1, 1, 16, 16, 16),))
    torch.export.save(program, str(model_path))
    card = tmp_path / "gated.json"
    card.write_text(json.dumps(_card((16, 16, 16))))
    path = write_volume(ct, tmp_path / "ct.nrrd")
    assert main(["explain", str(path), "--model", str(model_path), "--method", "attention", "--method", "hirescam",
                 "--class", "a", "--out", str(tmp_path / "out")]) == 0
    from saliency_inspector.io.volume import read_volume

    got = read_volume(tmp_path / "out" / "attention_a.nrrd")
    np.testing.assert_allclose(got.array, _box_on_ct(), atol=1e-5)
    assert resample_to(got, ct).same_grid(ct)


@pytest.mark.slow
def test_the_self_explaining_comparison_runs_on_a_tiny_setting():
    from saliency_inspector.models.demo_model import DEMO_CLASSES
    from saliency_inspector.workflows.self_explaining import compare_self_explaining, phantom_cases
    from saliency_inspector.workflows.self_explaining_table import format_table

    torch.manual_seed(0)
    model = GatedNet(BrightGate(), pool=2)
    model.fc = nn.Linear(1, 4)
    gated = load_classifier(model, card={"name": "gated", "classes": list(DEMO_CLASSES), "multilabel": True,
                                         "input": {"size": [16, 16, 16], "window": [-200, 300]},
                                         "attention_gates": ["gate"]}, device="cpu")
    cases = phantom_cases(3, seed=5, size=(32, 32, 16))
    result = compare_self_explaining({"gated": gated}, cases=cases, steps=3)
    methods = {e["method"] for e in result["summary"]}
    assert methods == {"attention", "hirescam", "gradcam", "readers"}
    attention = {e["metric"]: e for e in result["summary"] if e["method"] == "attention"}
    assert attention["organ_auc"]["n"] == 3 and 0 <= attention["organ_auc"]["mean"] <= 1
    assert attention["organ_auc"]["ci"][0] <= attention["organ_auc"]["mean"] <= attention["organ_auc"]["ci"][1]
    hirescam = next(e for e in result["summary"] if e["method"] == "hirescam" and e["metric"] == "sauc")
    assert 0 <= hirescam["vs_reference"]["p"] <= 1 and hirescam["vs_reference"]["reference"] == "attention"
    readers = {e["metric"] for e in result["summary"] if e["method"] == "readers"}
    assert readers == {"cc", "sncc", "auc", "sauc"}
    # the readers look at the lesions: they agree with each other far above chance
    inter = next(e for e in result["summary"] if e["method"] == "readers" and e["metric"] == "auc")
    assert inter["mean"] > 0.8
    assert "| gated | attention |" in format_table(result["summary"], result["randomization"], result["conditions"])
    assert {v["method"] for v in result["randomization"]} == {"attention", "hirescam", "gradcam"}


@pytest.mark.slow
def test_the_slicer_method_list_offers_attention_for_gated_models_only(monkeypatch, tmp_path):
    import types

    import offscreen_views as ov
    import slicer_standins
    from slicer_widgets import QListWidgetItem as _ListWidgetItem
    from test_slicer_module import _ListWidget

    import importlib
    import sys

    slicer_standins.install(monkeypatch, ov.make_app(), tmp_path / "slicer-tmp")
    try:
        module = importlib.import_module("SaliencyInspector")
        gated = load_classifier(MonaiGated(), card={"classes": ["a", "b", "c"], "input": {"size": [8, 12, 10]}},
                                device="cpu")
        plain = load_classifier(GatedNet(FixedGate()), card={"classes": ["a", "b"]}, device="cpu")
        offered = lambda clf: [n for _, names in module.methodGroups(classifier=clf) for n in names]  # noqa: E731
        assert "attention" not in offered(None) and "attention" not in offered(plain)
        assert [n for n in offered(gated) if n.startswith("attention")] == ["attention", "attention_gate1",
                                                                             "attention_gate2"]
        assert module.methodGroups(classifier=gated)[-1][1] == ["attention", "attention_gate1", "attention_gate2"]
        # choosing a gated model file in the widget refills the list with its attention maps
        qt = sys.modules["qt"]
        monkeypatch.setattr(qt, "QListWidgetItem", _ListWidgetItem, raising=False)
        monkeypatch.setattr(qt, "Qt", types.SimpleNamespace(WaitCursor=3, NoItemFlags=0, UserRole=32), raising=False)
        widget = module.SaliencyInspectorWidget()
        widget.ui = types.SimpleNamespace(moreMethodsListWidget=_ListWidget())
        widget._parameterNode = types.SimpleNamespace(modelPath="", moreMethods="attention")
        widget.logic = types.SimpleNamespace(loadClassifier=lambda path, device: gated)
        path = tmp_path / "gated.pt"
        path.write_bytes(b"")
        widget.onModelPathChanged(str(path))
        items = widget.ui.moreMethodsListWidget.items
        assert "attention" in [i.data(32) for i in items if i.flags is None]
        assert [i.data(32) for i in items if i.selected] == ["attention"]
        widget.onModelPathChanged("")
        assert "attention" not in [i.data(32) for i in widget.ui.moreMethodsListWidget.items if i.flags is None]
    finally:
        for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
            sys.modules.pop(name, None)


@pytest.mark.slow
@pytest.mark.parametrize("code", ["RAS", "PSL"])  # flipped axes; a cyclic permutation of the axes
def test_the_shipped_gated_models_attention_does_not_depend_on_the_storage_order(code):
    import SimpleITK as sitk

    from saliency_inspector.io.volume import from_sitk, to_sitk
    from saliency_inspector.models import demo_model  # noqa: F401 - registers the shipped models
    from saliency_inspector.synth.phantom import make_phantom

    clf = load_classifier("demo-attention-gated", device="cpu")
    assert clf.card.attention_gates == ["gate.gate1", "gate.gate2"]
    ct = make_phantom(seed=11, size=(96, 96, 40), lesions=["liver", "lung_left"], lesion_scale=1.8).ct
    other = from_sitk(sitk.DICOMOrient(to_sitk(ct), code))
    assert not np.allclose(other.direction, ct.direction)
    reference = explain(clf, ct, methods=["attention", "attention_gate2"], classes="liver")
    stored = explain(clf, other, methods=["attention", "attention_gate2"], classes="liver")
    np.testing.assert_allclose(stored.probabilities, reference.probabilities, atol=1e-5)
    for method in ("attention", "attention_gate2"):
        here = reference.map(method, "liver")
        there = resample_to(stored.map(method, "liver"), ct, "linear")  # a pure reordering of the voxels
        np.testing.assert_allclose(there.array, here.array, atol=1e-5)
        assert here.array.std() > 1e-3  # a map with something in it, not a constant
