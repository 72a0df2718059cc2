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
COOL_LOW, COOL_HIGH = (0.10, 0.20, 0.75), (0.45, 0.65, 1.0)  # negative evidence (signed maps): blue
BODY_COLOR = (0.62, 0.62, 0.72)  # the body outline: one neutral grey-lavender in every picture
# Outline colours: greens and purples only, outside the heat scale (red-orange-yellow), the negative
# scale (blue) and the peak cross (cyan), so an outline never reads as saliency.
LESION_COLOR = (1.00, 0.35, 0.95)  # every lesion (the truth a reader looks for): magenta, kept out of the palette
OUTLINE_PALETTE = ((0.20, 0.85, 0.30), (0.55, 0.25, 0.95), (0.65, 1.00, 0.40),
                   (0.05, 0.75, 0.50), (0.60, 0.45, 1.00), (0.60, 1.00, 0.80), (0.90, 0.70, 1.00),
                   (0.45, 0.80, 0.15), (1.00, 0.70, 1.00), (0.30, 1.00, 0.55), (0.75, 0.25, 0.75),
                   (0.80, 1.00, 0.60), (0.55, 0.75, 0.45))
_ALLOWED_HUES = ((80.0, 165.0), (255.0, 325.0))  # degrees: greens; purples and magentas
# Patient directions in LPS: the orientation letters and where they point.
LETTER_DIRECTIONS = {"R": (-1, 0, 0), "L": (1, 0, 0), "A": (0, -1, 0), "P": (0, 1, 0),
                     "S": (0, 0, 1), "I": (0, 0, -1)}


def display_map(saliency: Volume, scale: float | None = None, signed: bool = False) -> Volume:
    """The display map: ReLU(raw) divided by its maximum, or by ``scale`` when given (a colour scale
    shared by several maps), clipped to [0, 1] (float32; all zero if the divisor is <= 0).

    ``signed`` (a method whose map's sign means for/against the class): values in [-1, 1], the
    raw map divided by its largest |value| (or ``scale``), so evidence for and against share one scale.
    """
    raw = np.nan_to_num(np.asarray(saliency.array, dtype=np.float32))
    shown = raw if signed else np.maximum(raw, 0)
    peak = float(np.abs(shown).max()) if shown.size else 0.0
    if scale is not None:
        peak = float(scale)
    if peak <= 0:
        return saliency.with_array(np.zeros_like(shown))
    return saliency.with_array(np.clip(shown / peak, -1.0, 1.0))


def peak_point(saliency: Volume) -> np.ndarray | None:
    """LPS point (mm) of the voxel with the largest value of the map, or None when no value is > 0."""
    arr = np.nan_to_num(np.asarray(saliency.array, dtype=np.float32))
    flat = int(np.argmax(arr))
    if arr.flat[flat] <= 0:
        return None
    k, j, i = np.unravel_index(flat, arr.shape)
    return saliency.index_to_physical([i, j, k])


def cool_colors(t):
    """RGB of the negative-evidence scale at ``t`` in [0, 1]: dark blue at the threshold to light
    blue at the largest |value| (a hue outside the heat scale and the outline colours)."""
    t = np.asarray(t, dtype=float)[..., None]
    return (1 - t) * np.array(COOL_LOW) + t * np.array(COOL_HIGH)


def heat_colors(t):
    """RGBA of the heat scale at ``t`` in [0, 1] (scalar or array): the HEAT_RANGE part of
    matplotlib's "hot" map, dark red at the threshold to yellow at the peak."""
    from matplotlib import colormaps

    return colormaps["hot"](HEAT_RANGE[0] + t * (HEAT_RANGE[1] - HEAT_RANGE[0]))


def outline_color_allowed(rgb) -> bool:
    """True when an outline colour cannot be mistaken for heat, negative evidence or the peak cross:
    a green or purple hue (see :data:`OUTLINE_PALETTE`), saturated enough to read as a colour."""
    import colorsys

    hue, _light, saturation = colorsys.rgb_to_hls(*(float(c) for c in rgb[:3]))
    return saturation >= 0.3 and any(lo <= hue * 360.0 <= hi for lo, hi in _ALLOWED_HUES)


def segment_colors(segments) -> dict:
    """name -> outline colour of every segment in the pictures: ``body`` always :data:`BODY_COLOR`,
    a ``lesion…`` always :data:`LESION_COLOR`; another segment keeps its own colour (from the file) when :func:`outline_color_allowed` and
    distinct from those before it, else gets the next free colour of :data:`OUTLINE_PALETTE`. The
    order is the segments' order, so the organs of a case have the same colours in every picture."""
    names = [s.name for group in segment_groups(segments) for s in group]
    given = {s.name: s.color for group in segment_groups(segments) for s in group}
    chosen: dict = {}

    def far(rgb):  # from the organs chosen so far and the two fixed colours (whatever the order)
        taken = [c for n, c in chosen.items() if n.lower() != "body" and not n.lower().startswith("lesion")]
        return all(np.linalg.norm(np.subtract(rgb, c)) >= 0.35 for c in taken + [BODY_COLOR, LESION_COLOR])

    for name in names:
        if name.lower() == "body" or name.lower().startswith("lesion"):
            # fixed colours, so adding lesions to a picture never changes the organs' colours
            chosen[name] = BODY_COLOR if name.lower() == "body" else LESION_COLOR
            continue
        rgb = tuple(float(c) for c in given[name][:3])
        if not (outline_color_allowed(rgb) and far(rgb)):
            spare = [c for c in OUTLINE_PALETTE if far(c)]
            rgb = spare[0] if spare else max(  # palette used up: the colour farthest from those chosen
                OUTLINE_PALETTE, key=lambda c: min(np.linalg.norm(np.subtract(c, o))
                                                   for o in [*chosen.values(), BODY_COLOR, LESION_COLOR]))
        chosen[name] = tuple(rgb)
    return {n: chosen[n] for n in names}


def segment_groups(segments):
    """``segments`` may be None, one Segments, or a list of them (e.g. organs and lesions)."""
    if segments is None:
        return []
    if isinstance(segments, (list, tuple)):
        return [s for s in segments if s is not None]
    return [segments]
