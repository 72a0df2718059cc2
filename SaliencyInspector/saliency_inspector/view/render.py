"""Pictures of a saliency map over its CT: three orthogonal slices through the map's peak and a 3D view.

The slice panels are sampled in physical (LPS) space on axis-aligned planes through the peak, with
square pixels of one size for all panels, so that anisotropic spacing (e.g. 0.8×0.8×2.5 mm) and
oblique CT directions are shown with their true proportions — no naive array slicing. Orientation
follows the radiological convention Slicer uses: axial with patient right on image left and
anterior up; coronal with patient right on the left and superior up; sagittal with anterior on
the left and superior up.

Display map = ReLU(raw map) / max, shown as heat colours that are transparent below a threshold,
over the CT in a window, with organ outlines in the segments' own colours. The 3D panel is a VTK
offscreen rendering (EGL, software on machines without a GPU): the display map as a CPU ray-cast
volume plus translucent organ surfaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, overlap_fraction

# Axes of LPS space: 0 = x (towards patient Left), 1 = y (Posterior), 2 = z (Superior).
# Each panel: (name, column axis, row axis, axis normal to the plane, letters at left/right/top/bottom).
# Image columns and rows both run along increasing LPS coordinates except the superior axis, which
# runs upwards (row 0 = most superior).
_PANELS = (
    ("axial", 0, 1, 2, ("R", "L", "A", "P")),
    ("coronal", 0, 2, 1, ("R", "L", "S", "I")),
    ("sagittal", 1, 2, 0, ("A", "P", "S", "I")),
)

DEFAULT_WINDOW = (-160.0, 240.0)  # soft tissue: level 40 HU, width 400 HU
DEFAULT_THRESHOLD = 0.2  # heat is transparent below this fraction of the map's maximum
HEAT_RANGE = (0.3, 0.85)  # part of matplotlib's "hot" map used: dark red -> orange -> yellow
HEAT_ALPHA = (0.45, 0.8)  # overlay opacity at the threshold and at the peak
BACKGROUND = np.array([0.05, 0.05, 0.08])  # outside the CT's field of view (not a CT grey)


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


@dataclass
class Overlay:
    """A composed picture: ``image`` (H, W, 3 uint8) and where each panel sits in it."""

    image: np.ndarray
    panels: dict  # name -> SlicePanel
    offsets: dict  # name -> (row0, col0) of the panel's top-left pixel in ``image``
    peak_lps: np.ndarray
    notes: list
    legend_lines: int = 1
    axes3d: dict = None  # letter -> (drow, dcol) screen direction of R, A, S in the 3D view

    def project(self, panel: str, lps) -> tuple:
        """(row, col) in ``image`` (and in the written PNG) of an LPS point on panel ``panel``."""
        row, col = self.panels[panel].project(lps)
        r0, c0 = self.offsets[panel]
        return row + r0, col + c0


# ---- maps ---------------------------------------------------------------------------------------
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


def segment_colors(segments) -> dict:
    """name -> display colour of every segment: the file's colour when distinct, else Slicer's
    terminology colour or a qualitative palette (:func:`~saliency_inspector.io.segments.distinct_colors`)."""
    from ..io.segments import distinct_colors

    given = {s.name: s.color for group in _segment_groups(segments) for s in group}
    return distinct_colors(list(given), given)


PEAK_CROSS_COLOR = (0.0, 1.0, 1.0)  # cyan: not in the heat scale, nor among the outline colours' tans
PEAK_CROSS_PX = 7  # half-length of the cross's arms


def _segment_groups(segments):
    """``segments`` may be None, one Segments, or a list of them (e.g. organs and lesions)."""
    if segments is None:
        return []
    if isinstance(segments, (list, tuple)):
        return [s for s in segments if s is not None]
    return [segments]


# ---- 2D panels ----------------------------------------------------------------------------------
def slice_panels(ct: Volume, saliency: Volume, segments=None, point=None, window=DEFAULT_WINDOW,
                 threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384, scale=None) -> list[SlicePanel]:
    """Axial, coronal and sagittal panels through ``point`` (LPS mm; default: the map's peak).

    The map's peak is marked by a cyan cross where it projects onto each panel (also when the
    panels go through another point, e.g. the lesion's centre shared by every method of a class).
    ``scale``: divide ReLU(map) by this instead of its own maximum (shared colour scale).

    All panels share one square pixel size, chosen so the CT's largest extent spans ``panel_px``
    pixels. ``window`` is the CT's (lower, upper) HU; heat is drawn where the display map is at
    least ``threshold``; segments are outlined in their colours.
    """
    from matplotlib import colormaps
    from skimage.segmentation import find_boundaries

    if overlap_fraction(saliency, ct) == 0:
        raise InputError(f"the saliency map ({saliency.describe_grid()}) does not overlap the CT "
                         f"({ct.describe_grid()}) in physical space; pass the map computed for this CT")
    shown = display_map(saliency, scale)
    colors = segment_colors(segments)
    peak = peak_point(saliency)
    if point is None:
        point = peak
    if point is None:  # no positive saliency anywhere: show the centre of the CT
        point = ct.index_to_physical((np.asarray(ct.size_xyz) - 1) / 2)
    point = np.asarray(point, dtype=float)
    lo_hu, hi_hu = (float(w) for w in window)
    heat = colormaps["hot"]
    bounds = _bounds_lps(ct)
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
        hot = value >= threshold
        if threshold > 0 and hot.any():
            t = (value[hot] - threshold) / max(1.0 - threshold, 1e-6)
            colour = heat(HEAT_RANGE[0] + t * (HEAT_RANGE[1] - HEAT_RANGE[0]))[:, :3]
            alpha = (HEAT_ALPHA[0] + t * (HEAT_ALPHA[1] - HEAT_ALPHA[0]))[:, None]
            rgb[hot] = (1 - alpha) * rgb[hot] + alpha * colour

        # Organ outlines (2-pixel lines at display resolution, in the segment's colour).
        for group in _segment_groups(segments):
            flat, within = _nearest_voxels(group.grid, pts)
            for segment in group:
                mask = (segment.mask.ravel()[flat] & within).reshape(h, w)
                if mask.any():
                    rgb[find_boundaries(mask, mode="inner", background=0)] = np.asarray(colors[segment.name][:3])
        if peak is not None:
            row, col = (int(round(v)) for v in panel.project(peak))
            for dr, dc in [(d, 0) for d in range(-PEAK_CROSS_PX, PEAK_CROSS_PX + 1)] + \
                          [(0, d) for d in range(-PEAK_CROSS_PX, PEAK_CROSS_PX + 1)]:
                if 0 <= row + dr < h and 0 <= col + dc < w:
                    rgb[row + dr, col + dc] = PEAK_CROSS_COLOR
        panel.rgb = rgb
        panels.append(panel)
    return panels


# ---- 3D view ------------------------------------------------------------------------------------
def _vtk_image(array: np.ndarray, factor: int):
    """vtkImageData in index units of the full-resolution grid for an array block-reduced by ``factor``."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.SetSpacing(factor, factor, factor)
    # block b covers full-resolution indices b*f .. b*f+f-1; its centre is b*f + (f-1)/2
    image.SetOrigin(*([(factor - 1) / 2.0] * 3))
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    return image


def _vtk_matrix(m: np.ndarray):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    out = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


# Surfaces already extracted, by id(mask): the demo renders many maps over the same organs.
# Each entry keeps a weak reference to its mask, so a new array that reuses a freed id is not confused.
_SURFACES: dict = {}


def _surface(mask: np.ndarray, factor: int):
    """Smooth closed surface (vtkPolyData with normals, in index units) of a mask block-reduced by ``factor``."""
    import weakref

    from scipy.ndimage import gaussian_filter
    from skimage.measure import block_reduce
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D, vtkPolyDataNormals

    key = (id(mask), factor)
    cached = _SURFACES.get(key)
    if cached is not None and cached[0]() is mask:
        return cached[1]
    small = block_reduce(mask.astype(np.float32), (factor,) * 3, np.mean)
    # pad: closed surfaces at the volume's edge; blur: no voxel staircase on the surface
    small = gaussian_filter(np.pad(small, 1), sigma=0.8)
    image = _vtk_image(small, factor)
    image.SetOrigin(*([(factor - 1) / 2.0 - factor] * 3))  # the pad shifts the first block by one
    surface = vtkFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, 0.5)
    normals = vtkPolyDataNormals()
    normals.SetInputConnection(surface.GetOutputPort())
    normals.Update()
    polydata = normals.GetOutput()
    for stale in [k for k, (ref, _) in _SURFACES.items() if ref() is None]:
        del _SURFACES[stale]
    _SURFACES[key] = (weakref.ref(mask), polydata)
    return polydata


