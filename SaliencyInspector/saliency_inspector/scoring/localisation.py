"""Where the map's maximum lies relative to a mask: the pointing game and the peak distance in mm.

The metrics (:func:`pointing_game`, :func:`peak_distance_mm`) read numbers that
:func:`.evaluation.evaluate` measures once per segment with :func:`pointing_hits` and
:func:`mean_distance_to_mask_mm`, from the voxels tied for the maximum (:func:`argmax_voxels`).
Distances are physical (the grid's spacing), never in voxels.
"""

from __future__ import annotations

import numpy as np

from .mask_scores import MaskScores
from .ranking import Ranking

POINTING_TOLERANCE_MM = 5.0


def pointing_game(ms: MaskScores) -> float:
    """1 if the map's maximum lies within the tolerance of the mask, else 0 (fraction when tied)."""
    if not ms.ranks_defined():
        return float("nan")
    return float(ms.pointing_hits)


def peak_distance_mm(ms: MaskScores) -> float:
    """Distance (mm) from the map's maximum to the nearest mask voxel; 0 inside (mean over ties)."""
    if not ms.ranks_defined() or ms.peak_distance is None:
        return float("nan")
    return float(ms.peak_distance)



def argmax_voxels(flat_raw: np.ndarray, in_region, ranking: Ranking, shape, importance: str = "relu") -> np.ndarray:
    """(K, 3) z, y, x indices of the region's voxels that tie for the maximum (tie group 0) of the
    ranked scores (``importance``: the transform the ranking was made with)."""
    top = flat_raw == ranking.values[0]  # S⁺'s maximum is a raw value (or the map is constant)
    if importance == "abs" and flat_raw.dtype != bool:
        top |= flat_raw == -ranking.values[0]  # |map|'s maximum: either sign
    if in_region is not None:
        top &= in_region
    return np.stack(np.unravel_index(np.flatnonzero(top), shape), axis=1)


def mean_distance_to_mask_mm(points: np.ndarray, mask_box, region, shape, spacing, most: int = 64) -> float:
    """Mean over (at most ``most``) argmax voxels (z, y, x) of the distance in mm to the nearest voxel
    of the mask ∩ region. Searched in growing boxes around all the points at once (exact: a point's
    distance is only trusted when it is no farther than the box's edge), so a near organ costs a
    small crop and a far one a few whole-array scans, not one per point."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    if points.shape[0] > most:
        points = points[np.linspace(0, points.shape[0] - 1, most).astype(int)]
    sampling = np.asarray(spacing, dtype=float)[::-1]
    shape = np.asarray(shape)
    radius = 8
    while True:
        lo = np.maximum(points.min(axis=0) - radius, 0)
        hi = np.minimum(points.max(axis=0) + radius + 1, shape)
        crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        box = np.asarray(mask_box(crop), dtype=bool)
        if region is not None:
            if box.flags.owndata and box.flags.writeable:  # made for us (a labelmap == label): and in place
                np.logical_and(box, region[crop], out=box)  # once the crop is the whole CT, a second
            else:  # grid-sized array here was evaluate's memory peak; a view of the caller's mask is copied
                box = box & region[crop]
        whole = bool(np.all(lo == 0) and np.all(hi == shape))
        if box.any():
            # the nearest mask voxel to a point outside the mask has a 6-neighbour outside it (a step
            # toward the point is nearer), so the tree holds only the surface: on a large organ a few
            # % of its voxels, where np.argwhere of all of them cost 48 bytes a voxel before the tree.
            # The surface is found inside the mask's own bounding box (a view, no copy): once the
            # crop is the whole CT, a grid-sized erosion output was this function's memory peak.
            tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in
                          (np.flatnonzero(box.any(axis=tuple(a for a in range(3) if a != axis)))
                           for axis in range(3)))
            inner = box[tight]
            surface = ndimage.binary_erosion(inner)  # border_value 0: the bounding box's edge is surface
            np.logical_not(surface, out=surface)
            surface &= inner
            offset = lo + np.array([t.start for t in tight])
            distance, _ = cKDTree((np.argwhere(surface) + offset) * sampling).query(points * sampling)
            del surface, inner
            distance[box[tuple((points - lo).T)]] = 0.0  # points inside the mask
            # no voxel outside the box is nearer than the box's edge (edges of the array are no limit)
            below = np.where(lo > 0, (points - lo + 1) * sampling, np.inf)
            above = np.where(hi < shape, (hi - points) * sampling, np.inf)
            edge = np.minimum(below, above).min(axis=1)
            if whole or np.all(distance <= edge):
                return float(np.mean(distance))
        elif whole:
            return float("nan")
        radius *= 4


def pointing_hits(points: np.ndarray, mask_box, region, shape, spacing, tolerance_mm: float) -> float:
    """Fraction of ``points`` (z, y, x) within ``tolerance_mm`` of ``mask ∩ region``, distances in mm.
    ``mask_box(crop)`` gives the mask inside a crop of the grid (``region`` None: the whole grid).

    scipy's Euclidean distance transform with ``sampling`` = spacing in (z, y, x) order, computed on
    the box around the points that any voxel within the tolerance must lie in (exact, and cheap on a
    full-size CT).
    """
    from scipy import ndimage

    sampling = np.asarray(spacing, dtype=float)[::-1]  # (x, y, z) -> (z, y, x)
    margin = np.ceil(tolerance_mm / sampling).astype(int) + 1
    lo = np.maximum(points.min(axis=0) - margin, 0)
    hi = np.minimum(points.max(axis=0) + margin + 1, shape)
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    box = np.array(mask_box(crop), dtype=bool)  # a copy: never modify the caller's mask
    if region is not None:
        box &= region[crop]
    if not box.any():
        return 0.0
    distance = ndimage.distance_transform_edt(~box, sampling=sampling)
    local = points - lo
    d = distance[local[:, 0], local[:, 1], local[:, 2]]
    return float(np.mean(d <= tolerance_mm + 1e-9))
