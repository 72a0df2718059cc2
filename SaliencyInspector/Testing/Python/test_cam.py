"""CAM engine: faithfulness identities, peers (MONAI, Captum), all-classes-at-once, hooks, layers.

pytorch-grad-cam is not installable here (it needs torchvision, which breaks this torch), so the
peers are MONAI's GradCAM/GradCAMpp and Captum's LayerGradCam/LayerGradientXActivation.
"""

import pytest
import torch

from saliency_inspector.explainers.cam import capture, compute_cams, find_target_layer, gradcam, hirescam
from saliency_inspector.explainers.registry import METHODS
from saliency_inspector.errors import InputError

from toy_models import ConvFlatLinear, ConvGapLinear, TinyViT

torch.set_num_threads(1)


def _input(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dims", [2, 3])
def test_hirescam_sums_to_logit_minus_bias(dims):
    torch.manual_seed(0)
    model = ConvFlatLinear(dims=dims).eval()
    x = _input((1, 1) + (8,) * dims)
    res = compute_cams(model, x, methods=["hirescam"], layer="act")
    logits = model(x).detach()
    sums = res.maps["hirescam"][0].flatten(1).sum(1)
    torch.testing.assert_close(sums, logits[0] - model.head.bias.detach(), rtol=1e-5, atol=1e-5)
    assert res.maps["hirescam"].shape == (1, 4) + (4,) * dims


def test_gap_head_hirescam_equals_gradcam_at_pooled_layer_but_not_earlier():
    torch.manual_seed(1)
    model = ConvGapLinear().eval()
    x = _input((1, 1, 6, 6, 6))
    late = compute_cams(model, x, methods=["hirescam", "gradcam"], layer="late")
    # G is constant over space: G = W_c / N, so HiResCAM = Grad-CAM exactly (the factor is 1 here).
    torch.testing.assert_close(late.maps["hirescam"], late.maps["gradcam"], rtol=1e-5, atol=1e-6)
    early = compute_cams(model, x, methods=["hirescam", "gradcam"], layer="early")
    assert (early.maps["hirescam"] - early.maps["gradcam"]).abs().max() > 1e-3


def test_all_classes_at_once_equals_class_by_class_exactly():
    torch.manual_seed(2)
    model = ConvGapLinear(classes=4).eval()
    x = _input((1, 1, 6, 6, 6), seed=3)
    cams = [name for name, m in METHODS.items() if m.is_cam]
    together = compute_cams(model, x, methods=cams, layer="early")
    for c in range(4):
        alone = compute_cams(model, x, methods=cams, class_indices=[c], layer="early")
        for m in cams:
            assert torch.equal(together.maps[m][:, c], alone.maps[m][:, 0]), (m, c)


def test_batch_maps_equal_single_sample_maps():
    torch.manual_seed(4)
    model = ConvGapLinear().eval()
    x = _input((3, 1, 6, 6, 6), seed=5)
    batch = compute_cams(model, x, layer="late")
    for b in range(3):
        one = compute_cams(model, x[b:b + 1], layer="late")
        for m in batch.maps:
            torch.testing.assert_close(batch.maps[m][b], one.maps[m][0], rtol=1e-5, atol=1e-6)


def test_gradcam_matches_monai_and_captum():
    from captum.attr import LayerGradCam
    from monai.visualize import GradCAM

    torch.manual_seed(5)
    model = ConvGapLinear(classes=3).eval()
    x = _input((1, 1, 8, 8, 8), seed=6)
    ours = compute_cams(model, x, methods=["gradcam"], layer="early").maps["gradcam"][0]
    identity_up = lambda _size: (lambda t: t)  # noqa: E731 - MONAI's upsampler factory
    monai_cam = GradCAM(model, target_layers="early", upsampler=identity_up, postprocessing=lambda t: t)
    captum_cam = LayerGradCam(model, model.early)
    for c in range(3):
        monai_map = monai_cam(x, class_idx=c)[0, 0]  # MONAI applies ReLU inside compute_map
        torch.testing.assert_close(ours[c].clamp(min=0), monai_map, rtol=1e-5, atol=1e-6)
        captum_map = captum_cam.attribute(x, target=c, relu_attributions=False)[0, 0]
        torch.testing.assert_close(ours[c], captum_map.detach(), rtol=1e-5, atol=1e-6)


def test_hirescam_matches_captum_gradient_x_activation():
    from captum.attr import LayerGradientXActivation

    torch.manual_seed(6)
    model = ConvGapLinear(classes=3).eval()
    x = _input((1, 1, 8, 8, 8), seed=7)
    ours = compute_cams(model, x, methods=["hirescam"], layer="early").maps["hirescam"][0]
    peer = LayerGradientXActivation(model, model.early)
    for c in range(3):
        theirs = peer.attribute(x, target=c).sum(1)[0].detach()
        torch.testing.assert_close(ours[c], theirs, rtol=1e-5, atol=1e-6)


def test_gradcampp_matches_monai_up_to_exp_score():
    from monai.visualize import GradCAMpp

    torch.manual_seed(7)
    model = ConvGapLinear(classes=3).eval()
    x = _input((1, 1, 8, 8, 8), seed=8)
    ours = compute_cams(model, x, methods=["gradcampp"], layer="early")
    identity_up = lambda _size: (lambda t: t)  # noqa: E731
    peer = GradCAMpp(model, target_layers="early", upsampler=identity_up, postprocessing=lambda t: t)
    for c in range(3):
        theirs = peer(x, class_idx=c)[0, 0]
        # MONAI weights ReLU(exp(y_c) G); exp(y_c) > 0 factors out of the map.
        scale = ours.logits[0, c].exp()
        torch.testing.assert_close(ours.maps["gradcampp"][0, c].clamp(min=0) * scale, theirs,
                                   rtol=1e-4, atol=1e-6)


def test_inplace_relu_after_target_layer_does_not_corrupt_activations():
    torch.manual_seed(8)
    reference = ConvFlatLinear(inplace=False).eval()
    inplace = ConvFlatLinear(inplace=True).eval()
    inplace.load_state_dict(reference.state_dict())
    x = _input((1, 1, 8, 8, 8), seed=9)
    # target "features" ends in a conv; the next op is an in-place ReLU that would overwrite A.
    want = compute_cams(reference, x, layer="features").maps
    got = compute_cams(inplace, x, layer="features").maps
    for m in want:
        assert torch.equal(want[m], got[m])
    # the pre-ReLU map is signed: it must keep negative values the in-place ReLU would have erased
    assert (got["hirescam"] < 0).any()
    torch.testing.assert_close(inplace(x), reference(x))


def test_hooks_removed_and_parameters_restored_after_error():
    model = ConvFlatLinear().eval()
    model.features[2].weight.requires_grad_(False)  # a user-frozen parameter stays frozen
    x = _input((1, 2, 8, 8, 8))  # wrong channel count: the forward raises
    with pytest.raises(RuntimeError):
        compute_cams(model, x, layer="features")
    assert all(not m._forward_hooks for m in model.modules())
    assert model.features[0].weight.requires_grad and not model.features[2].weight.requires_grad
    with capture(model, "act"):
        assert model.act._forward_hooks
    assert not model.act._forward_hooks


def test_automatic_layer_is_last_spatial_module():
    model = ConvGapLinear().eval()
    x = _input((1, 1, 6, 6, 6))
    assert find_target_layer(model, x) == "late"  # pool output is 1×1×1: not spatial
    assert find_target_layer(ConvFlatLinear().eval(), _input((1, 1, 8, 8, 8))) == "act"


def test_missing_layer_lists_candidates():
    model = ConvGapLinear().eval()
    with pytest.raises(InputError, match="does not exist.*late"):
        compute_cams(model, _input((1, 1, 6, 6, 6)), layer="nope")


def test_non_spatial_layer_and_unknown_method_are_input_errors():
    model = ConvGapLinear().eval()
    x = _input((1, 1, 6, 6, 6))
    with pytest.raises(InputError, match="not a spatial feature map"):
        compute_cams(model, x, layer="head")
    with pytest.raises(InputError, match="hirescam"):
        compute_cams(model, x, methods=["scorecam"])


def test_vit_has_no_spatial_map():
    with pytest.raises(InputError, match="tokens"):
        compute_cams(TinyViT().eval(), _input((1, 1, 16, 16, 16)))


def test_method_functions_are_pure_and_2d_ready():
    A = _input((1, 3, 4, 5))
    G = _input((1, 3, 4, 5), seed=1)
    torch.testing.assert_close(hirescam(A, G), (A * G).sum(1))
    torch.testing.assert_close(gradcam(A, G), (G.mean((2, 3), keepdim=True) * A).sum(1))