def render_3d(saliency: Volume, segments=None, size=(384, 384), max_dim: int = 96,
              threshold: float = DEFAULT_THRESHOLD, skip=("body",), scale=None, axes_out=None) -> np.ndarray:
    """3D view (H, W, 3 uint8): the display map ray-cast as a heat cloud with translucent organ surfaces.

    Seen from the front (anterior), slightly rotated, superior up, patient right on the left.
    Volumes are block-reduced so that no axis exceeds ``max_dim`` (maximum for the map so the peak
    survives, mean for masks so surfaces stay smooth) to keep software rendering quick. Segments
    named in ``skip`` (the body outline would hide everything else) are left out.
    """
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from skimage.measure import block_reduce
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import (vtkActor, vtkColorTransferFunction, vtkPolyDataMapper,
                                             vtkRenderer, vtkRenderWindow, vtkVolume, vtkVolumeProperty,
                                             vtkWindowToImageFilter)
    from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
    from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
    import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401

    renderer = vtkRenderer()
    renderer.SetBackground(*BACKGROUND)
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)  # MSAA + translucency renders garbage on Mesa llvmpipe
    window.SetSize(int(size[1]), int(size[0]))
    window.AddRenderer(renderer)
    renderer.SetUseDepthPeeling(1)
    window.SetAlphaBitPlanes(1)

    colors = segment_colors(segments)
    # Organ surfaces, in the segments' grid index space, placed by their IJK->LPS matrix.
    for group in _segment_groups(segments):
        factor = max(1, int(np.ceil(max(group.grid.shape) / max_dim)))
        for segment in group:
            if segment.name in skip or not segment.mask.any():
                continue
            mapper = vtkPolyDataMapper()
            mapper.SetInputData(_surface(segment.mask, factor))
            mapper.ScalarVisibilityOff()
            actor = vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*colors[segment.name][:3])
            actor.GetProperty().SetOpacity(0.25)
            actor.SetUserMatrix(_vtk_matrix(group.grid.ijk_to_lps()))
            renderer.AddActor(actor)

    # The display map as a volume (uint8 0..255 for the fixed-point ray caster).
    shown = display_map(saliency, scale).array
    factor = max(1, int(np.ceil(max(shown.shape) / max_dim)))
    small = block_reduce(shown, (factor,) * 3, np.max)
    if small.max() > 0:
        volume_image = _vtk_image(np.round(small * 255).astype(np.uint8), factor)
        colours = vtkColorTransferFunction()
        opacity = vtkPiecewiseFunction()
        from matplotlib import colormaps
        heat = colormaps["hot"]
        lo = 255 * threshold
        opacity.AddPoint(0, 0.0)
        opacity.AddPoint(max(lo - 1, 0), 0.0)
        opacity.AddPoint(lo, 0.02)
        opacity.AddPoint(255, 0.8)
        for t in np.linspace(0, 1, 5):
            r, g, b, _ = heat(HEAT_RANGE[0] + t * (HEAT_RANGE[1] - HEAT_RANGE[0]))
            colours.AddRGBPoint(lo + t * (255 - lo), r, g, b)
        prop = vtkVolumeProperty()
        prop.SetColor(colours)
        prop.SetScalarOpacity(opacity)
        prop.SetInterpolationTypeToLinear()
        prop.ShadeOff()
        # Opacity per 1/16 of the volume's extent, not per voxel: a broad map stays see-through
        # (organs visible behind it) while a compact peak still reads as a solid blob.
        prop.SetScalarOpacityUnitDistance(max(shown.shape) / 16.0)
        mapper = vtkFixedPointVolumeRayCastMapper()
        mapper.SetInputData(volume_image)
        volume = vtkVolume()
        volume.SetMapper(mapper)
        volume.SetProperty(prop)
        volume.SetUserMatrix(_vtk_matrix(saliency.ijk_to_lps()))
        renderer.AddVolume(volume)

    # Camera in front of the patient (anterior = -y in LPS) looking posterior, superior up: the
    # patient's right (-x) is then on the image's left, as in the slice panels.
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(0, 0, 0)
    camera.SetPosition(0, -1, 0)
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Azimuth(-25)
    camera.Elevation(15)
    camera.OrthogonalizeViewUp()
    renderer.ResetCamera()
    camera.Zoom(1.3)
    renderer.ResetCameraClippingRange()
    window.Render()
    if axes_out is not None:  # where R, A and S point on screen, for the orientation marker
        axes_out.update(_screen_axes(renderer, int(size[0])))

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    out = grab.GetOutput()
    w, h, _ = out.GetDimensions()
    pixels = vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, 3)[::-1].copy()
    window.Finalize()
    return pixels


