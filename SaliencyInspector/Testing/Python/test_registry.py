"""The one method registry: every entry complete, custom estimators and CAMs anywhere a method goes,
the deprecated alias, the CLI options and labels generated from it."""

import warnings
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

import saliency_inspector as si
from saliency_inspector import cli
from saliency_inspector.errors import InputError
from saliency_inspector.explainers import registry
from saliency_inspector.explainers.attribution import attribute
from saliency_inspector.explainers.cam import compute_cams, hirescam
from saliency_inspector.explainers.explanation import explain
from saliency_inspector.explainers.randomization import input_map, prepare
from saliency_inspector.explainers.registry import METHODS, get_method, method_label, register_method, unregister_method
from saliency_inspector.explainers.settings import EstimatorSettings

from test_explain import DIRECTION, ORIGIN, SHAPE, SPACING, blob_classifier, lesion_ct

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BUILT_INS = ["hirescam", "gradcam", "gradcampp", "gradient", "inputxgradient", "smoothgrad", "smoothgrad_sq",
             "vargrad", "ig", "guided_gradcam", "occlusion", "xrai3d"]


@pytest.fixture
def ct():
    grid = si.Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    return lesion_ct(grid.index_to_physical(np.array([20.0, 20.0, 10.0])))


@pytest.fixture
def registered():
    """Names registered by a test, removed from the registry afterwards (whatever their family)."""
    names = []
    yield names
    for name in names:
        METHODS.pop(name, None)


def test_every_built_in_entry_is_complete_and_cams_come_first():
    assert [n for n in METHODS if n in BUILT_INS] == BUILT_INS
    assert si.METHODS is METHODS and si.ESTIMATORS is METHODS and si.get_method is get_method
    settings = {f.name: f.default for f in fields(EstimatorSettings)}
    for name in BUILT_INS:
        m = METHODS[name]
        assert isinstance(m, si.Method) and m.name == name
        assert isinstance(m.label, str) and m.label and m.label != name
        assert m.family in registry.FAMILIES and m.family != "custom"
        assert m.meaning in registry.MEANINGS and m.importance in registry.IMPORTANCES
        assert m.description and "\n" not in m.description and m.cost and isinstance(m.needs_layer, bool)
        assert callable(m.function)
        assert all(settings[k] == v for k, v in m.defaults.items()) and set(m.defaults) <= set(settings)
        assert m.is_cam == (m.family == "CAM") and (m.cam is not None) == m.is_cam
        if m.is_cam:
            assert m.importance == "relu" and m.needs_layer and m.defaults == {"layer": None}
    assert [m.importance for m in map(METHODS.get, ("gradient", "smoothgrad", "ig", "inputxgradient", "occlusion"))] \
        == ["abs", "abs", "signed", "signed", "signed"]
    assert METHODS["smoothgrad"].defaults == {"noise": 0.15, "samples": 25, "seed": 0, "memory_gb": 2.0}
    assert method_label("inputxgradient") == "Input × Gradient" and method_label("not-registered") == "not-registered"


