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
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("trame_slicer", reason="trame-slicer is not installed")

import offscreen_views as ov  # noqa: E402
import slicer_standins  # noqa: E402
import slicer_widgets  # noqa: E402

from saliency_inspector import mrml, mrml_charts, mrml_maps  # noqa: E402
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
@pytest.mark.slow
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

    # the nodes: the raw maps of both methods for every class (small, on their own grid), one run
    # id; the CT-grid map made from a node is Explanation.map's, exactly
    explanation, logic = namespace["explanation"], namespace["logic"]
    classes = mrml_charts.table_columns(predictions)["class"]
    assert set(nodes) == {(m, c) for m in ("hirescam", "gradcam") for c in classes}
    runs = {node.GetAttribute("SaliencyInspector.Run") for node in nodes.values()}
    assert len(runs) == 1 and re.fullmatch(r"[0-9a-f]{32}", runs.pop())
    ct_voxels = np.prod(ct.GetImageData().GetDimensions())
    for key, node in nodes.items():
        assert np.prod(node.GetImageData().GetDimensions()) * 50 < ct_voxels
        np.testing.assert_array_equal(mrml.volume_from_node(node, what="map").array, explanation.raw[key].array)
    for key in (("hirescam", "liver"), ("gradcam", classes[-1])):
        np.testing.assert_allclose(logic.mapOnCtGrid(nodes[key], ct).array, explanation.map(*key).array, atol=1e-6)
    segment_names = [organs.GetSegmentation().GetNthSegment(i).GetName()
                     for i in range(organs.GetSegmentation().GetNumberOfSegments())]
    organ_names = [n for n in segment_names if n.lower() != "body"]  # the body is the region scored in
    assert mrml_charts.table_columns(table)["segment"] == organ_names
    assert [chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())] == organ_names
    assert not chart.GetXAxisRangeAuto() and tuple(chart.GetXAxisRange()) == (0.0, 1.0)

    # the compare layout, HiResCAM in Red and Grad-CAM in Yellow over the CT
    # through one shared CT-grid node per view: two CT-sized maps in the scene, not eight
    assert layout.layoutLogic().GetLayoutNode().GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    shown = _composites(scene)
    hires, grad = (scene.GetNodeByID(shown[v][1]) for v in ("Red", "Yellow"))
    assert shown["Red"][0] == shown["Yellow"][0] == ct.GetID()
    assert mrml_maps.source_of(hires) is nodes[("hirescam", "liver")]
    assert mrml_maps.source_of(grad) is nodes[("gradcam", "liver")]
    assert sorted(n.GetName() for n in mrml_maps.slot_nodes(scene)) == sorted((hires.GetName(), grad.GetName()))
    for node in (hires, grad):
        assert node.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
        np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(ct), atol=1e-9)
    assert app.app_logic.GetSelectionNode().GetActiveTableID() == table.GetID()
    # each map's colour legend in its own view; the 3D view shows the HiResCAM map and its legend
    red_id, yellow_id = (scene.GetSingletonNode(v, "vtkMRMLSliceNode").GetID() for v in ("Red", "Yellow"))
    threed_id = threed.get_view_node().GetID()
    def views_of(node):
        return [[legend.IsDisplayableInView(v) for v in (red_id, yellow_id, threed_id)] for legend in _legends_of(scene, node)]

    # the slice legend, then (the volume-rendered map only) the legend on its volume rendering
    assert views_of(hires) == [[True, False, False], [False, False, True]]
    assert views_of(grad) == [[False, True, False]]

    # the rendered views: heat where each view's map is high, none where it is low
    out = Path(os.environ.get("SI_PNG_DIR", tmp_path))
    for view, node, name in ((red, hires, "red"), (yellow, grad, "yellow")):
        # each view at its own map's peak: the two maps need not peak on the same slice
        values = mrml.volume_from_node(node, what="map")
        peak_ijk = np.unravel_index(np.argmax(values.array), values.shape)[::-1]
        peak_ras = (ijk_to_ras(ct) @ np.array([*peak_ijk, 1.0]))[:3]
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


# ---- headless use, display behaviour --------------------------------------------------------------
@pytest.fixture
def explained(module_env):
    """The phantom, explained by the demo model, with no main window (layoutManager() is None)."""
    module, recorder, app = module_env
    logic = module.SaliencyInspectorLogic()
    ct, organs = logic.loadPhantomSample(size=PHANTOM_SIZE)
    nodes, explanation, predictions = logic.explain(ct, model="demo", methods=("hirescam", "gradcam"), device="cpu")
    return module, recorder, app, logic, ct, organs, nodes


