"""Offscreen Slicer views on slicer-core (no Qt, no GPU), for tests and the docs screenshot.

Follows the workarounds of /work/shared/examples/slicer_core_offscreen_probe.py: EGL render
window, no scheduled re-rendering (render explicitly, once), no multisampling in 3D (translucent
geometry breaks with MSAA + depth peeling on Mesa llvmpipe).
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402


def make_app():
    """A trame-slicer SlicerApp: real scene, application logic, segmentation/VR/color logics."""
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def make_views(app, size=(400, 400), slice_tags=("Red",)):
    """Offscreen axial slice views (one per tag) and a 3D view, rendered only when asked."""
    from trame_slicer.views import (DirectViewFactory, NoScheduleRendering, ViewLayoutDefinition,
                                    ViewProps, ViewType)

    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    slices = [app.view_manager.create_view(ViewLayoutDefinition(
        singleton_tag=tag, view_type=ViewType.SLICE_VIEW, properties=ViewProps(orientation="Axial")))
        for tag in slice_tags]
    threed = app.view_manager.create_view(ViewLayoutDefinition.threed_view())
    for view in (*slices, threed):
        view.set_scheduled_render(NoScheduleRendering())
        view.update_size(*size)
    threed.render_window().SetMultiSamples(0)
    # CPU ray casting + translucent surfaces + depth peeling leaves garbage in the frame on Mesa
    # llvmpipe (seen in our PNGs); without depth peeling the frame is clean.
    threed.get_view_node().SetUseDepthPeeling(False)
    threed.renderer().SetUseDepthPeeling(0)
    return slices, threed


def capture(view, path=None) -> np.ndarray:
    """The view's current frame as an (H, W, 3) uint8 array, top row first; written as PNG if asked."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.ShouldRerenderOff()
    grab.Update()
    image = grab.GetOutput()
    if path is not None:
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputData(image)
        writer.Write()
    w, h, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, 3)
    return rgb[::-1].copy()  # VTK rows start at the bottom


def ras_to_slice_pixel(slice_view, ras) -> tuple[int, int]:
    """(row, col) of a RAS point in a slice view's captured frame (top row first)."""
    xy_to_ras = slice_view.get_view_node().GetXYToRAS()
    m = np.array([[xy_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    x, y, _, _ = np.linalg.inv(m) @ np.array([*ras, 1.0])
    h = slice_view.render_window().GetSize()[1]
    return int(round(h - 1 - y)), int(round(x))


def jump_to(slice_view, ras) -> None:
    """Move the slice plane through a RAS point (keeps the in-plane view)."""
    slice_view.get_view_node().JumpSliceByOffsetting(*[float(v) for v in ras])


def ras_to_3d_pixel(threed, ras) -> tuple[int, int]:
    """(row, col) of a RAS point in the 3D view's captured frame (top row first)."""
    renderer = threed.renderer()
    renderer.SetWorldPoint(*ras, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    h = threed.render_window().GetSize()[1]
    return int(round(h - 1 - y)), int(round(x))


def frame_3d(threed, elevation=20, azimuth=30, zoom=1.4):
    """Fit the camera to the content and turn it to a 3/4 view."""
    threed.render()  # displayable managers create their props on the first render
    threed.fit_view_to_content()
    camera = threed.renderer().GetActiveCamera()
    camera.Elevation(elevation)
    camera.Azimuth(azimuth)
    camera.OrthogonalizeViewUp()
    camera.Zoom(zoom)
    threed.renderer().ResetCameraClippingRange()