def test_a_custom_estimator_works_in_explain_and_compare(ct, registered):
    def intensity(model, x, target):
        """the windowed CT itself"""
        return x[0, 0] * (1.0 + target)

    register_method("intensity_reg", intensity, label="Intensity", meaning="non-negative")
    registered.append("intensity_reg")
    assert METHODS["intensity_reg"].description == "the windowed CT itself"
    clf = blob_classifier()
    res = explain(clf, ct, methods=["hirescam", "intensity_reg"], classes="all")
    assert res.methods == ["hirescam", "intensity_reg"]
    lesion, other = (res.raw[("intensity_reg", c)].array for c in ("lesion", "no lesion"))
    np.testing.assert_allclose(other, 2 * lesion, rtol=1e-6)
    assert res.info["estimators"]["intensity_reg"]["lesion"]["family"] == "custom"

    mask = res.map("hirescam", "lesion").array > 0.5 * res.map("hirescam", "lesion").array.max()
    cmp = si.compare_estimators(clf, ct, {"lesion": mask}, "lesion", methods=["hirescam", "intensity_reg"], steps=3)
    assert [r["method"] for r in cmp.rows] == ["hirescam", "intensity_reg"]
    assert cmp.rows[1]["family"] == "custom" and np.isfinite(cmp.rows[1]["roc_auc"])


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(3 * 4 * 5 * 6, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_a_custom_cam_runs_in_the_one_pass_and_equals_its_formula(ct, registered):
    def signed_energy(A, G):
        return (G.abs() * A).sum(1) - A.mean(1)

    register_method("energy_cam", signed_energy, cam=True, label="Energy-CAM")
    registered.append("energy_cam")
    entry = METHODS["energy_cam"]
    assert entry.is_cam and entry.needs_layer and entry.cam is signed_energy

    model = TwoLayer().eval()
    x = torch.rand(2, 1, 4, 5, 6)
    # A and G computed here, independently of the engine
    seen = {}
    handle = model.features.register_forward_hook(lambda _m, _i, out: seen.setdefault("A", out))
    logits = model(x)
    handle.remove()
    cams = compute_cams(model, x, methods=["hirescam", "energy_cam"], layer="features")
    for c in range(2):
        (G,) = torch.autograd.grad(logits[:, c].sum(), seen["A"], retain_graph=True)
        torch.testing.assert_close(cams.maps["energy_cam"][:, c], signed_energy(seen["A"], G).detach())
        torch.testing.assert_close(cams.maps["hirescam"][:, c], hirescam(seen["A"], G).detach())

    # explain: every CAM of the call (built-in and custom) from one forward pass
    clf = blob_classifier()
    calls = []
    handle = clf.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        res = explain(clf, ct, methods=["hirescam", "energy_cam", "gradcam"], classes="lesion")
    finally:
        handle.remove()
    assert len(calls) == 1 and res.methods == ["hirescam", "energy_cam", "gradcam"]
    ref = compute_cams(clf.module, prepare(clf, ct).tensor, methods=["energy_cam"], class_indices=[0],
                       layer="features").maps["energy_cam"][0, 0]
    np.testing.assert_allclose(res.raw[("energy_cam", "lesion")].array, ref.numpy(), rtol=1e-6)


def test_cam_maps_from_the_registry_path_equal_compute_cams(ct):
    clf = blob_classifier()
    prepared = prepare(clf, ct)
    x = prepared.tensor
    direct = compute_cams(clf.module, x, methods=["hirescam", "gradcam", "gradcampp"], layer="features")
    res = explain(clf, ct, methods=["hirescam", "gradcam", "gradcampp"])
    for method in ("hirescam", "gradcam", "gradcampp"):
        for c, name in enumerate(clf.card.classes):
            one = attribute(method, clf.module, x, c, EstimatorSettings(layer="features"))
            torch.testing.assert_close(one.map, direct.maps[method][0, c])
            torch.testing.assert_close(one.logits, direct.logits)
            np.testing.assert_array_equal(res.raw[(method, name)].array, direct.maps[method][0, c].numpy())
    # the randomization check's raw map of a CAM comes through the same function
    got = input_map(clf.module, prepared, "hirescam", 0, layer="features")
    np.testing.assert_allclose(got.logits, direct.logits[0].numpy())


def test_the_deprecated_register_estimator_warns_and_takes_both_old_signatures(registered):
    def echo(model, x, target):
        return x[0, 0]

    registered += ["old_a", "old_b", "old_c", "old_d"]
    with pytest.warns(DeprecationWarning, match="register_method"):
        a = si.register_estimator("old_a", echo, "returns the input")  # estimators.py: (name, fn, description)
    assert a.description == "returns the input" and a.family == "custom" and METHODS["old_a"] is a
    with pytest.warns(DeprecationWarning):
        b = si.register_estimator("old_b", echo, family="perturbation", needs_layer=False, cost="1 forward",
                                  meaning="echo", replace_existing=False)  # attribution.py's keywords
    assert (b.family, b.cost, b.description) == ("perturbation", "1 forward", "echo")
    with pytest.warns(DeprecationWarning):
        c = si.register_estimator("old_c", echo, "gradient", True)  # attribution.py positionally
    assert c.family == "gradient" and c.needs_layer
    with pytest.warns(DeprecationWarning):
        si.register_estimator("old_d", echo, description="first")
    with pytest.raises(InputError, match="exists already"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        si.register_estimator("old_d", echo, "second")
    with pytest.warns(DeprecationWarning):
        d = si.register_estimator("old_d", echo, "second", True)  # estimators.py: overwrite
    assert d.description == "second" and METHODS["old_d"] is d
    x = torch.rand(1, 1, 3, 4, 5)
    torch.testing.assert_close(attribute("old_a", nn.Identity(), x, 0).map, x[0, 0])
    unregister_method("old_a")  # a user's entry is forgotten; built-ins are not
    unregister_method("hirescam")
    assert "old_a" not in METHODS and "hirescam" in METHODS


def test_register_method_refuses_bad_entries(registered):
    with pytest.raises(InputError, match="exists already"):
        register_method("hirescam", hirescam, cam=True)
    with pytest.raises(InputError, match="meaning 'sometimes' is not one of"):
        register_method("bad", lambda m, x: x, meaning="sometimes")
    with pytest.raises(InputError, match="importance 'sqrt' is not one of"):
        register_method("bad", lambda m, x: x, importance="sqrt")
    with pytest.raises(InputError, match="family 'magic' is not one of"):
        register_method("bad", lambda m, x: x, family="magic")
    with pytest.raises(InputError, match="unknown method 'bad'; choose from hirescam"):
        get_method("bad")


def test_cli_options_and_method_help_come_from_the_registry(registered):
    parser = cli.build_parser()
    explain_parser = parser._subparsers._group_actions[0].choices["explain"]
    args = explain_parser.parse_args(["ct.nrrd", "--model", "demo"])
    assert cli.estimator_settings(args) == {
        f.name: f.default for f in fields(EstimatorSettings) if f.metadata.get("option")}
    args = explain_parser.parse_args(["ct.nrrd", "--model", "demo", "--occlusion-mm", "10", "20", "--steps", "5"])
    chosen = cli.estimator_settings(args)
    assert (chosen["occlusion_window_mm"], chosen["occlusion_stride_mm"], chosen["steps"]) == (10.0, 20.0, 5)
    register_method("help_probe", lambda model, x: x[0, 0])
    registered.append("help_probe")
    text = cli.method_help("hirescam")
    assert all(name in text for name in METHODS) and "custom: help_probe" in text
    assert "gradient" not in cli.method_help("hirescam", cam_only=True)