def test_headless_process_show_and_compare_never_touch_a_layout(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    assert slicer.app.layoutManager() is None
    result = logic.process(ct, methods=("hirescam", "gradcam"), device="cpu", segmentationNode=organs)
    assert result["message"].startswith(f"{len(result['nodes'])} maps")
    logic.show(ct, result["shown"], organs)
    logic.showComparison(ct, result["shown"], tableNode=result["metrics"], chartNode=result["roc"])
    assert app.scene.GetNodesByClass("vtkMRMLLayoutNode").GetNumberOfItems() == 0
    assert recorder.messages == []


def test_fidelity_adds_a_table_and_a_chart_of_the_curves(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    saliency = nodes[("hirescam", "liver")]
    before = node_count(app.scene)
    table, chart, result = logic.fidelity(ct, saliency, model="demo", device="cpu", steps=4)
    # 4 steps: 8 forwards for the map, 8 for each of the chance line's 20 random maps
    assert result.forwards == 2 * 4 * (1 + 20) and result.curves.F == pytest.approx(result.curves.auc_lif - result.curves.auc_mif)
    assert result.importance == "relu"  # HiResCAM's declared importance, from the node's method
    columns = mrml_charts.table_columns(table)
    assert list(columns["measure"][:2]) == ["F", "random_F"]
    measures = dict(zip(columns["measure"], columns["value"]))
    assert measures["ranked_by"] == "ReLU(map) (relu)" and measures["random_maps"] == "20"
    assert measures["F_verdict"] in ("above chance", "within chance", "below chance")
    assert float(columns["value"][0]) == pytest.approx(result.curves.F, abs=1e-4)
    assert chart.GetNumberOfPlotSeriesNodes() == 4 and node_count(app.scene) > before
    with pytest.raises(InputError, match="not one of the model's classes"):
        logic.fidelity(ct, saliency, className="spleen", device="cpu")


def test_evaluate_ranks_a_node_by_its_methods_declared_importance(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    saliency = nodes[("hirescam", "liver")]
    table, _chart, evaluation = logic.evaluate(saliency, organs, ct, rocChart=False)
    assert set(mrml_charts.table_columns(table)["importance"]) == {"relu"} and evaluation.importance == "relu"
    saliency.SetAttribute("SaliencyInspector.Method", "gradient")  # a gradient map is ranked by |map|
    try:
        table, _chart, evaluation = logic.evaluate(saliency, organs, ct, rocChart=False)
    finally:
        saliency.SetAttribute("SaliencyInspector.Method", "hirescam")
    assert set(mrml_charts.table_columns(table)["importance"]) == {"abs"} and evaluation.importance == "abs"


def test_show_leaves_the_users_segmentation_display_alone_and_clamps_the_threshold(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    mask = np.zeros(mrml.volume_from_node(ct).shape, bool)
    mask[10:20, 30:60, 30:60] = True
    users = mrml.add_segmentation_node(app.scene, {"liver": mask}, ct, app.segmentations_logic, name="mine")
    display = users.GetDisplayNode()
    display.SetVisibility2DFill(True)
    display.SetOpacity3D(1.0)

    def state():
        return (display.GetVisibility2DFill(), display.GetVisibility2DOutline(), display.GetOpacity2DFill(),
                display.GetOpacity3D(), display.GetVisibility3D(),
                users.GetSegmentation().ContainsRepresentation("Closed surface"))

    before = state()
    node = logic.show(ct, nodes[("hirescam", "liver")], users, threshold=1.5)  # the Red view's shared node
    assert state() == before
    window_max = node.GetDisplayNode().GetWindowLevelMax()
    assert node.GetDisplayNode().GetLowerThreshold() == pytest.approx(window_max)  # 1.5 -> 1.0, not above


def test_run_ids_stay_unique_after_the_scene_is_saved_and_loaded(explained, tmp_path):
    module, recorder, app, logic, ct, organs, nodes = explained
    old_run = nodes[("hirescam", "liver")].GetAttribute("SaliencyInspector.Run")
    scene = app.scene
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    scene.Clear(0)
    assert scene.Import()  # the saved scene, loaded again (GenerateUniqueName's counters start over)
    loaded = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
              if n.GetAttribute("SaliencyInspector.Run") == old_run]
    assert len(loaded) == len(nodes)
    ct_again, _ = logic.loadPhantomSample(size=PHANTOM_SIZE)
    again, _, _ = logic.explain(ct_again, model="demo", methods=("hirescam", "gradcam"), device="cpu")
    assert {n.GetAttribute("SaliencyInspector.Run") for n in again.values()}.isdisjoint({old_run})


@pytest.mark.slow
def test_show_comparison_prefers_the_map_passed(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    new_nodes, _, _ = logic.explain(ct, model="demo", methods=("hirescam", "gradcam"), device="cpu")
    # two runs sharing an id (scenes made before run ids were UUIDs): the map passed in is shown
    old_run = nodes[("hirescam", "liver")].GetAttribute("SaliencyInspector.Run")
    for node in new_nodes.values():
        node.SetAttribute("SaliencyInspector.Run", old_run)
    ov.make_views(app, size=(32, 32), slice_tags=("Red", "Yellow"))
    newer = new_nodes[("hirescam", "liver")]
    logic.showComparison(ct, newer)
    shown = {view: mrml_maps.source_of(app.scene.GetNodeByID(ids[1])) for view, ids in _composites(app.scene).items()}
    assert shown["Red"] is newer  # not the older run's map that the scene lists first
    assert shown["Yellow"] in (nodes[("gradcam", "liver")], new_nodes[("gradcam", "liver")])


@pytest.mark.slow
def test_slider_changes_act_on_the_maps_shown_and_keep_the_comparison(explained):
    module, recorder, app, logic, ct, organs, nodes = explained
    ov.make_views(app, size=(32, 32), slice_tags=("Red", "Yellow", "Green"))
    logic.showComparison(ct, nodes[("hirescam", "liver")], threshold=0.2, opacity=0.5)
    before = _composites(app.scene)
    hires, grad = (app.scene.GetNodeByID(before[v][1]) for v in ("Red", "Yellow"))  # the views' shared nodes
    assert logic.updateShownMaps(threshold=0.6) == 2
    assert logic.updateShownMaps(opacity=0.8) == 2
    assert _composites(app.scene) == before  # which map each view shows is unchanged
    for node in (hires, grad):
        display = node.GetDisplayNode()
        assert display.GetLowerThreshold() == pytest.approx(0.6 * display.GetWindowLevelMax())  # the value just set
    opacities = {c.GetLayoutName(): c.GetForegroundOpacity() for c in
                 (app.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(i)
                  for i in range(app.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetNumberOfItems()))}
    assert opacities["Red"] == opacities["Yellow"] == pytest.approx(0.8)


@pytest.mark.slow
def test_the_3d_view_shows_the_colour_legend_of_the_volume_rendered_map(explained, tmp_path):
    """Rendered, not a flag: the 3D frame with the legend differs from the frame without it by a
    tall bar holding the map's colour table (its top and its low end)."""
    ok, reason = _egl()
    if not ok:
        pytest.skip(reason)
    module, recorder, app, logic, ct, organs, nodes = explained
    (red,), threed = ov.make_views(app, size=(320, 320), slice_tags=("Red",))
    shown = logic.show(ct, nodes[("hirescam", "liver")], organs)  # Red view and 3D; no slice shown in 3D
    legends = _legends_of(app.scene, shown)
    assert legends and any(legend.IsDisplayableInView(threed.get_view_node().GetID()) for legend in legends)
    ov.frame_3d(threed)
    threed.render()
    out = Path(os.environ.get("SI_PNG_DIR", tmp_path))
    with_legend = ov.capture(threed, out / "legend_3d.png").astype(int)
    for legend in legends:
        legend.SetVisibility(False)
    threed.render()
    without = ov.capture(threed, out / "legend_3d_off.png").astype(int)
    changed = np.abs(with_legend - without).sum(axis=2) > 60
    rows, cols = np.nonzero(changed)
    assert rows.size > 300, f"the legend changes {rows.size} pixels of the 3D frame"
    # the bar holds the map's colour table: its top colour and its low end (the first fifth)
    bar = with_legend[changed]
    lut = shown.GetDisplayNode().GetColorNode().GetLookupTable()
    table = np.array([lut.GetTableValue(i)[:3] for i in range(lut.GetNumberOfTableValues())]) * 255
    top, low = table[-8:], table[: len(table) // 5]
    near = lambda colours: (np.abs(bar[:, None, :] - colours[None]).max(axis=2) < 40).any(axis=1)  # noqa: E731
    assert near(top).sum() > 20 and near(low).sum() > 20, (near(top).sum(), near(low).sum())
    assert rows.max() - rows.min() > 0.25 * with_legend.shape[0]  # a bar along the view's height


def _legends_of(scene, node):
    found = []
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
            found.append(display)
    return found


def _session(monkeypatch, tmp_path, name):
    """A fresh Slicer session with a main window: a new scene and layout, the module loaded, startup done."""
    for module_name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
        sys.modules.pop(module_name, None)
    app = ov.make_app()
    layout = slicer_standins.LayoutManager(app.scene)
    slicer_standins.install(monkeypatch, app, tmp_path / name, layout_manager=layout)
    module = importlib.import_module("SaliencyInspector")
    module.SaliencyInspector(types.SimpleNamespace())  # what Slicer does when it loads the module
    for signal, slot in slicer.app.connections:
        if signal == "startupCompleted()":
            slot()
    return module, app, layout.layoutLogic().GetLayoutNode()


def test_a_saved_scene_reopens_in_the_compare_layout(monkeypatch, tmp_path):
    module, app, layout_node = _session(monkeypatch, tmp_path, "first")
    logic = module.SaliencyInspectorLogic()
    ct, organs = logic.loadPhantomSample(size=(48, 48, 24))
    nodes, _explanation, _predictions = logic.explain(ct, device="cpu")
    logic.showComparison(ct, nodes[("hirescam", "liver")])
    assert layout_node.GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    app.scene.SetURL(str(tmp_path / "inspection.mrml"))
    assert app.scene.Commit()

    # the same session: close the scene (the layout goes back to a standard one), load it again
    layout_node.SetViewArrangement(layout_node.SlicerLayoutFourUpView)
    app.scene.Clear(0)
    app.scene.SetURL(str(tmp_path / "inspection.mrml"))
    assert app.scene.Import()
    assert layout_node.GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    assert layout_node.GetCurrentLayoutDescription().strip() == mrml_charts.COMPARE_LAYOUT_XML.strip()

    # a new session (Slicer restarted) loads the saved scene
    module, app, layout_node = _session(monkeypatch, tmp_path, "second")
    assert layout_node.GetViewArrangement() != mrml_charts.COMPARE_LAYOUT_ID
    app.scene.SetURL(str(tmp_path / "inspection.mrml"))
    assert app.scene.Import()
    assert layout_node.GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    assert layout_node.GetCurrentLayoutDescription().strip() == mrml_charts.COMPARE_LAYOUT_XML.strip()
    assert app.scene.GetSingletonNode("Yellow", "vtkMRMLSliceNode") is not None  # its views exist


# ---- bad input: one message, the scene unchanged -------------------------------------------------
def test_bad_input_gives_one_clear_line_and_adds_no_node(module_env):
    module, recorder, app = module_env
    logic = module.SaliencyInspectorLogic()
    ct, organs = logic.loadPhantomSample(size=PHANTOM_SIZE)
    scene = app.scene
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    vector.SetAndObserveImageData(image)
    broken = Path(slicer.app.temporaryPath) / "broken.pt2"
    broken.write_bytes(b"not a model")
    before = node_count(scene), ct.GetMTime(), organs.GetMTime()
    cases = [(lambda: logic.process(None), "no CT volume selected"),
             (lambda: logic.process(vector), "not a scalar volume"),
             (lambda: logic.process(ct, segmentationNode=empty), "has no segments"),
             (lambda: logic.process(ct, model=str(broken), device="cpu"), "broken.pt2"),
             (lambda: logic.showComparison(ct, None), "nothing to compare")]
    for call, message in cases:
        with pytest.raises(InputError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert (node_count(scene), ct.GetMTime(), organs.GetMTime()) == before
    assert recorder.messages == []  # the Logic raises; the widget shows each in one box


@pytest.mark.slow
def test_phantom_sample_from_sample_data_and_the_button_needs_no_package(module_env, monkeypatch):
    module, recorder, app = module_env
    # the phantom needs only what Slicer ships: with monai and slicerio unimportable it still loads
    for name in ("monai", "slicerio", "captum"):
        monkeypatch.setitem(sys.modules, name, None)
    module.SaliencyInspector(types_namespace())  # the module registers its sample on startupCompleted()
    assert ("startupCompleted()", module.registerSampleData) in slicer.app.connections
    module.registerSampleData()
    (source,) = slicer.modules.sampleDataSources["SaliencyInspector"]
    assert source.sampleName == module.PHANTOM_SAMPLE_NAME
    assert len(source.uris) == len(source.fileNames) == len(source.nodeNames) == len(source.loadFileTypes)
    n = node_count(app.scene)
    ct, organs = source.customDownloader(source)  # what Sample Data's button calls
    assert ct.IsA("vtkMRMLScalarVolumeNode") and organs.GetSegmentation().GetNumberOfSegments() > 5
    assert organs.GetSegmentation().GetNthSegment(0).GetName() == "body"
    assert node_count(app.scene) > n and recorder.messages == []


@pytest.mark.slow
def test_sample_data_download_sample_gets_the_phantom_through_the_url_rewrite_rule(module_env, monkeypatch):
    """SampleData.downloadSample() (Slicer >= 5.10): each URI goes through the rewrite rules, is
    fetched with urllib into the cache, then loaded (SampleData.py downloadFile/downloadFromSource)."""
    import urllib.request

    import SimpleITK as sitk

    module, recorder, app = module_env
    for name in ("monai", "slicerio", "captum"):
        monkeypatch.setitem(sys.modules, name, None)
    module.registerSampleData()
    (source,) = slicer.modules.sampleDataSources["SaliencyInspector"]
    rules = slicer.modules.sampleDataUrlRewriteRules.values()
    assert [rule("https://example.org/ct.nrrd") for rule in rules] == ["https://example.org/ct.nrrd"]
    cache = Path(slicer.app.temporaryPath) / "cache"
    cache.mkdir()
    n = node_count(app.scene)
    files = []
    for uri, file_name in zip(source.uris, source.fileNames):
        for rule in rules:
            uri = rule(uri)
        files.append(urllib.request.urlretrieve(uri, cache / file_name)[0])
    assert node_count(app.scene) == n  # writing the files does not touch the user's scene
    from saliency_inspector.models.demo_model import LESION_SCALE
    from saliency_inspector.synth.phantom import make_phantom

    case = make_phantom(seed=0, size=(192, 192, 64), lesion_scale=LESION_SCALE)  # what the button makes
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(files[0]))), case.ct.array)
    organs = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = app.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(files[1]))
    assert storage.ReadData(organs) == 1 and source.loadFileTypes == ["VolumeFile", "SegmentationFile"]
    ct = mrml.add_volume_node(app.scene, case.ct, "ct")
    masks = mrml.segments_from_node(organs, ct, app.segmentations_logic).masks
    assert list(masks) == case.organs.names
    assert all(np.array_equal(masks[name], case.organs.mask(name)) for name in case.organs.names)


def types_namespace():
    import types

    return types.SimpleNamespace()


# ---- dependencies -------------------------------------------------------------------------------
def _wheel(folder: Path, name: str, version: str, requires=()):
    """A minimal wheel with only metadata: what pip reads to resolve (nothing is installed)."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", metadata)
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _fake_installed(site: Path, name: str, version: str):
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def fresh_install(module_env, monkeypatch, tmp_path):
    """A Slicer with no torch and the module's requirement missing; pip (real, offline) resolves
    against local wheels like PyPI's monai (torch>=2.8 on new Pythons, >=2.4.1 on old ones)."""
    module, recorder, app = module_env
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "si-test-monai", "1.6.1", ["torch>=2.8.0; python_version >= '3.10'",
                                              "torch>=2.4.1; python_version < '3.10'", "numpy>=1.24",
                                              "si-test-helper", "torch>=99; extra == 'never'"])
    _wheel(wheels, "si-test-helper", "1.0", ["torch>=2.9.1,!=2.10.0"])
    for name, version in (("torch", "2.13.0"), ("numpy", "2.4.6")):
        _wheel(wheels, name, version)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# test\nsi-test-monai>=1.3\n")
    monkeypatch.setattr(module, "REQUIREMENTS_PATH", str(requirements))
    sys.modules["PyTorchUtils"].PyTorchUtilsLogic.installed = False

    def execute_python_module(name, args):  # PythonSlicer -m pip ..., here offline on the local wheels
        recorder.pip_calls.append(("pip", list(args)))
        subprocess.run([sys.executable, "-m", name, *args, "--no-index", "--find-links", str(wheels)],
                       check=True, capture_output=True)

    monkeypatch.setattr(slicer.util, "executePythonModule", execute_python_module, raising=False)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return module, recorder, site


def test_torch_is_installed_first_at_the_strictest_requirement_then_pip_with_pins(fresh_install, monkeypatch):
    module, recorder, site = fresh_install
    from packaging.specifiers import SpecifierSet

    def pip_install(arguments):  # Slicer 5.8-5.10: pip_install(list of pip arguments)
        recorder.pip_calls.append(("pip_install", arguments))
        _fake_installed(site, "si-test-monai", "1.6.1")

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    assert module.SaliencyInspectorLogic().ensureDependencies(askConfirmation=True)

    (required,) = recorder.torch_installs  # PyTorchUtils.installTorch(torchVersionRequirement=...)
    spec = SpecifierSet(required)
    assert "2.9.1" in spec and "2.9.0" not in spec and "2.8.5" not in spec and "2.10.0" not in spec
    assert "2.2" in str(spec)  # the module's own floor is kept
    dry_run = recorder.pip_calls[0]
    assert dry_run[0] == "pip" and "--dry-run" in dry_run[1] and "si-test-monai>=1.3" in dry_run[1]
    kind, arguments = recorder.pip_calls[-1]
    assert kind == "pip_install" and arguments[0] == "--constraint" and arguments[2:] == ["si-test-monai>=1.3"]
    pins = Path(arguments[1]).read_text().split()
    from importlib.metadata import version

    for name in ("torch", "numpy", "scipy", "SimpleITK", "vtk", "pillow", "packaging"):  # Slicer's own stay
        assert f"{name}=={version(name)}" in pins
    assert [m for m in recorder.messages if m[0] != "confirm"] == []
    assert len(recorder.boxes("confirm")) == 1  # asked once, before pip


def test_slicer_5_12_uses_pip_ensure_with_the_pins(fresh_install, monkeypatch):
    module, recorder, site = fresh_install
    sys.modules["PyTorchUtils"].PyTorchUtilsLogic.installed = True
    packaging = slicer_standins.packaging_module(recorder)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    logic = module.SaliencyInspectorLogic()
    assert not logic.ensureDependencies()  # pip_ensure "installed" nothing: still missing, said once
    ((kind, requirements, constraints, requester),) = recorder.pip_calls
    assert (kind, requirements, requester) == ("pip_ensure", ["si-test-monai>=1.3"], "SaliencyInspector")
    assert any(line.startswith("torch==") for line in Path(constraints).read_text().split())
    assert [kind for kind, _text in recorder.messages] == ["confirm", "warning"]  # asked once, here; not by pip_ensure
    assert "still missing" in recorder.messages[1][1]


@pytest.mark.parametrize("answer", [True, False])
def test_one_question_lists_everything_before_anything_touches_the_network(fresh_install, monkeypatch, answer):
    module, recorder, site = fresh_install  # torch and si-test-monai both missing
    asked = []

    def confirm(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
        # what had run when the question came: nothing networked (no pip, not even its dry run)
        asked.append((text, list(recorder.pip_calls), list(recorder.torch_installs)))
        return answer

    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", confirm)
    monkeypatch.setattr(slicer.util, "pip_install", lambda arguments: recorder.pip_calls.append(("pip_install", arguments)))
    module.SaliencyInspectorLogic().ensureDependencies(askConfirmation=True)
    ((text, pip_before, torch_before),) = asked  # one question
    assert pip_before == [] and torch_before == []
    assert "PyTorch" in text and "si-test-monai>=1.3" in text
    if answer:  # then: the dry run, torch (not asking again), pip
        assert [kind for kind, _args in recorder.pip_calls] == ["pip", "pip_install"] and recorder.torch_asked == [False]
    else:  # declined: nothing ran, one warning
        assert recorder.pip_calls == [] and recorder.torch_installs == []
        assert [kind for kind, _text in recorder.messages] == ["warning"]


@pytest.mark.parametrize("case", ["declined", "pip fails", "pip fails 5.12", "no PyTorch extension",
                                  "torch declined", "torch install fails 5.12", "torch too old"])
def test_install_refused_or_failed_gives_one_message_and_returns_false(fresh_install, monkeypatch, case, caplog):
    module, recorder, site = fresh_install
    torch_utils = sys.modules["PyTorchUtils"].PyTorchUtilsLogic
    torch_utils.installed = case not in ("torch declined", "torch install fails 5.12")
    if case == "declined":
        recorder.confirm_answer = False
    elif case == "pip fails":
        def pip_install(arguments):
            raise subprocess.CalledProcessError(1, ["pip", "install", *arguments])
        monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    elif case == "pip fails 5.12":
        packaging = slicer_standins.packaging_module(recorder, fail=subprocess.CalledProcessError(1, "pip install"))
        monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    elif case == "no PyTorch extension":
        monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    elif case == "torch declined":
        torch_utils.install_result = None
    elif case == "torch install fails 5.12":  # light-the-torch fails: Slicer showed nothing, we do
        monkeypatch.setitem(sys.modules, "slicer.packaging", slicer_standins.packaging_module(recorder))

        def install_fails(self, **kwargs):
            raise subprocess.CalledProcessError(1, "light_the_torch install torch")
        monkeypatch.setattr(torch_utils, "installTorch", install_fails)
    elif case == "torch too old":
        monkeypatch.setattr(module, "MINIMUM_TORCH", ">=99")
    n = node_count(slicer.mrmlScene)
    with caplog.at_level("INFO"):
        assert not module.SaliencyInspectorLogic().ensureDependencies()
    shown = [m for m in recorder.messages if m[0] != "confirm"]
    assert len(shown) == 1, shown
    assert "\n" not in shown[0][1]
    assert any("SaliencyInspector:" in r.getMessage() and r.levelname in ("WARNING", "ERROR") for r in caplog.records)
    assert node_count(slicer.mrmlScene) == n
    # the console Logic stops with one line instead of running without its packages
    ct = mrml.add_volume_node(slicer.mrmlScene, mrml.volume_from_node(
        mrml.add_volume_node(slicer.mrmlScene, _tiny_volume(), "tiny")), "tiny ct")
    with pytest.raises(InputError, match="not installed"):
        module.SaliencyInspectorLogic().explain(ct)


def _tiny_volume():
    from saliency_inspector.io.volume import Volume

    return Volume(np.zeros((4, 4, 4), np.int16))


def test_missing_torch_is_blamed_on_the_package_not_the_model(module_env, monkeypatch):
    module, recorder, app = module_env
    module.SaliencyInspectorLogic._classifierCache.clear()
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(InputError, match="Python package 'torch' is not installed") as info:
        module.SaliencyInspectorLogic().loadClassifier("demo", "cpu")
    assert "model card" not in str(info.value)


def test_the_self_test_passes_on_real_mrml(module_env):
    module, recorder, app = module_env
    result = __import__("unittest").TextTestRunner(verbosity=0).run(
        __import__("unittest").defaultTestLoader.loadTestsFromTestCase(module.SaliencyInspectorTest))
    assert result.wasSuccessful() and result.testsRun == 2 and not result.skipped


class _ComboBox:
    """The few QComboBox calls the widget makes (blockSignals, clear, addItem, findData, currentIndex)."""

    def __init__(self):
        self.items, self.currentIndex = [], 0

    def blockSignals(self, block):
        return False

    def clear(self):
        self.items = []

    def addItem(self, text, data=None):
        self.items.append((text, data))

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)


@pytest.mark.slow
def test_apply_ends_in_the_compare_layout_and_the_widget_keeps_it(monkeypatch, tmp_path):
    """process() with a main window ends in the compare layout; storing its outputs in the parameter
    node (which makes the 'shown map' selector emit currentNodeChanged, as the real GUI connector
    does) must not put one map back into every view; the sliders then use the value just set."""
    import types

    app = ov.make_app()
    ov.make_views(app, size=(32, 32), slice_tags=("Red", "Yellow", "Green"))
    layout = slicer_standins.LayoutManager(app.scene)
    slicer_standins.install(monkeypatch, app, tmp_path / "slicer-tmp", layout_manager=layout)
    module = importlib.import_module("SaliencyInspector")
    try:
        widget = module.SaliencyInspectorWidget()
        widget.logic = module.SaliencyInspectorLogic()
        ct, organs = widget.logic.loadPhantomSample(size=PHANTOM_SIZE)

        class ParameterNode(types.SimpleNamespace):
            def __setattr__(self, name, value):
                old = getattr(self, name, None)
                super().__setattr__(name, value)
                if name == "shownSaliency" and value is not old:
                    widget.onShownSaliencyChanged(value)  # the selector's currentNodeChanged signal

        widget._parameterNode = ParameterNode(inputVolume=ct, segmentation=organs, threshold=0.2, opacity=0.5,
                                              className="all", shownSaliency=None)
        widget.ui = types.SimpleNamespace(classComboBox=_ComboBox(), statusLabel=types.SimpleNamespace(text=""),
                                          predictionsTableView=types.SimpleNamespace(setMRMLTableNode=lambda n: None))
        result = widget.logic.process(ct, device="cpu", segmentationNode=organs)
        widget._showResults(result)
    finally:
        for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
            sys.modules.pop(name, None)
    shown = result["shown"]
    pair = mrml.same_run_maps(app.scene, shown)
    assert layout.layoutLogic().GetLayoutNode().GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    views = _composites(app.scene)
    red, yellow = (app.scene.GetNodeByID(views[v][1]) for v in ("Red", "Yellow"))  # the views' shared nodes
    assert mrml_maps.source_of(red) is pair["hirescam"] and mrml_maps.source_of(yellow) is pair["gradcam"]
    assert widget._parameterNode.shownSaliency is shown and widget.ui.statusLabel.text == result["message"]
    # a slider moves: its handler runs before the parameter node holds the new value
    widget.onThresholdChanged(0.7)
    display = yellow.GetDisplayNode()
    assert display.GetLowerThreshold() == pytest.approx(0.7 * display.GetWindowLevelMax())
    assert _composites(app.scene) == views
    # the user picks a map: then it is shown in every view
    widget.onShownSaliencyChanged(pair["gradcam"])
    assert {fg for _, fg in _composites(app.scene).values()} == {red.GetID()} and mrml_maps.source_of(red) is pair["gradcam"]


def test_the_self_test_is_skipped_without_installing_when_packages_are_missing(module_env, monkeypatch):
    module, recorder, app = module_env
    from SaliencyInspectorLib import dependencies

    real = dependencies.installed_version
    monkeypatch.setattr(dependencies, "installed_version", lambda name: None if name == "monai" else real(name))
    unittest = __import__("unittest")
    result = unittest.TextTestRunner(verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(module.SaliencyInspectorTest))
    assert result.wasSuccessful() and len(result.skipped) == 1
    assert recorder.pip_calls == [] and recorder.torch_installs == [] and recorder.messages == []


# ---- the widget's method list and its Fidelity / Trust buttons ------------------------------------
class _ListWidget:
    """QListWidget in MultiSelection mode: items without flags (group titles) cannot be selected."""

    def __init__(self):
        self.items = []

    @property
    def count(self):  # a Q_PROPERTY: an attribute in PythonQt
        return len(self.items)

    def clear(self):
        self.items = []

    def addItem(self, item):
        self.items.append(item)

    def item(self, row):
        return self.items[row]

    def blockSignals(self, block):
        return False

    def selectedItems(self):
        return [i for i in self.items if i.selected and i.flags is None]


def test_method_list_offers_the_registrys_other_estimators_grouped_by_family(module_env, monkeypatch):
    import types

    from saliency_inspector.explainers import registry as methods

    module, recorder, app = module_env
    registry = methods.METHODS
    groups = module.methodGroups()
    assert [title for title, _ in groups] == ["CAMs", "gradient-based", "perturbation"]
    for title, names in groups:  # each group holds exactly its family's estimators, in registry order
        family = next(f for f, label in methods.FAMILY_LABELS.items() if label == title)
        assert names == [n for n, info in registry.items() if info.family == family and n not in ("hirescam", "gradcam")]
    # an estimator registered later joins the list in its family's group
    entry = methods.Method("intensity", "Intensity", "custom", "signed", "signed", "x", cost="1 forward")
    monkeypatch.setitem(registry, "intensity", entry)
    assert module.methodGroups()[-1] == ("custom", ["intensity"])

    # the list widget: a title item per group, one item per estimator carrying its name
    qt = sys.modules["qt"]
    monkeypatch.setattr(qt, "QListWidgetItem", slicer_widgets.QListWidgetItem, raising=False)
    monkeypatch.setattr(qt, "Qt", types.SimpleNamespace(WaitCursor=3, NoItemFlags=0, UserRole=32), raising=False)
    widget = module.SaliencyInspectorWidget()
    widget.ui = types.SimpleNamespace(moreMethodsListWidget=_ListWidget())
    widget._parameterNode = types.SimpleNamespace(hirescam=True, gradcam=False, moreMethods="")
    widget._fillMethodList()
    items = widget.ui.moreMethodsListWidget.items
    titles = [i.text for i in items if i.flags == 0]
    assert titles == [title for title, _ in module.methodGroups()]
    offered = [i.data(32) for i in items if i.flags is None]
    assert offered == [n for _, names in module.methodGroups() for n in names]
    # choosing two: the parameter node keeps them and Apply explains them after the checked CAMs
    for item in items:
        item.selected = item.data(32) in ("occlusion", "ig")
    widget.onMoreMethodsChanged()
    assert widget._parameterNode.moreMethods == "ig,occlusion"
    assert widget._chosenMethods() == ["hirescam", "ig", "occlusion"]
    # a loaded scene's choice is shown again in the list
    widget._selectMoreMethods("smoothgrad")
    assert [i.data(32) for i in items if i.selected] == ["smoothgrad"]


def _widget_over(module, logic, **parameters):
    import types

    widget = module.SaliencyInspectorWidget()
    widget.logic = logic
    widget._parameterNode = types.SimpleNamespace(useDemoModel=True, modelPath="", device=module.Device.CPU,
                                                  **parameters)
    widget.ui = types.SimpleNamespace(statusLabel=types.SimpleNamespace(text=""))
    return widget


def test_fidelity_and_trust_without_a_shown_map_say_so(explained, monkeypatch):
    """The buttons themselves run in test_slicer_widget.py (worker thread, strict stand-ins)."""
    module, recorder, app, logic, ct, organs, nodes = explained
    empty = _widget_over(module, logic, inputVolume=ct, segmentation=organs, shownSaliency=None)
    empty._running, empty._task = False, None
    before = node_count(app.scene)
    for handler in (empty.onFidelityButton, empty.onTrustButton):
        with pytest.raises(InputError, match="no map is shown yet"):
            handler()
    assert node_count(app.scene) == before
    assert [kind for kind, _ in recorder.messages] == ["error", "error"]


def test_reload_and_test_ends_quietly_when_packages_are_missing(module_env, monkeypatch):
    """Slicer's Reload and Test calls runTest() directly: no SkipTest may escape it."""
    module, recorder, app = module_env
    from SaliencyInspectorLib import dependencies

    real = dependencies.installed_version
    monkeypatch.setattr(dependencies, "installed_version", lambda name: None if name == "torch" else real(name))
    module.SaliencyInspectorTest("runTest").runTest()  # raises on failure or skip
    assert recorder.pip_calls == [] and recorder.torch_installs == []
