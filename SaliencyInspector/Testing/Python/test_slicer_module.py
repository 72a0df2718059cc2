"""The Slicer module's Logic on real MRML (slicer-core), with stand-ins only for the application.

``SaliencyInspector.py`` is imported as Slicer imports it, after ``slicer_standins.install``; the
README's console example is run verbatim and its nodes and rendered views are checked; the
dependency installer is driven through each Slicer version's path (pip calls recorded, the torch
requirement computed by a real ``pip --dry-run`` on local wheels); bad input gives one message and
leaves the scene as it was.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("trame_slicer", reason="trame-slicer is not installed")

import offscreen_views as ov  # noqa: E402
import slicer_standins  # noqa: E402

from saliency_inspector import mrml  # noqa: E402
from saliency_inspector.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
PHANTOM_SIZE = (96, 96, 40)  # small phantom for the tests that are not the README's own lines


def readme_console_example() -> str:
    """The python block under the README's "From Slicer's Python console" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### From Slicer's Python console", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def module_env(monkeypatch, tmp_path):
    """(module, recorder, app) on a fresh real scene, no main window."""
    app = ov.make_app()
    recorder = slicer_standins.install(monkeypatch, app, tmp_path / "slicer-tmp")
    module = importlib.import_module("SaliencyInspector")
    monkeypatch.setattr(module.SaliencyInspectorLogic, "_dependenciesReady", False)
    yield module, recorder, app
    for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
        sys.modules.pop(name, None)


def node_count(scene):
    return scene.GetNumberOfNodes()


def ijk_to_ras(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


# ---- the README, verbatim -----------------------------------------------------------------------
def test_readme_console_example_on_real_mrml_ends_in_the_compare_layout(monkeypatch, tmp_path):
    ok, reason = _egl()
    if not ok:
        pytest.skip(reason)
    app = ov.make_app()
    (red, yellow), threed = ov.make_views(app, size=(256, 256), slice_tags=("Red", "Yellow"))
    layout = slicer_standins.LayoutManager(app.scene)
    slicer_standins.install(monkeypatch, app, tmp_path / "slicer-tmp", layout_manager=layout)
    module = importlib.import_module("SaliencyInspector")
    try:
        logics = {"SaliencyInspector": module.SaliencyInspectorLogic()}
        # in Slicer: the module widget's logic, found through the module manager
        monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: logics[name])
        namespace = {"slicer": slicer}
        exec(compile(readme_console_example(), "README.md", "exec"), namespace)
    finally:
        for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
            sys.modules.pop(name, None)
    ct, organs, nodes, predictions = (namespace[k] for k in ("ct", "organs", "nodes", "predictions"))
    table, chart = namespace["table"], namespace["roc_chart"]
    scene = app.scene

    # the nodes: maps of both methods for every class, each on the CT's own grid, one run id
    classes = mrml.table_columns(predictions)["class"]
    assert set(nodes) == {(m, c) for m in ("hirescam", "gradcam") for c in classes}
    runs = {node.GetAttribute("SaliencyInspector.Run") for node in nodes.values()}
    assert len(runs) == 1 and re.fullmatch(r"[0-9a-f]{32}", runs.pop())
    for node in nodes.values():
        assert node.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
        np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(ct), atol=1e-9)
    segment_names = [organs.GetSegmentation().GetNthSegment(i).GetName()
                     for i in range(organs.GetSegmentation().GetNumberOfSegments())]
    organ_names = [n for n in segment_names if n.lower() != "body"]  # the body is the region scored in
    assert mrml.table_columns(table)["segment"] == organ_names
    assert [chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())] == organ_names
    assert not chart.GetXAxisRangeAuto() and tuple(chart.GetXAxisRange()) == (0.0, 1.0)

    # the compare layout, HiResCAM in Red and Grad-CAM in Yellow over the CT
    hires, grad = nodes[("hirescam", "liver")], nodes[("gradcam", "liver")]
    assert layout.layoutLogic().GetLayoutNode().GetViewArrangement() == mrml.COMPARE_LAYOUT_ID
    shown = _composites(scene)
    assert shown["Red"] == (ct.GetID(), hires.GetID()) and shown["Yellow"] == (ct.GetID(), grad.GetID())
    assert app.app_logic.GetSelectionNode().GetActiveTableID() == table.GetID()

    # the rendered views: heat where each view's map is high, none where it is low
    out = Path(os.environ.get("SI_PNG_DIR", tmp_path))
    hires_map = mrml.volume_from_node(hires, what="map")
    peak_ijk = np.unravel_index(np.argmax(hires_map.array), hires_map.shape)[::-1]
    peak_ras = (ijk_to_ras(ct) @ np.array([*peak_ijk, 1.0]))[:3]
    for view, node, name in ((red, hires, "red"), (yellow, grad, "yellow")):
        view.fit_view_to_content()
        ov.jump_to(view, peak_ras)
        view.render()
        rgb = ov.capture(view, out / f"readme_{name}.png").astype(int)
        hot, cold = _overlay_agreement(scene, view, rgb, ct, node, peak_ijk[2])
        assert hot > 0.9 and cold > 0.95, f"{name} view: heat on {hot:.0%} of the map's high voxels, " \
                                          f"none on {cold:.0%} of its low ones"
    ov.frame_3d(threed)
    threed.render()
    rgb_3d = ov.capture(threed, out / "readme_3d.png").astype(int)
    heat = (rgb_3d[..., 0] > rgb_3d[..., 2] + 60) & (rgb_3d[..., 0] > 120)
    assert heat.sum() > 100, "no volume-rendered heat in the 3D view"
    for view in (red, yellow, threed):
        view.finalize()


