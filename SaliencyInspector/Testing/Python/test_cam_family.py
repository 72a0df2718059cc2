"""The CAM family (explainers/cam_family.py, cam_forward.py): equal to pytorch-grad-cam 1.5.5 on a
2-D network, all classes from one pass, eigen_smooth / aug_smooth / several layers, 3-D.

The peer's maps were made by make_gradcam_peer_values.py (its source files loaded directly, with
stubs for ttach/torchvision/cv2; see there) and are kept in data/gradcam_peer_2d.npz: the peer
cannot be installed beside this torch. They are its raw maps (before ReLU and min-max scaling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toy_models import ConvGapLinear, PeerNet2d

from saliency_inspector.errors import InputError
from saliency_inspector.explainers.attribution import attribute
from saliency_inspector.explainers.cam import compute_cams, grid_transforms
from saliency_inspector.explainers.registry import METHODS
from saliency_inspector.explainers.settings import EstimatorSettings

PEER = np.load(Path(__file__).parent / "data" / "gradcam_peer_2d.npz")
CLASSES = range(5)
ENGINE = ["hirescam", "gradcam", "gradcam_elementwise", "xgradcam", "layercam", "eigencam", "eigengradcam",
          "kpcacam", "fem", "finercam", "shapleycam"]
SIGN_FREE = ("eigencam", "eigengradcam")
FLOAT32_KPCA = 1e-4  # the peer's KPCA works in float32 (see test_kpca_equals_scikit_learn_in_double_precision)  # an SVD's sign is arbitrary: the peer keeps LAPACK's


@pytest.fixture(scope="module")
def net():
    model = PeerNet2d()
    model.load_state_dict({k[len("state__"):]: torch.from_numpy(PEER[k]) for k in PEER.files if k.startswith("state__")})
    return model.eval(), torch.from_numpy(PEER["x"])


def close(ours, peer, sign_free=False):
    ours = np.asarray(ours, np.float64)
    peer = np.asarray(peer, np.float64)
    scale = max(np.abs(peer).max(), 1e-12)
    err = np.abs(ours - peer).max() / scale
    if sign_free:
        err = min(err, np.abs(ours + peer).max() / scale)
    return err


def test_every_activation_gradient_cam_equals_the_peer_for_every_class_from_one_pass(net):
    model, x = net
    result = compute_cams(model, x, methods=ENGINE, layer="features")
    assert result.class_indices == list(CLASSES)
    for m in ENGINE:
        for c in CLASSES:
            err = close(result.maps[m][0, c], PEER[f"peer__{m}__{c}"], m in SIGN_FREE)
            assert err < (FLOAT32_KPCA if m == "kpcacam" else 1e-5), (m, c, err)


def test_kpca_equals_scikit_learn_in_double_precision(net):
    """The peer runs scikit-learn's KernelPCA on float32 activations (kernel rounding: 7e-5 relative,
    hence FLOAT32_KPCA above); in float64 ours and scikit-learn agree to 1e-10."""
    KernelPCA = pytest.importorskip("sklearn.decomposition").KernelPCA
    from saliency_inspector.explainers.cam_family import kernel_projection

    model, x = net
    with torch.no_grad():
        A = model.features(x).double()
    X = A[0].numpy().reshape(A.shape[1], -1).T
    for kernel, gamma in (("sigmoid", None), ("rbf", 0.5), ("poly", 0.3), ("cosine", None)):
        expected = KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(X - X.mean(0))
        assert close(kernel_projection(A, kernel, gamma)[0], expected.reshape(A.shape[2:])) < 1e-10, kernel


def test_knobs_and_eigen_smooth_equal_the_peer(net):
    model, x = net
    cases = [(["gradcam", "layercam", "gradcam_elementwise"], {"eigen_smooth": True}, "_eigen_smooth", True),
             (["kpcacam"], {"kpca_kernel": "rbf", "kpca_gamma": 0.5}, "_rbf", False),
             (["fem"], {"fem_k": 1.0}, "_k1", False)]
    for methods, knobs, suffix, sign_free in cases:
        result = compute_cams(model, x, methods=methods, layer="features", settings=EstimatorSettings(**knobs))
        for m in methods:
            for c in CLASSES:
                err = close(result.maps[m][0, c], PEER[f"peer__{m}{suffix}__{c}"], sign_free)
                assert err < (FLOAT32_KPCA if m == "kpcacam" else 1e-5), (m, knobs, c, err)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "fullgrad"])
def test_extra_forward_methods_equal_the_peer(net, method):
    model, x = net
    for c in CLASSES:
        out = attribute(method, model, x, c, {"layer": "features"})
        assert close(out.map, PEER[f"peer__{method}__{c}"]) < 1e-5, (method, c)


def test_shapley_cam_uses_the_hessian_term_and_is_grad_cam_when_the_head_is_linear(net):
    model, x = net
    result = compute_cams(model, x, methods=["shapleycam", "gradcam"], layer="features")
    assert not torch.allclose(result.maps["shapleycam"], result.maps["gradcam"])  # Tanh after the layer
    torch.manual_seed(0)
    gap = ConvGapLinear(dims=2).eval()  # y linear in the last layer's output: H = 0
    result = compute_cams(gap, torch.rand(1, 1, 6, 6), methods=["shapleycam", "gradcam"], layer="late")
    torch.testing.assert_close(result.maps["shapleycam"], result.maps["gradcam"])


def test_class_independent_maps_are_the_same_for_every_class_and_take_no_gradient(net, monkeypatch):
    model, x = net
    for m in ("eigencam", "kpcacam", "fem"):
        assert getattr(METHODS[m].cam, "class_independent", False)

    def refuse(*_a, **_k):
        raise AssertionError("a gradient was taken")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    result = compute_cams(model, x, methods=["eigencam", "kpcacam", "fem"], layer="features")
    for maps in result.maps.values():
        assert all(torch.equal(maps[0, 0], maps[0, c]) for c in CLASSES)


def test_score_and_ablation_cam_compute_every_class_once(net, monkeypatch):
    from saliency_inspector.explainers import cam_forward

    model, x = net
    calls = []
    real = cam_forward.score_weights
    monkeypatch.setattr(cam_forward, "score_weights", lambda *a, **k: calls.append(1) or real(*a, **k))
    lines, fresh = [], x.clone()  # not the input other tests cached
    for c in CLASSES:
        attribute("scorecam", model, fresh, c, EstimatorSettings(layer="features", progress=lines.append))
    assert len(calls) == 1 and any("Score-CAM: 8/8 channels" in line for line in lines)


def test_fullgrad_without_biases_is_refused_in_one_line():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 64, 2))
    with pytest.raises(InputError, match="fullgrad needs convolution or BatchNorm layers with biases"):
        attribute("fullgrad", model, torch.rand(1, 1, 4, 4, 4), 0)


def test_aug_smooth_of_a_flip_symmetric_network_equals_the_plain_map():
    """A 1×1 convolution then a symmetric pooling commutes with every flip and rotation: each
    transformed map, undone, is the plain map, so the average is too; a shifted map would not be."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    x = torch.rand(1, 1, 4, 4, 4)
    plain = compute_cams(model, x, methods=["hirescam"], layer="1")
    smooth = compute_cams(model, x, methods=["hirescam"], layer="1", settings=EstimatorSettings(aug_smooth=True))
    torch.testing.assert_close(smooth.maps["hirescam"], plain.maps["hirescam"])
    assert "7 grid transforms" in smooth.notes[0]  # identity, 3 flips, 3 rotations of a cube
    names = [t[0] for t in grid_transforms((4, 4, 4))]
    assert len(names) == 7 and all(torch.equal(inv(fwd(x)), x) for _n, fwd, inv in grid_transforms((4, 4, 4)))


