"""Preprocessing and its exact physical inverse, cross-checked against SimpleITK.

The tests here use cards with orientation "stored" (the grid keeps the oblique CT's direction);
card orientations are tested in test_orientation.py."""

import numpy as np
import pytest
import torch

from saliency_inspector.errors import InputError
from saliency_inspector.models.card import InputSpec
from saliency_inspector.models.preprocess import (covering_grid, feature_grid, input_grid, preprocess,
                                           resample_tensor)
from saliency_inspector.io.volume import Volume, resample_to


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_ct(shape=(18, 30, 26), seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0, 300, shape).astype(dtype), (0.9, 1.3, 2.5), (-40.0, 25.5, 110.0),
                  rotation(0.15, -0.1, 0.3))


def _corners(grid):
    """Physical positions of the outer voxel-box corners (edges) of a grid."""
    hi = np.asarray(grid.size_xyz) - 0.5
    return grid.index_to_physical(np.array([[-0.5, -0.5, -0.5], hi]))


def test_input_grid_covers_the_ct_field_of_view_edge_aligned():
    ct = oblique_ct()
    grid = input_grid(ct, size=(8, 12, 10), orientation="stored")
    assert grid.shape == (8, 12, 10)
    np.testing.assert_allclose(grid.direction, ct.direction)
    np.testing.assert_allclose(_corners(grid), _corners(ct), atol=1e-9)
    feat = feature_grid(grid, (4, 3, 5))
    np.testing.assert_allclose(_corners(feat), _corners(ct), atol=1e-9)
    # spacing request: voxel count rounded, the grid still covers the field of view exactly
    by_spacing = input_grid(ct, spacing=(2.0, 2.0, 5.0), orientation="stored")
    assert by_spacing.size_xyz == (12, 20, 9)
    np.testing.assert_allclose(_corners(by_spacing), _corners(ct), atol=1e-9)
    assert input_grid(ct, orientation="stored").same_grid(ct)
    xyz = input_grid(ct, size=(10, 12, 8), axes="xyz", orientation="stored")
    assert xyz.shape == (8, 12, 10)


def test_resample_tensor_matches_simpleitk_on_an_oblique_grid():
    ct = oblique_ct()
    coarse = covering_grid(ct, (5, 7, 6))
    values = np.random.default_rng(1).normal(size=coarse.shape).astype(np.float32)
    source = coarse.with_array(values)
    ours = resample_tensor(values[None], coarse, ct)[0]
    theirs = resample_to(source, ct, "linear", default_value=np.nan).array
    inside = np.isfinite(theirs)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=1e-4, atol=1e-5)
    # past the outermost feature-voxel centres the edge value is kept (the grid covers the CT)
    assert np.isfinite(ours).all()
    assert ours.min() >= values.min() - 1e-5 and ours.max() <= values.max() + 1e-5


def test_resample_between_different_directions_matches_simpleitk():
    ct = oblique_ct()
    other = Volume(np.zeros((12, 14, 16)), (3.0, 2.5, 4.0), (-50.0, 10.0, 100.0), rotation(0.0, 0.2, -0.1))
    values = np.random.default_rng(2).normal(size=ct.shape).astype(np.float32)
    ours = resample_tensor(values[None], ct, other)[0]
    theirs = resample_to(ct.with_array(values), other, "linear", default_value=np.nan).array
    inside = np.isfinite(theirs)
    assert inside.sum() > 100
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=1e-4, atol=1e-4)


def test_map_back_equals_trilinear_upsampling_of_the_edge_aligned_grid():
    """For the covering grid, physical-space mapping reduces to align_corners=False interpolation."""
    ct = oblique_ct()
    spec = InputSpec(size=(12, 20, 16), window=(-500.0, 500.0), orientation="stored")
    prepared = preprocess(ct, spec)
    maps = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(3))
    on_ct = prepared.to_ct(maps)
    want = torch.nn.functional.interpolate(maps[None], size=ct.shape, mode="trilinear", align_corners=False)[0]
    np.testing.assert_allclose(on_ct, want.numpy(), rtol=1e-4, atol=1e-5)


