"""The 2-D slice panels: axial, coronal and sagittal planes through a point, sampled in physical
(LPS) space with square pixels of one size for all panels, so that anisotropic spacing and oblique
CT directions are shown with their true proportions (no naive array slicing). Orientation follows
the radiological convention Slicer uses: axial with patient right on image left and anterior up;
coronal with patient right on the left and superior up; sagittal with anterior on the left and
superior up. The CT in a window, the heat above a threshold, organ outlines, a cross at the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, overlap_fraction
from .display import (BACKGROUND, DEFAULT_THRESHOLD, DEFAULT_WINDOW, HEAT_ALPHA, PEAK_CROSS_COLOR, PEAK_CROSS_PX,
                      cool_colors, display_map, heat_colors, peak_point, segment_colors, segment_groups)

# Axes of LPS space: 0 = x (towards patient Left), 1 = y (Posterior), 2 = z (Superior).
# Each panel: (name, column axis, row axis, axis normal to the plane, letters at left/right/top/bottom).
# Image columns and rows both run along increasing LPS coordinates except the superior axis, which
# runs upwards (row 0 = most superior).
_PANELS = (
    ("axial", 0, 1, 2, ("R", "L", "A", "P")),
    ("coronal", 0, 2, 1, ("R", "L", "S", "I")),
    ("sagittal", 1, 2, 0, ("A", "P", "S", "I")),
)


@dataclass
class SlicePanel:
    """One slice panel: an RGB image (H, W, 3 floats in 0..1) of a plane through ``point``.

    Pixel (row, col) shows the LPS point whose coordinate on ``col_axis`` is ``start[0] + col *
    pixel_mm`` and on ``row_axis`` is ``start[1] ± row * pixel_mm`` (minus for the superior axis,
    which points up), and whose coordinate on ``normal_axis`` is ``point[normal_axis]``.
    """

    name: str
    rgb: np.ndarray
    point: np.ndarray
    col_axis: int
    row_axis: int
    normal_axis: int
    start: tuple
    pixel_mm: float
    letters: tuple

    def _row_sign(self) -> float:
        return -1.0 if self.row_axis == 2 else 1.0

    def project(self, lps) -> tuple:
        """(row, col) pixel coordinates (floats) of an LPS point projected onto this panel."""
        lps = np.asarray(lps, dtype=float)
        col = (lps[self.col_axis] - self.start[0]) / self.pixel_mm
        row = (lps[self.row_axis] - self.start[1]) / (self._row_sign() * self.pixel_mm)
        return float(row), float(col)

    def points(self) -> np.ndarray:
        """LPS coordinates (H, W, 3) of every pixel centre."""
        h, w = self.rgb.shape[:2]
        pts = np.empty((h, w, 3))
        pts[..., self.normal_axis] = self.point[self.normal_axis]
        pts[..., self.col_axis] = self.start[0] + np.arange(w)[None, :] * self.pixel_mm
        pts[..., self.row_axis] = self.start[1] + self._row_sign() * np.arange(h)[:, None] * self.pixel_mm
        return pts


def _bounds_lps(volume: Volume) -> np.ndarray:
    """(2, 3) min/max LPS corners of the box enclosing the volume's voxels (voxel edges included)."""
    n = np.asarray(volume.size_xyz, dtype=float)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5)
                        for c in (-0.5, n[2] - 0.5)])
    pts = volume.index_to_physical(corners)
    return np.stack([pts.min(axis=0), pts.max(axis=0)])


def _sample(volume: Volume, points: np.ndarray, order: int, cval: float, array=None) -> np.ndarray:
    """Values of ``volume`` (or ``array`` on its grid) at LPS ``points`` (..., 3); ``cval`` outside."""
    from scipy.ndimage import map_coordinates

    array = volume.array if array is None else array
    ijk = volume.physical_to_index(points.reshape(-1, 3))
    coords = ijk[:, ::-1].T  # (k, j, i) rows, the array's axis order
    # float32 output: integer CTs are interpolated without a float copy of the whole volume
    values = map_coordinates(array, coords, output=np.float32, order=order, mode="constant", cval=cval,
                             prefilter=False)
    return values.reshape(points.shape[:-1])


def _nearest_voxels(volume: Volume, points: np.ndarray):
    """Flat indices of the voxels nearest to LPS ``points`` (..., 3) and where they are inside the grid.

    Masks are sampled by one gather with these (many masks share one grid), which is much faster
    than interpolating each mask with order 0.
    """
    ijk = np.rint(volume.physical_to_index(points.reshape(-1, 3))).astype(np.int64)
    size = np.asarray(volume.size_xyz)
    inside = np.all((ijk >= 0) & (ijk < size), axis=1)
    ijk[~inside] = 0
    flat = np.ravel_multi_index((ijk[:, 2], ijk[:, 1], ijk[:, 0]), volume.shape)
    return flat, inside


def peak_in_plane(saliency: Volume, peak, point, normal_axis: int) -> bool:
    """True when the plane through ``point`` normal to LPS axis ``normal_axis`` cuts the map voxel
    that holds ``peak`` (within half that voxel's extent along the axis)."""
    half = 0.5 * float(np.abs(np.asarray(saliency.direction)[normal_axis]) @ np.asarray(saliency.spacing))
    return abs(float(peak[normal_axis]) - float(point[normal_axis])) <= half + 1e-6