def test_several_layers_are_normalised_resampled_to_the_finest_grid_and_averaged():
    torch.manual_seed(0)
    model = ConvGapLinear(dims=3).eval()
    x = torch.rand(1, 1, 6, 6, 6)
    both = compute_cams(model, x, methods=["hirescam"], layer=["early", "late"])
    one = {n: compute_cams(model, x, methods=["hirescam"], layer=n).maps["hirescam"] for n in ("early", "late")}
    expected = sum(v / v.abs().flatten(2).amax(2)[..., None, None, None] for v in one.values()) / 2
    torch.testing.assert_close(both.maps["hirescam"], expected)  # same grid here: no resampling
    assert both.layer == "early+late" and "combined" in both.notes[0]


def test_the_family_runs_in_3d_and_finer_cam_contrasts_classes():
    torch.manual_seed(1)
    model = ConvGapLinear(dims=3, classes=4).eval()
    x = torch.rand(2, 1, 6, 6, 6)
    names = [m for m, e in METHODS.items() if e.is_cam]
    result = compute_cams(model, x, methods=names, layer="late")
    for m in names:
        assert result.maps[m].shape == (2, 4, 6, 6, 6) and torch.isfinite(result.maps[m]).all(), m
    # at a GAP layer with a linear head G_c = W_c/N everywhere: Finer-CAM is Grad-CAM of a logit difference
    assert not torch.allclose(result.maps["finercam"], result.maps["gradcam"])


def test_every_new_entry_declares_its_meaning_and_is_offered_everywhere():
    from saliency_inspector.cli import build_parser, method_help

    new = ["gradcam_elementwise", "xgradcam", "layercam", "eigencam", "eigengradcam", "kpcacam", "finercam",
           "shapleycam", "fem", "scorecam", "ablationcam", "fullgrad"]
    text = method_help("x")
    for m in new:
        entry = METHODS[m]
        assert entry.meaning in ("signed", "non-negative") and entry.importance in ("relu", "abs"), m
        assert m in text and entry.function.__doc__ or entry.cam.__doc__
    args = build_parser().parse_args(["explain", "ct.nrrd", "--model", "m.pt2", "--out", "o", "--layer", "a",
                                      "--layer", "b", "--eigen-smooth", "--aug-smooth", "--fem-k", "1.5"])
    assert args.layer == ["a", "b"] and args.eigen_smooth and args.aug_smooth and args.fem_k == 1.5
