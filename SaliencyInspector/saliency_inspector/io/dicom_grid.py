"""The geometry of a DICOM series' slices, checked, and irregular series put on an even grid.

Real series are irregular: a slice missing from an export leaves a gap (2.5 mm among 1.25 mm
slices), a tilted gantry stacks the slices along a direction that is not their normal (a sheared
volume). Like Slicer's DICOM scalar-volume reader (its "acquisition geometry regularization"), a
series is then resampled onto an even, orthogonal grid:

1. along the slices' stacking line, each new slice is the linear interpolation of the two
   original slices either side of it (same pixel, weights by distance), at the series' typical
   slice spacing;
2. a sheared stack (tilted gantry) is resampled, linearly, onto the orthogonal grid of the slices'
   own row/column directions and their normal (SimpleITK, through physical space).

``strict`` refuses such a series instead. What was done is returned as a provenance dict (the
caller warns and records it, e.g. in ``predictions.json``). Duplicated slices, slices of several
orientations or sizes in one series and slices that are not on one line are refused: no
interpolation can tell which of them is right.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

GAP_TOLERANCE = 0.05  # relative difference between slice gaps above which a series counts as uneven
TILT_TOLERANCE_DEG = 0.05  # stacking direction vs slice normal


def slice_geometry(folder, files, tags) -> dict | None:
    """Positions (n, 3), the one orientation (6,) and the size of the slices in ``files`` (GDCM's
    order); None when a slice lacks the geometry tags (the series is then left to ITK). ``tags``:
    ``tags(file, [tag, ...]) -> {tag: text}``. InputError for several orientations or sizes."""
    positions, orientations, sizes = [], set(), set()
    for name in files:
        found = tags(name, ["0020|0032", "0020|0037", "0028|0010", "0028|0011"])
        try:
            positions.append([float(v) for v in found["0020|0032"].split("\\")])
            orientations.add(tuple(round(float(v), 4) for v in found["0020|0037"].split("\\")))
        except (KeyError, ValueError):
            return None
        sizes.add((found.get("0028|0010"), found.get("0028|0011")))
    if len(orientations) > 1 or len(sizes) > 1:
        what = "orientations" if len(orientations) > 1 else "image sizes"
        raise InputError(f"{folder}: the series mixes slices of {len(orientations if what[0] == 'o' else sizes)} "
                         f"{what} (several reconstructions or series under one UID); export one series")
    return {"positions": np.array(positions), "orientation": np.array(next(iter(orientations)), dtype=float)}


def plan(folder, geometry: dict, strict: bool = False) -> dict | None:
    """What the series needs: None when its slices are evenly spaced along their normal; else a
    dict (``gap``/``tilt`` descriptions, the distances along the stacking line) for :func:`regularize`.
    InputError for duplicated slices, slices off one line, or any irregularity when ``strict``."""
    p = geometry["positions"]
    row, col = geometry["orientation"][:3], geometry["orientation"][3:]
    normal = np.cross(row, col)
    offsets = p - p[0]
    along = offsets @ normal
    order_ok = np.all(np.diff(along) > 0) or np.all(np.diff(along) < 0)
    gaps = np.linalg.norm(np.diff(p, axis=0), axis=1)
    if not order_ok or gaps.min() <= 1e-3 * max(float(np.median(gaps)), 1e-6):
        k = int(np.argmin(gaps))
        raise InputError(f"{folder}: slices {k + 1} and {k + 2} of {len(p)} are at the same position "
                         f"({', '.join(f'{v:.2f}' for v in p[k])} mm): a duplicated slice, or two series mixed "
                         "under one UID; export one series")
    stack = offsets[-1] / np.linalg.norm(offsets[-1])  # the stacking line's direction
    off_line = np.linalg.norm(offsets - np.outer(offsets @ stack, stack), axis=1).max()
    if off_line > 0.05 * float(np.median(gaps)) + 1e-3:
        raise InputError(f"{folder}: the slice positions do not lie on one line (off by up to {off_line:.2f} mm); "
                         "a series with a varying tilt or mixed slices cannot be put on one grid")
    distance = offsets @ stack
    steps = np.diff(distance)
    typical = float(np.median(steps))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(float(stack @ normal))))))
    uneven = np.flatnonzero(np.abs(steps - typical) > GAP_TOLERANCE * typical)
    if not uneven.size and tilt <= TILT_TOLERANCE_DEG:
        return None
    notes = []
    if uneven.size:
        n = int(uneven[0])
        notes.append(f"uneven slice spacing: slices {n + 1} and {n + 2} of {len(p)} are {steps[n]:.2f} mm apart "
                     f"where the others are {typical:.2f} mm ({uneven.size} such gap(s))")
    if tilt > TILT_TOLERANCE_DEG:
        notes.append(f"gantry tilt: the slices are stacked {tilt:.2f}° away from their normal (a sheared volume)")
    if strict:
        raise InputError(f"{folder}: {'; '.join(notes)}; --strict-geometry refuses such a series (leave it out to "
                         "resample it onto an even grid)")
    return {"notes": notes, "distance": distance, "step": typical, "stack": stack, "tilt_deg": tilt,
            "gaps": [{"after_slice": int(n + 1), "mm": float(steps[n])} for n in uneven]}


def regularize(array: np.ndarray, geometry: dict, spacing_xy, todo: dict):
    """(array, spacing, origin, direction) of the series on an even orthogonal grid (see the module
    docstring); ``array``: the slices (k, j, i) in GDCM's order, ``spacing_xy``: (column, row) mm."""
    import SimpleITK as sitk

    row, col = geometry["orientation"][:3], geometry["orientation"][3:]
    normal = np.cross(row, col)
    d, step = todo["distance"], todo["step"]
    count = int(round(d[-1] / step)) + 1
    targets = np.arange(count) * step * np.sign(d[-1])
    order = np.argsort(d)
    d_sorted, a_sorted = d[order], array[order].astype(np.float32)
    upper = np.clip(np.searchsorted(d_sorted, targets, side="left"), 1, len(d_sorted) - 1)
    lower = upper - 1
    w = ((targets - d_sorted[lower]) / (d_sorted[upper] - d_sorted[lower]))[:, None, None]
    even = (1 - w) * a_sorted[lower] + w * a_sorted[upper]  # linear along the stacking line
    origin = geometry["positions"][order[0]] if np.sign(d[-1]) > 0 else geometry["positions"][0]
    stack = todo["stack"] * np.sign(d[-1])
    sheared = np.stack([row, col, stack], axis=1)
    if todo["tilt_deg"] <= TILT_TOLERANCE_DEG:
        return even, (spacing_xy[0], spacing_xy[1], abs(step)), tuple(origin), np.stack([row, col, normal * np.sign(
            stack @ normal)], axis=1)
    image = sitk.GetImageFromArray(even)
    image.SetSpacing((spacing_xy[0], spacing_xy[1], abs(step)))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(sheared.ravel()))
    n = normal * np.sign(stack @ normal)
    target = np.stack([row, col, n], axis=1)
    size = list(image.GetSize())
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing((spacing_xy[0], spacing_xy[1], abs(step) * abs(float(stack @ n))))
    ref.SetOrigin(tuple(float(v) for v in origin))
    ref.SetDirection(tuple(target.ravel()))
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, float(even.min()))
    return sitk.GetArrayFromImage(out), ref.GetSpacing(), tuple(origin), target