def slice_panels(ct: Volume, saliency: Volume, segments=None, point=None, window=DEFAULT_WINDOW,
                 threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384, scale=None,
                 signed: bool = False) -> list[SlicePanel]:
    """Axial, coronal and sagittal panels through ``point`` (LPS mm; default: the map's peak).

    The map's peak is marked by a cyan cross on each panel whose plane goes through the peak's
    voxel (panels through another point, e.g. the lesion's centre, show no cross: the peak is not
    on them). ``scale``: divide ReLU(map) by this instead of its own maximum (shared colour scale).
    ``signed``: the method's map is signed, so negative evidence (against the class) is shown too,
    in blue, on the same scale as the positive heat (|map| / max |map|).

    All panels share one square pixel size, chosen so the CT's largest extent spans ``panel_px``
    pixels. ``window`` is the CT's (lower, upper) HU; heat is drawn where the display map is at
    least ``threshold``; segments are outlined in their colours.
    """
    from skimage.segmentation import find_boundaries

    if overlap_fraction(saliency, ct) == 0:
        raise InputError(f"the saliency map ({saliency.describe_grid()}) does not overlap the CT "
                         f"({ct.describe_grid()}) in physical space; pass the map computed for this CT")
    if not np.isfinite(saliency.array).all():
        raise InputError(f"the saliency map has {int(np.count_nonzero(~np.isfinite(saliency.array)))} NaN or "
                         "infinite voxels; a map with holes cannot be shown honestly: recompute it")
    shown = display_map(saliency, scale, signed)
    colors = segment_colors(segments)
    peak = peak_point(saliency)
    if point is None:
        point = peak
    if point is None:  # no positive saliency anywhere: show the centre of the CT
        point = ct.index_to_physical((np.asarray(ct.size_xyz) - 1) / 2)
    point = np.asarray(point, dtype=float)
    lo_hu, hi_hu = (float(w) for w in window)
    bounds = _bounds_lps(ct)
    inside_ct = ct.physical_to_index(point)
    if not np.isfinite(point).all() or np.any(inside_ct < -0.5) or np.any(inside_ct > np.asarray(ct.size_xyz) - 0.5):
        raise InputError(f"the point LPS ({', '.join(f'{v:.1f}' for v in point)}) mm lies outside the CT "
                         f"(x {bounds[0, 0]:.1f}..{bounds[1, 0]:.1f}, y {bounds[0, 1]:.1f}..{bounds[1, 1]:.1f}, "
                         f"z {bounds[0, 2]:.1f}..{bounds[1, 2]:.1f} mm): its slices would be blank")
    pixel_mm = float((bounds[1] - bounds[0]).max()) / panel_px
    panels = []
    for name, col_axis, row_axis, normal_axis, letters in _PANELS:
        w = max(1, int(np.ceil((bounds[1, col_axis] - bounds[0, col_axis]) / pixel_mm)))
        h = max(1, int(np.ceil((bounds[1, row_axis] - bounds[0, row_axis]) / pixel_mm)))
        col_start = bounds[0, col_axis] + pixel_mm / 2
        row_start = (bounds[1, row_axis] - pixel_mm / 2) if row_axis == 2 else (bounds[0, row_axis] + pixel_mm / 2)
        panel = SlicePanel(name, np.zeros((h, w, 3)), point, col_axis, row_axis, normal_axis,
                           (col_start, row_start), pixel_mm, letters)
        pts = panel.points()

        # CT greys in the window; outside the CT's field of view a dark blue-grey, not a CT grey.
        hu = _sample(ct, pts, order=1, cval=np.nan)
        inside = np.isfinite(hu)
        grey = np.clip((np.nan_to_num(hu) - lo_hu) / (hi_hu - lo_hu), 0, 1)
        rgb = np.where(inside[..., None], grey[..., None].repeat(3, axis=-1), BACKGROUND)

        # Heat overlay: transparent below the threshold.
        value = _sample(shown, pts, order=1, cval=0.0)
        for sign, palette in ((1.0, lambda t: heat_colors(t)[:, :3]), (-1.0, cool_colors)):
            hot = sign * value >= threshold
            if threshold > 0 and hot.any():
                t = (sign * value[hot] - threshold) / max(1.0 - threshold, 1e-6)
                alpha = (HEAT_ALPHA[0] + t * (HEAT_ALPHA[1] - HEAT_ALPHA[0]))[:, None]
                rgb[hot] = (1 - alpha) * rgb[hot] + alpha * palette(t)

        # Organ outlines (2-pixel lines at display resolution, in the segment's colour).
        for group in segment_groups(segments):
            flat, within = _nearest_voxels(group.grid, pts)
            for segment in group:
                mask = (segment.mask.ravel()[flat] & within).reshape(h, w)
                if mask.any():
                    rgb[find_boundaries(mask, mode="inner", background=0)] = np.asarray(colors[segment.name][:3])
        if peak is not None and peak_in_plane(saliency, peak, point, normal_axis):
            row, col = (int(round(v)) for v in panel.project(peak))
            for dr, dc in [(d, 0) for d in range(-PEAK_CROSS_PX, PEAK_CROSS_PX + 1)] + \
                          [(0, d) for d in range(-PEAK_CROSS_PX, PEAK_CROSS_PX + 1)]:
                if 0 <= row + dr < h and 0 <= col + dc < w:
                    rgb[row + dr, col + dc] = PEAK_CROSS_COLOR
        panel.rgb = rgb
        panels.append(panel)
    return panels