def _egl():
    try:
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow
    except ImportError as err:
        return False, f"VTK without EGL ({err})"
    window = vtkEGLRenderWindow()
    window.SetOffScreenRendering(1)
    ok = bool(window.SupportsOpenGL())
    window.Finalize()
    return ok, "no EGL offscreen rendering here"


def _composites(scene):
    out = {}
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        c = composites.GetItemAsObject(i)
        out[c.GetLayoutName()] = (c.GetBackgroundVolumeID(), c.GetForegroundVolumeID())
    return out


def _overlay_agreement(scene, view, rgb, ct, node, k):
    """Fractions of the slice's high-map voxels that show heat, and of its low-map voxels that do
    not, comparing the frame with the same view rendered without the overlay."""
    composite = next(scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(i)
                     for i in range(scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetNumberOfItems())
                     if scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(i).GetLayoutName()
                     == view.get_view_node().GetLayoutName())
    opacity = composite.GetForegroundOpacity()
    composite.SetForegroundOpacity(0.0)
    view.render()
    plain = ov.capture(view).astype(int)
    composite.SetForegroundOpacity(opacity)
    view.render()
    changed = np.abs(rgb - plain).sum(axis=2) > 30
    values = mrml.volume_from_node(node, what="map").array[k]
    display = node.GetDisplayNode()
    hi, cut = display.GetWindowLevelMax(), display.GetLowerThreshold()
    m = ijk_to_ras(ct)
    hot, cold = [], []
    h, w = changed.shape
    for j in range(1, values.shape[0] - 1, 2):
        for i in range(1, values.shape[1] - 1, 2):
            v = values[j, i]
            if v < 0.6 * hi and v > 0.5 * cut:
                continue  # colours near the threshold are dark or blended: not judged
            r, c = ov.ras_to_slice_pixel(view, (m @ np.array([i, j, k, 1.0]))[:3])
            if 2 <= r < h - 2 and 2 <= c < w - 2:
                (hot if v >= 0.6 * hi else cold).append(changed[r - 1:r + 2, c - 1:c + 2].any()
                                                        if v >= 0.6 * hi else not changed[r, c])
    assert len(hot) > 5 and len(cold) > 50, (len(hot), len(cold))
    return float(np.mean(hot)), float(np.mean(cold))
