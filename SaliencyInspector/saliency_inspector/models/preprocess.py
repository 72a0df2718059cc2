"""CT → model input, with an exact physical inverse.

The model-input grid is itself described as a :class:`Volume` geometry: the CT's direction,
spacing = CT extent / size, and an origin chosen so that the input voxels' boxes cover exactly the
CT's field of view (voxel edges aligned, not centres). A feature map of shape (d, h, w) computed
from that input gets its own grid the same way (spacing scaled by input/feature size, origin
shifted by half the change of voxel size). Mapping a map back onto the CT is then a resampling in
physical space — never a naive resize of the array.

Resampling runs with ``torch.nn.functional.grid_sample`` on the model's device (GPU when there is
one), from an affine that takes destination voxel indices to source voxel indices; a test checks
it against SimpleITK (:func:`volume.resample_to`). We use torch rather than SimpleITK here because
the maps live on the device already and SimpleITK would force a copy to the host per map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.volume import Volume

_Z_CHUNK_VOXELS = 1 << 24  # destination voxels per grid_sample call (bounds the sampling grid's memory)


def geometry(shape_zyx, spacing, origin, direction) -> Volume:
    """A geometry-only Volume (its array is a zero-memory broadcast view; treat it as meaningless)."""
    shape = tuple(int(n) for n in shape_zyx)
    return Volume(np.broadcast_to(np.zeros((), np.uint8), shape), spacing, origin, direction)


def covering_grid(ct: Volume, size_zyx) -> Volume:
    """The grid of ``size_zyx`` voxels covering exactly the CT's field of view, with its direction."""
    size_xyz = np.asarray(size_zyx[::-1], dtype=float)
    spacing = np.asarray(ct.spacing) * np.asarray(ct.size_xyz) / size_xyz
    origin = np.asarray(ct.origin) + ct.direction @ ((spacing - np.asarray(ct.spacing)) / 2)
    return geometry(size_zyx, tuple(spacing), tuple(origin), ct.direction)


def input_grid(ct: Volume, size=None, spacing=None, axes: str = "zyx") -> Volume:
    """The model-input grid for a CT: ``size`` (tensor order, see ``axes``), ``spacing`` (x, y, z mm),
    or the CT's own grid when both are None.

    With ``spacing`` the voxel count per axis is round(extent / spacing) and the spacing is then
    adjusted slightly so that the grid still covers exactly the CT's field of view.
    """
    if size is not None:
        size_zyx = tuple(size) if axes == "zyx" else tuple(reversed(size))
        return covering_grid(ct, size_zyx)
    if spacing is not None:
        extent = np.asarray(ct.spacing) * np.asarray(ct.size_xyz)
        size_xyz = np.maximum(1, np.round(extent / np.asarray(spacing, dtype=float))).astype(int)
        return covering_grid(ct, tuple(int(n) for n in size_xyz[::-1]))
    return geometry(ct.shape, ct.spacing, ct.origin, ct.direction)


def feature_grid(grid: Volume, feature_shape_zyx) -> Volume:
    """The physical grid of a feature map computed from an input on ``grid``.

    Assumes the network's strides tile the input evenly (true for conv/pool stacks with 'same'
    padding); the feature voxels then cover the input's field of view, edges aligned.
    """
    return covering_grid(grid, feature_shape_zyx)


def window(hu, lo: float, hi: float):
    """HU mapped linearly onto [0, 1] and clipped (torch or numpy)."""
    scaled = (hu - lo) / (hi - lo)
    return scaled.clamp(0.0, 1.0) if hasattr(scaled, "clamp") else np.clip(scaled, 0.0, 1.0)


@dataclass(frozen=True)
class Prepared:
    """A model-input tensor and the geometry that maps it back onto the CT."""

    tensor: object  # torch.Tensor (1, C, *spatial) on the device, in the card's axis order
    grid: Volume  # the model-input grid (z, y, x) in physical space
    ct: Volume  # the CT it came from (its grid is where maps go back to)
    axes: str = "zyx"

    def feature_grid(self, feature_shape) -> Volume:
        """The physical grid of a feature map with spatial shape ``feature_shape`` (tensor order)."""
        shape = tuple(feature_shape) if self.axes == "zyx" else tuple(reversed(feature_shape))
        return feature_grid(self.grid, shape)

    def to_ct(self, maps, out_dtype=np.float32) -> np.ndarray:
        """Feature-resolution maps (N, *spatial) in tensor order → numpy (N, z, y, x) on the CT grid.

        Linear interpolation in physical space; CT voxels past the outermost feature-voxel centres
        take the edge value (the feature grid covers the CT, so that is only the last half voxel).
        """
        import torch

        maps = torch.as_tensor(maps)
        if maps.ndim != 4:
            raise ValueError(f"maps must be (N, d, h, w), got shape {tuple(maps.shape)}")
        if self.axes == "xyz":
            maps = maps.permute(0, 3, 2, 1)  # back to (z, y, x)
        source = feature_grid(self.grid, tuple(maps.shape[1:]))
        return resample_tensor(maps, source, self.ct, out_dtype=out_dtype)