def test_preprocess_windows_resamples_and_matches_simpleitk():
    ct = oblique_ct(dtype=np.int16)
    spec = InputSpec(size=(9, 15, 13), window=(-400.0, 600.0), channels=2, orientation="stored")
    prepared = preprocess(ct, spec)
    x = prepared.tensor
    assert x.shape == (1, 2, 9, 15, 13) and x.dtype == torch.float32
    assert torch.equal(x[0, 0], x[0, 1])
    grid_ref = resample_to(ct.with_array(ct.array.astype(np.float32)), prepared.grid, "linear",
                           default_value=np.nan).array
    want = np.clip((grid_ref + 400.0) / 1000.0, 0, 1)
    inside = np.isfinite(want)
    assert inside.mean() > 0.9  # downsampling: the input centres lie inside the CT
    np.testing.assert_allclose(x[0, 0].numpy()[inside], want[inside], atol=1e-5)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_normalisation_and_xyz_axes():
    ct = oblique_ct()
    zyx = preprocess(ct, InputSpec(size=(6, 8, 10), window=(-300.0, 300.0), orientation="stored")).tensor
    xyz = preprocess(ct, InputSpec(size=(10, 8, 6), window=(-300.0, 300.0), axes="xyz",
                                   mean=0.5, std=0.25, orientation="stored")).tensor
    assert xyz.shape == (1, 1, 10, 8, 6)
    torch.testing.assert_close(xyz[0, 0], (zyx[0, 0].permute(2, 1, 0) - 0.5) / 0.25)


def test_ct_with_nans_is_refused():
    ct = oblique_ct()
    arr = ct.array.copy()
    arr[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        preprocess(ct.with_array(arr), InputSpec(orientation="stored"))


def test_same_as_demo_model_recipe():
    from saliency_inspector.models import demo_model

    ct = oblique_ct(shape=(20, 36, 40), dtype=np.int16)
    size = (8, 12, 16)
    ours = preprocess(ct, InputSpec(size=size, window=(-1000.0, 400.0), orientation="LPS")).tensor[0, 0].numpy()
    theirs = demo_model.ct_to_input(ct, size=size, window=(-1000.0, 400.0))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PSL", "SRA"])
def test_separable_resampling_equals_grid_sample_and_simpleitk(code):
    """Axis-aligned grids (any flip/permutation between them): three 1D interpolations give what
    grid_sample gives, and what SimpleITK's linear resampling gives inside the source's centres."""
    from saliency_inspector.models.preprocess import (axis_permutation, orientation_direction, oriented_grid,
                                                      resample_map, resample_separable)

    ct = Volume(np.zeros((23, 31, 27), np.int16), (0.8, 1.1, 2.5), (-20.0, 14.0, 60.0), np.diag([-1.0, 1.0, -1.0]))
    coarse = covering_grid(oriented_grid(ct, orientation_direction(code), (7, 5, 9)), (5, 6, 4))
    assert axis_permutation(coarse, ct) is not None
    values = np.random.default_rng(4).normal(size=(2,) + coarse.shape).astype(np.float32)
    separable = resample_separable(values, coarse, ct)
    general = resample_tensor(values, coarse, ct)
    np.testing.assert_allclose(separable, general, rtol=1e-5, atol=1e-5)
    theirs = resample_to(coarse.with_array(values[1]), ct, "linear", default_value=np.nan).array
    inside = np.isfinite(theirs)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(separable[1][inside], theirs[inside], rtol=1e-4, atol=1e-5)
    buffer = np.empty(ct.shape, np.float32)
    on_ct = resample_map(coarse.with_array(values[0]), ct, out=buffer)
    assert on_ct.array is buffer and on_ct.same_grid(ct)
    np.testing.assert_allclose(buffer, general[0], rtol=1e-5, atol=1e-5)
    # an oblique pair is not separable and goes through grid_sample
    assert axis_permutation(oblique_ct(), ct) is None
