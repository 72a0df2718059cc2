"""The 3-D view: a VTK offscreen rendering (EGL, software on machines without a GPU) of the display
map as a CPU ray-cast heat cloud with translucent organ surfaces, seen from the front."""

from __future__ import annotations

import os

import numpy as np

from ..io.volume import Volume
from .display import BACKGROUND, DEFAULT_THRESHOLD, LETTER_DIRECTIONS, display_map, heat_colors, segment_colors, \
    segment_groups


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
    for group in segment_groups(segments):
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
        lo = 255 * threshold
        opacity.AddPoint(0, 0.0)
        opacity.AddPoint(max(lo - 1, 0), 0.0)
        opacity.AddPoint(lo, 0.02)
        opacity.AddPoint(255, 0.8)
        for t in np.linspace(0, 1, 5):
            r, g, b, _ = heat_colors(t)
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
