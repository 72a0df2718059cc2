"""CT → model input in the card's orientation, with an exact physical inverse.

The model-input grid is itself described as a :class:`Volume` geometry. Its direction is the
card's ``input.orientation`` (an orientation code such as ``LPS`` or ``RAS`` naming where the
grid's i, j, k axes point, as ITK and MONAI write it; ``stored`` keeps the CT's own direction).
It covers the CT's physical field of view: for a CT stored along those axes (any flip or axis
permutation) exactly its voxel boxes; for an oblique CT the axis-aligned box around them, the part
outside the CT filled with ``input.pad_value``. So the same physical CT gives the same tensor
whatever its file's direction or axis order. A feature map of shape (d, h, w) computed from that
input gets its own grid the same way (spacing scaled by input/feature size, origin shifted by half
the change of voxel size). Mapping a map back onto the CT is then a resampling in physical space
— never a naive resize of the array.

Resampling runs with ``torch.nn.functional.grid_sample`` on the model's device (GPU when there is
one), from an affine that takes destination voxel indices to source voxel indices; a test checks
it against SimpleITK (:func:`volume.resample_to`). We use torch rather than SimpleITK here because
the maps live on the device already and SimpleITK would force a copy to the host per map. Where
the two grids are axis-aligned (a signed permutation between their axes: every feature grid of a
CT that is not oblique to the card's orientation) the resampling is separable: three small 1D
interpolation matrices instead of a sampling grid of 3 floats per CT voxel (:func:`resample_separable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations, product

import numpy as np

from ..errors import InputError
from ..io.volume import Volume

_Z_CHUNK_VOXELS = 1 << 24  # destination voxels per grid_sample call (bounds the sampling grid's memory)

# ---- orientation codes ------------------------------------------------------------------------------
# A letter names where an axis points, in LPS physical coordinates (ITK's convention: the identity
# direction is "LPS"; MONAI/NiBabel write the same letters, e.g. Orientation(axcodes="RAS")).
_LETTER_AXIS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
ORIENTATION_CODES = tuple("".join(letters) for order in permutations(("LR", "PA", "SI"))
                          for letters in product(*order))  # the 48 codes
STORED = "stored"
ORIENTATION_FORM = ("three letters naming where the i, j, k (x, y, z) axes point, one of L/R, one of "
                    "P/A and one of S/I in any order (48 codes, e.g. LPS for the ITK/DICOM identity "
                    "direction, RAS for MONAI's Orientation('RAS')), or 'stored' for the file's own order")


def check_orientation(code, source: str = "input.orientation") -> str:
    """The orientation code in upper case, or ``"stored"``; InputError listing the valid form otherwise."""
    text = str(code).strip()
    if text.lower() == STORED:
        return STORED
    if text.upper() not in ORIENTATION_CODES:
        raise InputError(f"{source}: {code!r} is not an orientation code; give {ORIENTATION_FORM}")
    return text.upper()


def orientation_direction(code: str) -> np.ndarray:
    """3×3 LPS direction matrix (columns: the i, j, k axes) of an orientation code such as ``"RAS"``."""
    code = check_orientation(code)
    if code == STORED:
        raise ValueError("'stored' has no direction of its own; it keeps the CT's")
    direction = np.zeros((3, 3))
    for column, letter in enumerate(code):
        row, sign = _LETTER_AXIS[letter]
        direction[row, column] = sign
    return direction


def orientation_code(direction) -> str:
    """The orientation code nearest to a direction matrix (each axis named by its largest component)."""
    letters = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
    direction = np.asarray(direction, dtype=float)
    code = ""
    for column in direction.T:
        row = int(np.argmax(np.abs(column)))
        code += letters[(row, 1 if column[row] > 0 else -1)]
    return code


def check_direction(ct: Volume, name: str = "CT") -> None:
    """InputError when the direction matrix is singular or not orthonormal (a sheared or broken header)."""
    d = np.asarray(ct.direction, dtype=float)
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6 or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError(f"{name}: its direction matrix {np.round(d, 4).tolist()} is singular or not "
                         "orthonormal, so its voxels have no well-defined position; fix the file's "
                         "header (direction/space directions) or re-export it")


# ---- grids -------------------------------------------------------------------------------------------
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


def oriented_grid(ct: Volume, direction, size_zyx=None, spacing=None) -> Volume:
    """The grid with ``direction`` whose voxel boxes cover the CT's physical field of view.

    The box is the smallest one along ``direction``'s axes holding every corner of the CT's voxel
    boxes: the CT's own extent when it is stored along those axes (flipped or permuted), the
    axis-aligned box around it when it is oblique. ``size_zyx`` fixes the voxel counts, ``spacing``
    (x, y, z mm, along ``direction``'s axes) the voxel size (the count is rounded and the spacing
    adjusted so that the grid still covers the box exactly); with neither, the spacing is the CT's,
    carried onto the new axes.
    """
    direction = np.asarray(direction, dtype=float)
    hi = np.asarray(ct.size_xyz, dtype=float) - 0.5
    corners = np.array([[a, b, c] for a in (-0.5, hi[0]) for b in (-0.5, hi[1]) for c in (-0.5, hi[2])])
    along = ct.index_to_physical(corners) @ direction  # corner coordinates along the new axes
    low, extent = along.min(axis=0), np.ptp(along, axis=0)
    if size_zyx is not None:
        size_xyz = np.asarray(size_zyx[::-1], dtype=float)
    else:
        step = np.asarray(spacing, dtype=float) if spacing is not None else \
            np.abs(direction.T @ ct.direction) @ np.asarray(ct.spacing)
        size_xyz = np.maximum(1, np.round(extent / step))
    voxel = extent / size_xyz
    origin = direction @ (low + voxel / 2)
    return geometry(tuple(int(n) for n in size_xyz[::-1]), tuple(voxel), tuple(origin), direction)


def input_grid(ct: Volume, size=None, spacing=None, axes: str = "zyx", orientation: str = "LPS") -> Volume:
    """The model-input grid for a CT: ``size`` (tensor order, see ``axes``), ``spacing`` (x, y, z mm),
    or the CT's spacing when both are None, in the card's ``orientation`` (``"stored"``: the CT's own
    direction, i.e. the array as the file stores it).

    With ``spacing`` the voxel count per axis is round(extent / spacing) and the spacing is then
    adjusted slightly so that the grid still covers exactly the CT's field of view.
    """
    orientation = check_orientation(orientation)
    direction = ct.direction if orientation == STORED else orientation_direction(orientation)
    size_zyx = None if size is None else (tuple(size) if axes == "zyx" else tuple(reversed(size)))
    if orientation == STORED and size_zyx is None and spacing is None:
        return geometry(ct.shape, ct.spacing, ct.origin, ct.direction)
    return oriented_grid(ct, direction, size_zyx, spacing)


def feature_grid(grid: Volume, feature_shape_zyx) -> Volume:
    """The physical grid of a feature map computed from an input on ``grid``.

    Assumes the network's strides tile the input evenly (true for conv/pool stacks with 'same'
    padding); the feature voxels then cover the input's field of view, edges aligned.
    """
    return covering_grid(grid, feature_shape_zyx)


def window(hu, lo: float, hi: float, clip: bool = True):
    """HU mapped linearly onto [0, 1] and clipped (torch or numpy)."""
    scaled = (hu - lo) / (hi - lo)
    if not clip:
        return scaled
    return scaled.clamp(0.0, 1.0) if hasattr(scaled, "clamp") else np.clip(scaled, 0.0, 1.0)


@dataclass(frozen=True)
class Prepared:
    """A model-input tensor and the geometry that maps it back onto the CT."""

    tensor: object  # torch.Tensor (1, C, *spatial) on the device, in the card's axis order
    grid: Volume  # the model-input grid (z, y, x) in physical space, in the card's orientation
    ct: Volume  # the CT it came from (its grid is where maps go back to)
    axes: str = "zyx"
    orientation: str = "LPS"  # the card's orientation code, or "stored"

    def feature_grid(self, feature_shape) -> Volume:
        """The physical grid of a feature map with spatial shape ``feature_shape`` (tensor order)."""
        shape = tuple(feature_shape) if self.axes == "zyx" else tuple(reversed(feature_shape))
        return feature_grid(self.grid, shape)

    def raw_volume(self, tensor_map) -> Volume:
        """One map in tensor order (any resolution tiling the input: feature maps, or input-grid
        maps of gradient estimators) → a float32 (z, y, x) Volume on its own physical grid.

        This is the one place where the card's axis order is undone (xyz tensors → zyx arrays);
        put the result on the CT with :func:`resample_map` (or ``Explanation.add_raw``).
        """
        import torch

        m = torch.as_tensor(tensor_map).detach()
        if m.ndim != 3:
            raise ValueError(f"a map must be 3D (d, h, w), got shape {tuple(m.shape)}")
        if self.axes == "xyz":
            m = m.permute(2, 1, 0)  # back to (z, y, x)
        grid = feature_grid(self.grid, tuple(m.shape))
        return Volume(np.ascontiguousarray(m.float().cpu().numpy()), grid.spacing, grid.origin, grid.direction)

    def to_ct(self, maps, out_dtype=np.float32) -> np.ndarray:
        """Feature-resolution maps (N, *spatial) in tensor order → numpy (N, z, y, x) on the CT grid.

        Linear interpolation in physical space; CT voxels past the outermost feature-voxel centres
        take the edge value (the feature grid covers the CT, so that is only the last half voxel).
        Holds N CT-sized maps at once: for many maps use :meth:`raw_volume` + :func:`resample_map`.
        """
        import torch

        maps = torch.as_tensor(maps)
        if maps.ndim != 4:
            raise ValueError(f"maps must be (N, d, h, w), got shape {tuple(maps.shape)}")
        out = np.empty((maps.shape[0],) + self.ct.shape, dtype=out_dtype)
        for n in range(maps.shape[0]):
            out[n] = resample_map(self.raw_volume(maps[n]), self.ct).array
        return out


MIN_SPACING_MM, MAX_SPACING_MM = 0.01, 50.0  # outside: not a CT in mm (a file in metres or micrometres)


def check_ct(ct: Volume, name: str = "CT") -> None:
    """InputError when the CT cannot be a CT in Hounsfield units that a volumetric classifier can
    read: a single voxel or slice, a spacing outside 0.01-50 mm, 8-bit voxels (cannot hold HU: air
    is -1000), every voxel the same value, NaN or infinite values, a broken direction matrix."""
    check_direction(ct, name)
    size = "×".join(str(n) for n in ct.size_xyz)
    if min(ct.size_xyz) < 2:
        raise InputError(f"{name}: is {size} voxels, a single {'voxel' if max(ct.size_xyz) < 2 else 'slice'}; "
                         "a volumetric classifier needs a 3-D CT (at least 2 voxels along each axis)")
    spacing = [float(s) for s in ct.spacing]
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputError(f"{name}: its spacing {' × '.join(f'{s:g}' for s in spacing)} mm is not a CT's "
                         f"({MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm); is the file's unit mm? fix the header's spacing")
    if ct.array.dtype in (np.int8, np.uint8):
        info = np.iinfo(ct.array.dtype)
        raise InputError(f"{name}: its voxels are {ct.array.dtype} ({info.min}..{info.max}), which cannot hold "
                         "Hounsfield units (air is -1000 HU); give the CT in HU (int16 or float)")
    if np.issubdtype(ct.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(ct.array)))
        if bad:
            raise InputError(f"{name}: {bad} voxel{'s are' if bad != 1 else ' is'} NaN or infinite; fill them (e.g. with -1000 HU "
                             "for air) before computing saliency")
    lo, hi = float(np.min(ct.array)), float(np.max(ct.array))
    if lo == hi:
        raise InputError(f"{name}: every voxel is {lo:g}; a constant image holds nothing to classify or explain")


def preprocess(ct: Volume, spec, device="cpu") -> Prepared:
    """CT (HU) → model input: resample onto the card's grid (orientation, size/spacing) in physical
    space, padding outside the CT with ``spec.pad_value``, window to [0, 1], optionally normalise
    (mean/std), copy into ``spec.channels`` channels.

    ``spec`` is a :class:`models.InputSpec`. Resampling is linear on the HU values, then windowed,
    the same order as the demo model's training recipe. A grid whose voxel centres are the CT's own
    in another axis order (orientation only, no resizing) is a pure transpose/flip: exact.
    """
    import torch

    check_ct(ct)
    orientation = getattr(spec, "orientation", "LPS")
    grid = input_grid(ct, spec.size, spec.spacing, spec.axes, orientation)
    pad = float(getattr(spec, "pad_value", -1000.0))
    same_voxels = axis_permutation(ct, grid, exact=True)
    if same_voxels is not None:
        hu = torch.as_tensor(np.ascontiguousarray(reorient_array(ct.array, grid.shape, *same_voxels)),
                             device=device).to(torch.float32)
    else:
        source = torch.as_tensor(np.ascontiguousarray(ct.array), device=device).to(torch.float32)
        hu = resample_tensor(source[None], ct, grid, as_numpy=False, fill=pad)[0]
        del source
    x = window(hu, *spec.window, clip=getattr(spec, "clip", True))
    if spec.mean is not None or spec.std is not None:
        x = (x - (spec.mean or 0.0)) / (spec.std or 1.0)
    if spec.axes == "xyz":
        x = x.permute(2, 1, 0)
    x = x[None, None].expand(1, spec.channels, *x.shape).contiguous()
    return Prepared(tensor=x, grid=grid, ct=ct, axes=spec.axes, orientation=orientation)


# ---- resampling ----------------------------------------------------------------------------------------
def index_affine(source: Volume, target: Volume) -> np.ndarray:
    """4×4 matrix taking target voxel indices (i, j, k, 1) to source voxel indices, via physical space."""
    return np.linalg.inv(source.ijk_to_lps()) @ target.ijk_to_lps()


def axis_permutation(source: Volume, target: Volume, exact: bool = False, atol: float = 1e-6):
    """When each target axis runs along one source axis (a signed permutation between the grids):
    ``(source_axis_of, scale, offset)`` per target axis (x, y, z order) such that source index =
    scale * target index + offset along it; else None. With ``exact`` the scale must be ±1 and the
    offsets integers (the target's voxels are the source's, reordered): else None.
    """
    m = index_affine(source, target)
    linear = m[:3, :3]
    axis_of = np.argmax(np.abs(linear), axis=0)  # source axis of each target axis
    if sorted(axis_of) != [0, 1, 2]:
        return None
    scale = linear[axis_of, [0, 1, 2]]
    off_axis = linear.copy()
    off_axis[axis_of, [0, 1, 2]] = 0.0
    if np.abs(off_axis).max() > atol * max(1.0, np.abs(scale).max()):
        return None
    offset = m[axis_of, 3]
    if exact:
        if not np.allclose(np.abs(scale), 1.0, atol=atol) or not np.allclose(offset, np.round(offset), atol=1e-4):
            return None
        source_size = np.asarray(source.size_xyz)[axis_of]
        first = np.round(offset)
        last = first + np.round(scale) * (np.asarray(target.size_xyz) - 1)
        if first.min() < 0 or last.min() < 0 or (first >= source_size).any() or (last >= source_size).any():
            return None
        return axis_of, np.round(scale), first.astype(int)
    return axis_of, scale, offset


def reorient_array(array: np.ndarray, target_shape, axis_of, scale, offset) -> np.ndarray:
    """The (z, y, x) ``array`` reordered onto a target grid of ``target_shape`` related to it by
    :func:`axis_permutation` with ``exact=True`` (a view: no interpolation, no copy)."""
    # target axis t (x=0, y=1, z=2) is source axis axis_of[t]; arrays are indexed (z, y, x)
    out = np.transpose(array, [2 - axis_of[2], 2 - axis_of[1], 2 - axis_of[0]])
    index = []
    for t in (2, 1, 0):
        n = target_shape[2 - t]
        step = int(scale[t])
        start = int(offset[t])
        stop = start + step * (n - 1)
        index.append(slice(start, None if stop + step < 0 else stop + step, step))
    return out[tuple(index)]


def resample_map(raw: Volume, target: Volume, out: np.ndarray | None = None) -> Volume:
    """A map on its own grid (feature or input resolution) → float32 on ``target``'s grid.

    Linear interpolation in physical space, the edge value kept past the outermost source-voxel
    centres. Separable (:func:`resample_separable`) when the grids are axis-aligned, ``grid_sample``
    otherwise. ``out`` (float32, the target's shape) is written into and returned inside the Volume,
    so callers putting many maps on the CT one after another can reuse one buffer.
    """
    import torch

    values = torch.as_tensor(np.ascontiguousarray(raw.array, dtype=np.float32))[None]
    if out is None:
        out = np.empty(target.shape, dtype=np.float32)
    if axis_permutation(raw, target) is not None:
        resample_separable(values, raw, target, out=out[None])
    else:
        out[...] = resample_tensor(values, raw, target)[0]
    return target.with_array(out) if out.shape == target.shape else Volume(out, target.spacing, target.origin,
                                                                            target.direction)


def _linear_weights(n_target: int, n_source: int, scale: float, offset: float, dtype, device):
    """(n_target, n_source) matrix of 1D linear interpolation at source index scale*q+offset (edges clamped)."""
    import torch

    x = (torch.arange(n_target, dtype=torch.float64, device=device) * scale + offset).clamp(0, n_source - 1)
    i0 = x.floor().long().clamp(max=n_source - 1)
    i1 = (i0 + 1).clamp(max=n_source - 1)
    w1 = x - i0
    weights = torch.zeros((n_target, n_source), dtype=torch.float64, device=device)
    rows = torch.arange(n_target, device=device)
    weights.index_put_((rows, i0), 1.0 - w1, accumulate=True)
    weights.index_put_((rows, i1), w1, accumulate=True)
    return weights.to(dtype)


def resample_separable(arrays, source: Volume, target: Volume, out: np.ndarray | None = None):
    """:func:`resample_tensor` for axis-aligned grids (see :func:`axis_permutation`), exactly the same
    interpolation (linear, border clamped) done as three 1D interpolations, one per axis.

    ``arrays`` (N, z, y, x) on ``source``; returns numpy (N, *target.shape) float32 (``out`` when given).
    Written here because grid_sample builds a 3-float sampling grid per target voxel and gathers
    8 neighbours each, where the separable form is two small matrix products and one per slab of the
    CT (measured in benchmarks/bench_fullsize.py).
    """
    import torch

    relation = axis_permutation(source, target)
    if relation is None:
        raise ValueError("the grids are not axis-aligned; use resample_tensor")
    axis_of, scale, offset = relation
    arrays = torch.as_tensor(arrays)
    arrays = arrays.float() if not arrays.is_floating_point() else arrays
    device, dtype = arrays.device, torch.float32
    # source reordered so that its dims run along the target's (z, y, x)
    src = arrays.permute(0, 3 - axis_of[2], 3 - axis_of[1], 3 - axis_of[0]).to(dtype)
    src_size = np.asarray(source.size_xyz)[axis_of]  # source size along target x, y, z
    nz, ny, nx = target.shape
    wz, wy, wx = (_linear_weights(n, int(src_size[t]), scale[t], offset[t], dtype, device)
                  for t, n in ((2, nz), (1, ny), (0, nx)))
    n = arrays.shape[0]
    if out is None:
        out = np.empty((n, nz, ny, nx), dtype=np.float32)
    result = torch.from_numpy(out) if device.type == "cpu" else None
    with torch.no_grad():
        small = torch.einsum("nabc,Za,Yb->nZYc", src, wz, wy)  # (N, nz, ny, w): small (w = source x)
        chunk = max(1, _Z_CHUNK_VOXELS // max(1, ny * nx))
        for z0 in range(0, nz, chunk):
            part = small[:, z0:z0 + chunk]
            if result is not None:
                torch.matmul(part, wx.T, out=result[:, z0:z0 + chunk])
            else:
                out[:, z0:z0 + chunk] = torch.matmul(part, wx.T).cpu().numpy()
    return out


def resample_tensor(arrays, source: Volume, target: Volume, out_dtype=np.float32, as_numpy=True, fill=None):
    """Resample N arrays on ``source``'s grid ((N, z, y, x), numpy or torch) onto ``target``'s grid.

    Linear interpolation in physical space with border clamping, via ``grid_sample`` on the arrays'
    device, processed in slabs of target slices so the sampling grid stays small. With ``fill``,
    target voxels whose centre lies outside the source's field of view (its voxel boxes) get that
    value instead (the padding of an oblique CT's axis-aligned box).
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
        grid64 = ck[:, None, None, :] + cj[None, :, None, :] + ci[None, None, :, :]
        grid = grid64.to(dtype)
        sampled = F.grid_sample(source_batch, grid[None], mode="bilinear", padding_mode="border",
                                align_corners=False)[0]
        if fill is not None:  # normalised coordinates outside [-1, 1] = outside the voxel boxes
            outside = (grid64.abs() > 1.0 + 1e-9).any(dim=-1)
            sampled = sampled.masked_fill(outside[None], float(fill))
        out[:, z0:z0 + len(k)] = sampled
    if not as_numpy:
        return out
    return out.cpu().numpy().astype(out_dtype, copy=False)
