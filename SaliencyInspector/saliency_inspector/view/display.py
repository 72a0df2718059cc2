"""What a picture shows of a saliency map, shared by the slice panels, the 3D view and the
composed overlay: the display map (ReLU(raw) / max), its peak, the heat colours, the segments'
colours, and the display constants (CT window, threshold, background, peak cross, orientation letters).
"""

from __future__ import annotations

import numpy as np

from ..io.volume import Volume

DEFAULT_WINDOW = (-160.0, 240.0)  # soft tissue: level 40 HU, width 400 HU
DEFAULT_THRESHOLD = 0.2  # heat is transparent below this fraction of the map's maximum
HEAT_RANGE = (0.3, 0.85)  # part of matplotlib's "hot" map used: dark red -> orange -> yellow
HEAT_ALPHA = (0.45, 0.8)  # overlay opacity at the threshold and at the peak
BACKGROUND = np.array([0.05, 0.05, 0.08])  # outside the CT's field of view (not a CT grey)
PEAK_CROSS_COLOR = (0.0, 1.0, 1.0)  # cyan: not in the heat scale, nor among the outline colours' tans
PEAK_CROSS_PX = 7  # half-length of the cross's arms
# Patient directions in LPS: the orientation letters and where they point.
LETTER_DIRECTIONS = {"R": (-1, 0, 0), "L": (1, 0, 0), "A": (0, -1, 0), "P": (0, 1, 0),
                     "S": (0, 0, 1), "I": (0, 0, -1)}


def display_map(saliency: Volume, scale: float | None = None) -> Volume:
    """The display map: ReLU(raw) divided by its maximum, or by ``scale`` when given (a colour scale
    shared by several maps), clipped to [0, 1] (float32; all zero if the divisor is <= 0)."""
    positive = np.maximum(np.nan_to_num(np.asarray(saliency.array, dtype=np.float32)), 0)
    peak = float(positive.max()) if positive.size else 0.0
    if scale is not None:
        peak = float(scale)
        return saliency.with_array(np.minimum(positive / peak, 1.0) if peak > 0 else positive)
    return saliency.with_array(positive / peak if peak > 0 else positive)


def peak_point(saliency: Volume) -> np.ndarray | None:
    """LPS point (mm) of the voxel with the largest value of the map, or None when no value is > 0."""
    arr = np.nan_to_num(np.asarray(saliency.array, dtype=np.float32))
    flat = int(np.argmax(arr))
    if arr.flat[flat] <= 0:
        return None
    k, j, i = np.unravel_index(flat, arr.shape)
    return saliency.index_to_physical([i, j, k])


def heat_colors(t):
    """RGBA of the heat scale at ``t`` in [0, 1] (scalar or array): the HEAT_RANGE part of
    matplotlib's "hot" map, dark red at the threshold to yellow at the peak."""
    from matplotlib import colormaps

    return colormaps["hot"](HEAT_RANGE[0] + t * (HEAT_RANGE[1] - HEAT_RANGE[0]))


def segment_colors(segments) -> dict:
    """name -> display colour of every segment: the file's colour when distinct, else Slicer's
    terminology colour or a qualitative palette (:func:`~saliency_inspector.io.segments.distinct_colors`)."""
    from ..io.segments import distinct_colors

    given = {s.name: s.color for group in segment_groups(segments) for s in group}
    return distinct_colors(list(given), given)


def segment_groups(segments):
    """``segments`` may be None, one Segments, or a list of them (e.g. organs and lesions)."""
    if segments is None:
        return []
    if isinstance(segments, (list, tuple)):
        return [s for s in segments if s is not None]
    return [segments]