# Patient directions in LPS: the orientation letters and where they point.
LETTER_DIRECTIONS = {"R": (-1, 0, 0), "L": (1, 0, 0), "A": (0, -1, 0), "P": (0, 1, 0),
                     "S": (0, 0, 1), "I": (0, 0, -1)}


def _screen_axes(renderer, height: int) -> dict:
    """letter -> unit (drow, dcol) on screen of the patient directions R, A, S in a rendered view."""
    camera = renderer.GetActiveCamera()
    focal = np.asarray(camera.GetFocalPoint())
    reach = camera.GetDistance() * 0.05

    def to_screen(point):
        renderer.SetWorldPoint(*point, 1.0)
        renderer.WorldToDisplay()
        x, y, _ = renderer.GetDisplayPoint()
        return np.array([height - 1 - y, x])  # display y runs up, image rows run down

    origin = to_screen(focal)
    out = {}
    for letter in ("R", "A", "S"):
        step = to_screen(focal + reach * np.asarray(LETTER_DIRECTIONS[letter], float)) - origin
        out[letter] = tuple(step / (np.linalg.norm(step) or 1.0))
    return out


# ---- composition --------------------------------------------------------------------------------
HEADER_PX = 66  # title, subtitle, colour bar: three lines
FOOTER_PX = 24  # per legend line
_LEGEND_CHAR_PX = 8.0  # approximate width of one character of the 10 pt legend at 100 dpi


