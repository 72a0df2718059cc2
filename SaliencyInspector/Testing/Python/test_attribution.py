"""Estimators beyond CAMs: each equals a direct Captum call, keeps the CT's geometry, known answers."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from captum.attr import (GuidedGradCam, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion,
                         Saliency)
from torch import nn

import saliency_inspector as si
from saliency_inspector import cli
from saliency_inspector.errors import InputError
from saliency_inspector.explainers.attribution import attribute
from saliency_inspector.explainers.registry import METHODS
from saliency_inspector.explainers.settings import EstimatorSettings
from saliency_inspector.explainers.xrai import supervoxels, xrai_rank
from saliency_inspector.explainers.explanation import explain

from test_explain import DIRECTION, ORIGIN, SHAPE, SPACING, lesion_ct
from toy_models import BoxMeanModel, TanhAsFunction, TinyNet, blob_classifier

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return TinyNet().eval(), torch.rand(1, 2, 6, 8, 7)


SETTINGS = EstimatorSettings(samples=5, steps=8, noise=0.2, seed=7, occlusion_window_mm=2.0,
                               occlusion_stride_mm=1.0, spacing_zyx=(1.0, 1.0, 1.0), air_value=0.0, layer="features")


def direct(name, model, x, target, batch=None):
    """The same estimator as one plain Captum call with the same settings (seeded noise)."""
    s = SETTINGS
    if name == "gradient":
        return Saliency(model).attribute(x, target=target, abs=False)
    if name == "inputxgradient":
        return InputXGradient(model).attribute(x, target=target)
    if name in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        torch.manual_seed(s.seed)
        sigma = s.noise * float(x.max() - x.min())
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type=name, nt_samples=s.samples,
                                                      nt_samples_batch_size=s.samples, stdevs=sigma,
                                                      target=target, abs=False)
    if name == "ig":
        return IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=s.steps,
                                                    internal_batch_size=batch)
    if name == "occlusion":
        return Occlusion(model).attribute(x, sliding_window_shapes=(2, 2, 2, 2), strides=(2, 1, 1, 1),
                                          baselines=0.0, target=target, perturbations_per_eval=batch)
    if name == "guided_gradcam":
        return GuidedGradCam(model, model.features).attribute(x, target=target, interpolate_mode="trilinear")
    raise KeyError(name)


@pytest.mark.parametrize("name", ["gradient", "inputxgradient", "smoothgrad", "smoothgrad_sq", "vargrad", "ig",
                                  "occlusion", "guided_gradcam"])
def test_each_estimator_equals_a_direct_captum_call(tiny, name):
    model, x = tiny
    ours = attribute(name, model, x, 0, SETTINGS)
    theirs = direct(name, model, x, 0, ours.info.get("batch")).detach().sum(1)[0]  # channels summed: both are the one CT
    assert ours.map.shape == x.shape[2:]
    torch.testing.assert_close(ours.map, theirs, rtol=1e-5, atol=1e-7)
    assert float(theirs.abs().max()) > 0


def test_inputxgradient_is_x_times_gradient_and_smoothgrad_without_noise_is_the_gradient(tiny):
    model, x = tiny
    x1 = x[:, :1].contiguous()
    model1 = nn.Sequential(nn.Conv3d(1, 2, 1, bias=False), model)  # one input channel: no summing
    with torch.no_grad():
        model1[0].weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1, 1))
    grad = attribute("gradient", model1, x1, 0, SETTINGS).map
    ixg = attribute("inputxgradient", model1, x1, 0, SETTINGS).map
    torch.testing.assert_close(ixg, x1[0, 0] * grad, rtol=1e-6, atol=1e-8)
    still = attribute("smoothgrad", model1, x1, 0, replace(SETTINGS, noise=0.0)).map
    torch.testing.assert_close(still, grad, rtol=1e-5, atol=1e-8)


def test_estimator_maps_keep_the_ct_geometry_on_an_oblique_ct_and_find_the_lesion():
    grid = si.Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    center = grid.index_to_physical(np.array([30.3, 14.6, 8.2]))
    ct = lesion_ct(center)
    res = explain(blob_classifier(), ct, methods=["gradient", "inputxgradient", "ig", "smoothgrad"], classes="lesion",
                  settings={"samples": 4, "steps": 16})
    for method in res.methods:
        volume = res.map(method, "lesion")
        assert volume.same_grid(ct, atol=0) and volume.array.dtype == np.float32
        raw = res.raw[(method, "lesion")]
        assert raw.shape == (16, 32, 32)  # the model-input grid, no upsampling
        if method in ("gradient", "smoothgrad"):
            continue  # the blob detector's gradient is flat over tissue: no known peak
        arr = volume.array
        k, j, i = np.unravel_index(np.argmax(arr), arr.shape)
        assert np.linalg.norm(ct.index_to_physical(np.array([i, j, k], float)) - center) < 10.0, method
    assert "completeness_error" in res.info["estimators"]["ig"]["lesion"]


@pytest.mark.slow
def test_ig_completeness_within_one_percent_at_32_steps_on_the_demo_model(demo_cpu):
    from saliency_inspector.synth.phantom import make_phantom

    case = make_phantom(seed=3, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8)
    res = explain(demo_cpu, case.ct, methods=["ig"], classes="lung_left")
    info = res.info["estimators"]["ig"]["lung_left"]
    assert info["steps"] == 32 and abs(info["output_difference"]) > 0.1
    assert info["completeness_relative"] < 0.01, info


def test_xrai3d_regions_cover_the_body_once_and_start_in_the_cube():
    shape = (16, 20, 18)
    cube = (slice(4, 11), slice(5, 13), slice(6, 13))
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[2:14, 2:18, 2:16] = 0.5 + 0.05 * rng.standard_normal((12, 16, 14))  # the "body"
    image[cube] += 0.3
    x = torch.as_tensor(image)[None, None]
    body = image > 0.1
    settings = EstimatorSettings(steps=8, spacing_zyx=(2.0, 1.0, 1.0), air_value=0.0, body=body,
                                   xrai_scales=(8, 16, 32))
    result = attribute("xrai3d", BoxMeanModel(shape, cube), x, 0, settings)
    regions = supervoxels(image, (2.0, 1.0, 1.0), body, (8, 16, 32), 1)
    ig = attribute("ig", BoxMeanModel(shape, cube), x, 0, settings).map.numpy()
    scores, order = xrai_rank(ig, regions, body)
    np.testing.assert_array_equal(result.map.numpy(), scores.astype(np.float32))
    assert ((order > 0) == body).all()  # every body voxel in exactly one region, nothing outside
    first = order == 1
    in_cube = np.zeros(shape, bool)
    in_cube[cube] = True
    from scipy import ndimage

    near_cube = ndimage.binary_dilation(in_cube, ndimage.generate_binary_structure(3, 1))
    assert first.any() and (first & near_cube).sum() >= 0.95 * first.sum()  # regions are dilated by one voxel
    assert (first & in_cube).sum() > 0.66 * first.sum()
    assert scores[in_cube].mean() > scores[body & ~in_cube].mean()
    undilated = attribute("xrai3d", BoxMeanModel(shape, cube), x, 0, replace(settings, xrai_dilation=0)).info
    _, order0 = xrai_rank(ig, supervoxels(image, (2.0, 1.0, 1.0), body, (8, 16, 32), 0), body)
    assert undilated["regions"] == order0.max() and in_cube[order0 == 1].mean() > 0.95


def test_a_users_callable_registers_and_explains(tmp_path):
    grid = si.Volume(np.zeros(SHAPE, np.int16), SPACING, ORIGIN, DIRECTION)
    ct = lesion_ct(grid.index_to_physical(np.array([20.0, 20.0, 10.0])))

    def intensity(model, x):
        """the windowed CT itself (ignores the model)"""
        return x[0, 0]

    name = "intensity_test"
    METHODS.pop(name, None)
    si.register_method(name, intensity)
    try:
        res = si.explain(blob_classifier(), ct, methods=["hirescam", name, intensity], classes="lesion")
        assert res.methods == ["hirescam", name, "intensity"]
        np.testing.assert_allclose(res.raw[(name, "lesion")].array, res.raw[("intensity", "lesion")].array)
        assert res.map(name, "lesion").same_grid(ct, atol=0)
        assert METHODS[name].family == "custom"
        with pytest.raises(InputError, match="exists already"):
            si.register_method(name, intensity)
    finally:
        METHODS.pop(name, None)


def test_bad_input_is_a_clear_error(tiny, demo_cpu, small_phantom_files, tmp_path, capsys):
    model, x = tiny
    with pytest.raises(InputError, match="unknown method 'nope'; choose from hirescam, gradcam.*xrai3d"):
        attribute("nope", model, x, 0)
    with pytest.raises(InputError, match=r"guided_gradcam needs every activation.*lesion_map.1 \(Sigmoid\)"):
        attribute("guided_gradcam", demo_cpu.module, torch.zeros(1, 1, 32, 64, 64), 0)

    with pytest.raises(InputError, match="calls tanh as a function"):
        attribute("guided_gradcam", TanhAsFunction().eval(), x, 0, replace(SETTINGS, layer="conv"))
    with pytest.raises(InputError, match="memory budget 1e-09 GB is too small for one IG step"):
        attribute("ig", model, x, 0, replace(SETTINGS, memory_gb=1e-9))
    with pytest.raises(InputError, match="baseline 'zero' is not one of air, min, blur"):
        attribute("ig", model, x, 0, {"baseline": "zero"})
    # at the command line: one line, exit 2
    paths = small_phantom_files
    for method, message in (("nope", "unknown method 'nope'"), ("guided_gradcam", "nn.ReLU module")):
        code = cli.main(["explain", str(paths["ct"]), "--model", "demo", "--method", method, "--out",
                         str(tmp_path / "out"), "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and err.startswith("saliency-inspector: error:") and message in err, err
    code = cli.main(["explain", str(paths["ct"]), "--model", "demo", "--method", "ig", "--memory-gb", "0.000001",
                     "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2 and "too small for one IG step" in capsys.readouterr().err