def check_ct(ct: Volume, name: str = "CT") -> None:
    """InputError when the CT holds NaN or infinite values."""
    if np.issubdtype(ct.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(ct.array)))
        if bad:
            raise InputError(f"{name}: {bad} voxel{'s are' if bad != 1 else ' is'} NaN or infinite; fill them (e.g. with -1000 HU "
                             "for air) before computing saliency")


def preprocess(ct: Volume, spec, device="cpu") -> Prepared:
    """CT (HU) → model input: resample to the card's size/spacing in physical space, window to
    [0, 1], optionally normalise (mean/std), copy into ``spec.channels`` channels.

    ``spec`` is a :class:`models.InputSpec`. Resampling is linear on the HU values, then windowed,
    the same order as the demo model's training recipe.
    """
    import torch

    check_ct(ct)
    grid = input_grid(ct, spec.size, spec.spacing, spec.axes)
    hu = torch.as_tensor(np.ascontiguousarray(ct.array), device=device).to(torch.float32)
    if grid.same_grid(ct):
        resampled = hu
    else:
        resampled = torch.as_tensor(resample_tensor(hu[None], ct, grid, as_numpy=False)[0])
    x = window(resampled, *spec.window)
    if spec.mean is not None or spec.std is not None:
        x = (x - (spec.mean or 0.0)) / (spec.std or 1.0)
    if spec.axes == "xyz":
        x = x.permute(2, 1, 0)
    x = x[None, None].expand(1, spec.channels, *x.shape).contiguous()
    return Prepared(tensor=x, grid=grid, ct=ct, axes=spec.axes)


def index_affine(source: Volume, target: Volume) -> np.ndarray:
    """4×4 matrix taking target voxel indices (i, j, k, 1) to source voxel indices, via physical space."""
    return np.linalg.inv(source.ijk_to_lps()) @ target.ijk_to_lps()


def resample_tensor(arrays, source: Volume, target: Volume, out_dtype=np.float32, as_numpy=True):
    """Resample N arrays on ``source``'s grid ((N, z, y, x), numpy or torch) onto ``target``'s grid.

    Linear interpolation in physical space with border clamping, via ``grid_sample`` on the arrays'
    device, processed in slabs of target slices so the sampling grid stays small.
    Returns numpy (N, z, y, x) ``out_dtype`` (or a torch tensor on the device with ``as_numpy=False``).
    """
    import torch
    import torch.nn.functional as F

    arrays = torch.as_tensor(arrays)
    if not arrays.is_floating_point():
        arrays = arrays.float()
    device, dtype = arrays.device, arrays.dtype
    n = arrays.shape[0]
    src_shape = np.asarray(arrays.shape[1:][::-1], dtype=float)  # (x, y, z) sizes
    m = index_affine(source, target)
    # grid_sample (align_corners=False) wants x_norm = (2 * index + 1) / size - 1 per axis.
    scale = 2.0 / src_shape
    lin = torch.as_tensor(m[:3, :3] * scale[:, None], dtype=torch.float64, device=device)
    off = torch.as_tensor(m[:3, 3] * scale + scale / 2 - 1.0, dtype=torch.float64, device=device)
    nz, ny, nx = target.shape
    i = torch.arange(nx, dtype=torch.float64, device=device)
    j = torch.arange(ny, dtype=torch.float64, device=device)
    # per-axis contributions, broadcast later: (.., 3) vectors
    ci = i[:, None] * lin[:, 0]            # (nx, 3)
    cj = j[:, None] * lin[:, 1] + off      # (ny, 3)
    out = torch.empty((n, nz, ny, nx), dtype=dtype, device=device)
    chunk = max(1, _Z_CHUNK_VOXELS // max(1, ny * nx))
    source_batch = arrays[None]
    for z0 in range(0, nz, chunk):
        k = torch.arange(z0, min(nz, z0 + chunk), dtype=torch.float64, device=device)
        ck = k[:, None] * lin[:, 2]        # (nk, 3)
        grid = (ck[:, None, None, :] + cj[None, :, None, :] + ci[None, None, :, :]).to(dtype)
        sampled = F.grid_sample(source_batch, grid[None], mode="bilinear", padding_mode="border",
                                align_corners=False)
        out[:, z0:z0 + len(k)] = sampled[0]
    if not as_numpy:
        return out
    return out.cpu().numpy().astype(out_dtype, copy=False)