def _legend_layout(segments, width: int) -> list:
    """(x, line, segment) for every segment name in the legend, wrapped to the picture's width."""
    out, x, line = [], 6.0, 0
    for group in _segment_groups(segments):
        for segment in group:
            label_px = _LEGEND_CHAR_PX * (len(segment.name) + 2) + 12
            if x + label_px > width and x > 6.0:
                x, line = 6.0, line + 1
            out.append((x, line, segment))
            x += label_px
    return out


def compose_overlay(ct: Volume, saliency: Volume, segments=None, point=None, window=DEFAULT_WINDOW,
                    threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384,
                    with_3d: bool = True, scale=None) -> Overlay:
    """The picture as an array: a 2×2 grid (axial | coronal / sagittal | 3D) below a header strip.

    Text (title, orientation letters, legend) is added when the PNG is written, so pixels away from
    text are exactly these.
    """
    notes = []
    if peak_point(saliency) is None:
        notes.append("the map has no positive values (nothing to show); slices through the CT's centre")
    panels = {p.name: p for p in slice_panels(ct, saliency, segments, point, window, threshold, panel_px, scale)}
    axes3d = {}
    cell_h = max(p.rgb.shape[0] for p in panels.values())
    cell_w = max(p.rgb.shape[1] for p in panels.values())
    gap = 4
    width = 2 * cell_w + gap
    legend = _legend_layout(segments, width)
    legend_lines = (legend[-1][1] + 1) if legend else 1
    height = HEADER_PX + 2 * cell_h + gap + FOOTER_PX * legend_lines
    image = np.zeros((height, width, 3))
    image[:] = 0.0
    cells = {"axial": (0, 0), "coronal": (0, 1), "sagittal": (1, 0), "3d": (1, 1)}
    offsets = {}
    for name, (r, c) in cells.items():
        top = HEADER_PX + r * (cell_h + gap)
        left = c * (cell_w + gap)
        if name == "3d":
            if with_3d:
                image[top:top + cell_h, left:left + cell_w] = render_3d(
                    saliency, segments, size=(cell_h, cell_w), threshold=threshold, scale=scale,
                    axes_out=axes3d) / 255.0
            offsets[name] = (top, left)
            continue
        panel = panels[name]
        h, w = panel.rgb.shape[:2]
        r0, c0 = top + (cell_h - h) // 2, left + (cell_w - w) // 2
        image[r0:r0 + h, c0:c0 + w] = panel.rgb
        offsets[name] = (r0, c0)
    # colour bar of the heat scale in the header's right part
    bar_w = min(160, width // 4)
    t = np.linspace(0, 1, bar_w)
    from matplotlib import colormaps
    bar = colormaps["hot"](HEAT_RANGE[0] + t * (HEAT_RANGE[1] - HEAT_RANGE[0]))[:, :3]
    image[50:62, width - bar_w - 40:width - 40] = bar[None]
    used = peak_point(saliency)
    return Overlay((np.clip(image, 0, 1) * 255).round().astype(np.uint8), panels, offsets,
                   used if used is not None else np.asarray(panels["axial"].point), notes, legend_lines, axes3d)


def render_overlay(ct: Volume, saliency: Volume, segments, out_png, title=None, *, point=None,
                   window=DEFAULT_WINDOW, threshold: float = DEFAULT_THRESHOLD, panel_px: int = 384,
                   with_3d: bool = True, scale=None, point_label=None) -> Path:
    """Write a PNG: axial/coronal/sagittal slices through ``point`` (default: the map's peak) and a 3D view.

    ``ct`` and ``saliency`` are Volumes (any grids that overlap in physical space; oblique ones
    too); ``segments`` is None, a Segments or a list of them (outlined in 2D, surfaces in 3D).
    The heat shows ReLU(map)/max (or /``scale``, a scale shared by several maps), transparent below
    ``threshold``; a cyan cross marks the map's peak. ``point_label`` says in the subtitle what
    ``point`` is (e.g. "the lesion's centre"). Returns the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise InputError(f"{out_png}: pictures are written as PNG; give a file name ending in .png")
    overlay = compose_overlay(ct, saliency, segments, point, window, threshold, panel_px, with_3d, scale)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    height, width = overlay.image.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(overlay.image, interpolation="nearest", aspect="equal")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    text = dict(color="white", fontsize=11, family="DejaVu Sans")
    at = overlay.panels["axial"].point
    where = point_label or ("the map's peak" if np.allclose(at, overlay.peak_lps) else "the given point")
    head = title or "saliency overlay"
    ax.text(6, 12, head, fontsize=12, weight="bold", color="white", va="center")
    scale_text = f"ReLU(map)/{scale:.3g}" if scale is not None else "ReLU(map)/max"
    sub = f"slices through LPS ({at[0]:.1f}, {at[1]:.1f}, {at[2]:.1f}) mm ({where}) · cyan + = the map's peak"
    if overlay.notes:
        sub = overlay.notes[0]
    ax.text(6, 33, sub, va="center", **{**text, "fontsize": 9.5})
    bar_w = min(160, width // 4)
    ax.text(6, 56, f"heat: {scale_text} (transparent below {threshold:g})", va="center", **{**text, "fontsize": 9.5})
    ax.text(width - bar_w - 44, 56, f"{threshold:g}", ha="right", va="center", **text)
    ax.text(width - 36, 56, "1", ha="left", va="center", **text)
    for name, panel in overlay.panels.items():
        r0, c0 = overlay.offsets[name]
        h, w = panel.rgb.shape[:2]
        left, right, top, bottom = panel.letters
        letter = dict(text, fontsize=13, weight="bold")
        ax.text(c0 + w - 4, r0 + 12, name, va="center", ha="right", **text)
        ax.text(c0 + 4, r0 + h / 2, left, va="center", **letter)
        ax.text(c0 + w - 4, r0 + h / 2, right, va="center", ha="right", **letter)
        ax.text(c0 + w / 2, r0 + 12, top, ha="center", va="center", **letter)
        ax.text(c0 + w / 2, r0 + h - 12, bottom, ha="center", va="center", **letter)
    if with_3d:
        r0, c0 = overlay.offsets["3d"]
        cell_h = max(p.rgb.shape[0] for p in overlay.panels.values())
        ax.text(c0 + 4, r0 + 12, "3D (from the front)", va="center", **text)
        # orientation marker: arrows towards the patient's Right, Anterior and Superior
        base = np.array([r0 + cell_h - 34.0, c0 + 34.0])
        for letter_name, (dr, dc) in (overlay.axes3d or {}).items():
            tip = base + 22 * np.array([dr, dc])
            ax.annotate("", xy=(tip[1], tip[0]), xytext=(base[1], base[0]),
                        arrowprops=dict(arrowstyle="->", color="white", lw=1.5))
            ax.text(tip[1] + 8 * dc, tip[0] + 8 * dr, letter_name, ha="center", va="center",
                    **dict(text, fontsize=11, weight="bold"))
    # legend: segment names in their colours, wrapped onto as many lines as compose_overlay made room for
    colors = segment_colors(segments)
    for x, line, segment in _legend_layout(segments, width):
        ax.text(x, height - FOOTER_PX * (overlay.legend_lines - line) + FOOTER_PX / 2,
                f"■ {segment.name}", color=colors[segment.name][:3], fontsize=10, va="center")
    fig.savefig(out_png, dpi=dpi, facecolor="black")
    plt.close(fig)
    return out_png
