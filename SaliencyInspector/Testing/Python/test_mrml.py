"""The MRML glue on real MRML (slicer-core), outside the Slicer application.

Geometry round trips go through a real vtkMRMLScene, the real segmentations logic and Slicer's own
NRRD writer (cross-checked with SimpleITK); the rendering test draws real slice and 3D views
offscreen and checks the pixels where the lesion is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("trame_slicer", reason="trame-slicer is not installed")

import offscreen_views as ov  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from saliency_inspector import mrml, mrml_charts  # noqa: E402
from saliency_inspector.errors import InputError  # noqa: E402
from saliency_inspector.io.volume import Volume  # noqa: E402


def _rotation(ax, ay, az):
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_ct(shape=(40, 48, 56), seed=0) -> Volume:
    """A random int16 'CT' with an oblique direction and anisotropic spacing."""
    array = np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.int16)
    return Volume(array, (0.8, 0.9, 2.5), (12.5, -40.0, 31.0), _rotation(20, -10, 35))


def ball(shape, center_ijk, radius_vox, scale_k=1.0):
    k, j, i = np.indices(shape)
    ci, cj, ck = center_ijk
    return (i - ci) ** 2 + (j - cj) ** 2 + ((k - ck) * scale_k) ** 2 <= radius_vox ** 2


@pytest.fixture(scope="module")
def app():
    return ov.make_app()


@pytest.fixture
def scene(app):
    yield app.scene
    # leave the shared scene with only the app's default nodes for the next test
    for cls in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode",
                "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode", "vtkMRMLLinearTransformNode"):
        nodes = app.scene.GetNodesByClass(cls)
        for i in range(nodes.GetNumberOfItems()):
            app.scene.RemoveNode(nodes.GetItemAsObject(i))


def ijk_to_ras_of(node):
    m = slicer.vtkMatrix4x4() if hasattr(slicer, "vtkMatrix4x4") else __import__("vtk").vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


# ---- volumes ----------------------------------------------------------------------------------
def test_oblique_ct_round_trips_with_identical_geometry(scene, tmp_path):
    ct = oblique_ct()
    node = mrml.add_volume_node(scene, ct, "CT")
    # MRML holds RAS: the node's IJK→RAS is the LPS matrix with x and y negated
    lps = ct.ijk_to_lps()
    ras = ijk_to_ras_of(node)
    np.testing.assert_allclose(ras[:2], -lps[:2], atol=1e-9)
    np.testing.assert_allclose(ras[2:], lps[2:], atol=1e-9)

    back = mrml.volume_from_node(node)
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, ct.direction, atol=1e-9)

    # Slicer's own NRRD writer and SimpleITK's reader agree with the Volume's geometry
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "ct.nrrd"))
    assert storage.WriteData(node) == 1
    image = sitk.ReadImage(str(tmp_path / "ct.nrrd"))
    np.testing.assert_allclose(image.GetOrigin(), ct.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), ct.spacing, atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), ct.direction, atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image), ct.array)
    scene.RemoveNode(storage)


def test_saliency_node_has_the_ct_geometry_and_transform(scene):
    ct = oblique_ct(shape=(20, 24, 28))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    ct_node.SetAndObserveTransformNodeID(transform.GetID())
    saliency = ct.with_array(np.random.default_rng(1).normal(size=ct.shape).astype(np.float64))

    node = mrml.add_saliency_node(scene, saliency, ct_node, "hirescam liver")
    np.testing.assert_allclose(ijk_to_ras_of(node), ijk_to_ras_of(ct_node), atol=1e-12)
    assert node.GetImageData().GetDimensions() == ct_node.GetImageData().GetDimensions()
    assert node.GetParentTransformNode() is transform  # stays in the CT's frame
    back = mrml.volume_from_node(node)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, saliency.array.astype(np.float32))  # raw signed values kept

    shifted = Volume(saliency.array, ct.spacing, np.add(ct.origin, 5.0), ct.direction)
    with pytest.raises(InputError, match="not on the CT's grid"):
        mrml.add_saliency_node(scene, shifted, ct_node, "off grid")


def test_display_window_and_threshold(scene):
    ct = oblique_ct(shape=(10, 12, 14))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    values = np.linspace(-1.0, 2.0, ct.array.size).reshape(ct.shape).astype(np.float32)
    node = mrml.add_saliency_node(scene, ct.with_array(values), ct_node, "map")
    lo, hi = mrml.display_window(values, percentile=100)
    assert (lo, hi) == (0.0, pytest.approx(2.0))  # S⁺ = ReLU(map): the window starts at 0
    mrml.set_saliency_display(node, (lo, hi), threshold=0.25)
    display = node.GetDisplayNode()
    # Inferno is a file colour table of the Slicer app; bare slicer-core has the procedural PET heat
    assert display.GetColorNodeID() in (mrml.HEAT_COLOR_NODE_ID, mrml.FALLBACK_COLOR_NODE_ID)
    assert display.GetColorNode() is not None
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 2.0))
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.5)
    assert mrml.display_window(-np.ones(5)) == (0.0, 1.0)  # nothing positive: a harmless window


# ---- segmentations ----------------------------------------------------------------------------
def test_segments_come_back_as_the_masks_put_in(scene, app):
    ct = oblique_ct()
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    organ = ball(ct.shape, (25, 22, 20), 12, scale_k=1.5)
    lesion = ball(ct.shape, (21, 20, 20), 4, scale_k=1.5)  # inside the organ: overlapping segments
    edge = np.zeros(ct.shape, bool)
    edge[0, 0, :5] = True  # touches the volume's corner
    masks = {"liver": organ, "lesion_liver": lesion, "edge": edge}
    colors = {"liver": (0.9, 0.5, 0.4), "lesion_liver": (1.0, 1.0, 0.0), "edge": (0.0, 0.0, 1.0)}
    seg_node = mrml.add_segmentation_node(scene, masks, ct_node, app.segmentations_logic, colors)
    n_nodes = scene.GetNumberOfNodes()

    segments = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic)
    grid, back, back_colors = segments.grid, segments.masks, segments.colors
    assert grid.same_grid(ct)
    assert list(back) == list(masks)
    for name in masks:
        assert back[name].dtype == bool and back[name].shape == ct.shape
        assert np.array_equal(back[name], masks[name]), name
        assert back_colors[name] == pytest.approx(colors[name])
    assert scene.GetNumberOfNodes() == n_nodes  # the temporary export node is gone

    only = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic, ["lesion_liver"]).masks
    assert list(only) == ["lesion_liver"]
    with pytest.raises(InputError, match="no segment named spleen"):
        mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic, ["spleen"])


def test_segments_onto_another_grid_are_resampled_in_physical_space(scene, app):
    """A segmentation made on a fine grid comes back on a coarser CT grid at the same place."""
    fine = Volume(np.zeros((40, 40, 40), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    coarse = Volume(np.zeros((20, 20, 20), np.int16), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    fine_node = mrml.add_volume_node(scene, fine, "fine")
    coarse_node = mrml.add_volume_node(scene, coarse, "coarse")
    block = np.zeros(fine.shape, bool)
    block[10:20, 8:24, 4:30] = True  # z 10..19, y 8..23, x 4..29 mm
    seg_node = mrml.add_segmentation_node(scene, {"block": block}, fine_node, app.segmentations_logic)
    back = mrml.segments_from_node(seg_node, coarse_node, app.segmentations_logic).masks
    expected = np.zeros(coarse.shape, bool)
    expected[5:10, 4:12, 2:15] = True  # coarse voxel centres 0.5 + 2n inside the block
    assert np.array_equal(back["block"], expected)


def test_segments_from_node_gives_core_segments(scene, app):
    segments_module = pytest.importorskip("saliency_inspector.io.segments")
    ct = oblique_ct(shape=(16, 20, 24))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    mask = ball(ct.shape, (12, 10, 8), 5)
    seg_node = mrml.add_segmentation_node(scene, {"kidney_left": mask}, ct_node, app.segmentations_logic,
                                          {"kidney_left": (0.2, 0.3, 0.9)})
    segments = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic)
    assert isinstance(segments, segments_module.Segments)
    assert segments.names == ["kidney_left"] and len(segments) == 1
    assert segments.grid.same_grid(ct)
    assert np.array_equal(segments.mask("kidney_left"), mask)
    assert segments.colors["kidney_left"] == pytest.approx((0.2, 0.3, 0.9))


def test_phantom_seg_nrrd_read_by_slicer_matches_the_phantom_masks(scene, app, tmp_path):
    """Cross-check of two independent paths: write_segments (slicerio) read by Slicer's own
    segmentation storage node, exported by the glue onto an oblique CT node, equals the phantom."""
    phantom = pytest.importorskip("saliency_inspector.synth.phantom")
    pytest.importorskip("slicerio", reason="the CLI's .seg.nrrd writer; Slicer's Python has no slicerio and the module never writes through it")
    case = phantom.make_phantom(seed=0, size=(48, 48, 24), oblique=True)
    paths = phantom.write_phantom_case(case, tmp_path)
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(paths["organs"]))
    assert storage.ReadData(seg_node) == 1
    scene.RemoveNode(storage)
    ct_node = mrml.add_volume_node(scene, case.ct, "CT")
    segments = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic)
    grid, masks, colors = segments.grid, segments.masks, segments.colors
    assert grid.same_grid(case.ct)
    assert list(masks) == case.organs.names
    for name in case.organs.names:
        assert np.array_equal(masks[name], case.organs.mask(name)), name
        assert colors[name] == pytest.approx(case.organs.colors[name], abs=1e-5)


def test_explain_on_a_volume_node_gives_saliency_nodes_on_its_grid(scene):
    """The Logic's path: CT node -> Volume -> explain (real torch model) -> saliency nodes."""
    torch = pytest.importorskip("torch")
    from saliency_inspector.explainers.explanation import explain
    from saliency_inspector.models.loaders import load_classifier

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    card = {"name": "tiny", "classes": ["liver", "spleen"], "multilabel": True,
            "input": {"size": [12, 16, 16], "spacing": None, "window": [-1000, 400], "channels": 1},
            "target_layer": "1"}
    classifier = load_classifier(net, card=card, device="cpu")
    ct = oblique_ct(shape=(20, 26, 30), seed=3)
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    result = explain(classifier, mrml.volume_from_node(ct_node), methods=("hirescam", "gradcam"))
    assert set(result.maps) == {(m, c) for m in ("hirescam", "gradcam") for c in ("liver", "spleen")}
    for (method, name), saliency in result.maps.items():
        node = mrml.add_saliency_node(scene, saliency, ct_node, f"{method} {name}")
        np.testing.assert_allclose(ijk_to_ras_of(node), ijk_to_ras_of(ct_node), atol=1e-12)
        np.testing.assert_array_equal(mrml.volume_from_node(node).array, saliency.array)
    table = mrml_charts.add_predictions_table(scene, result.class_names, result.probabilities, result.logits)
    columns = mrml_charts.table_columns(table)
    np.testing.assert_allclose(columns["probability"], 1 / (1 + np.exp(-np.asarray(columns["logit"]))), rtol=1e-6)


# ---- bad input --------------------------------------------------------------------------------
def test_bad_input_is_a_clear_input_error_and_changes_nothing(scene, app):
    ct_node = mrml.add_volume_node(scene, oblique_ct(shape=(8, 8, 8)), "CT")
    empty_seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    rgb.SetAndObserveImageData(image)
    flat = mrml.add_volume_node(scene, Volume(np.zeros((1, 8, 8), np.int16)), "slice")
    before = (scene.GetNumberOfNodes(), ct_node.GetMTime(), empty_seg.GetMTime())

    cases = [
        (lambda: mrml.volume_from_node(None), "no CT volume selected"),
        (lambda: mrml.volume_from_node(rgb), "not a scalar volume"),
        (lambda: mrml.volume_from_node(flat), "2D image"),
        (lambda: mrml.segments_from_node(None, ct_node, app.segmentations_logic), "no segmentation"),
        (lambda: mrml.segments_from_node(empty_seg, ct_node, app.segmentations_logic), "has no segments"),
        (lambda: mrml_charts.add_metrics_table(scene, []), "no metric rows"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert (scene.GetNumberOfNodes(), ct_node.GetMTime(), empty_seg.GetMTime()) == before


# ---- tables, plots, layout --------------------------------------------------------------------
def test_predictions_table(scene):
    table = mrml_charts.add_predictions_table(scene, ["lung_left", "liver"], [0.25, 0.875], [-1.1, 1.95])
    assert mrml_charts.table_columns(table) == {"class": ["lung_left", "liver"], "probability": [0.25, 0.875],
                                         "logit": [-1.1, 1.95]}


def test_metrics_table_holds_the_rows_given(scene):
    rows = [{"segment": "liver", "dice": 0.5, "roc_auc": 0.9, "pointing_game": True, "note": None},
            {"segment": "spleen", "dice": 0.0, "roc_auc": None, "pointing_game": False, "note": "empty"}]
    info = {"dice": {"name": "Dice", "meaning": "overlap of thresholded map and mask"}}
    table = mrml_charts.add_metrics_table(scene, rows, metrics_info=info)
    columns = mrml_charts.table_columns(table)
    assert columns["segment"] == ["liver", "spleen"]
    assert columns["dice"] == [0.5, 0.0]
    assert columns["roc_auc"][0] == 0.9 and np.isnan(columns["roc_auc"][1])
    assert columns["pointing_game"] == [1.0, 0.0]
    assert columns["note"] == ["", "empty"]
    assert table.GetColumnTitle("dice") == "Dice"
    assert table.GetColumnDescription("dice") == "overlap of thresholded map and mask"


def test_metrics_table_matches_evaluate(scene, app):
    metrics = pytest.importorskip("saliency_inspector.scoring.metrics")
    evaluation = pytest.importorskip("saliency_inspector.scoring.evaluation")
    segments_module = pytest.importorskip("saliency_inspector.io.segments")
    ct = oblique_ct(shape=(24, 28, 32))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    organ = ball(ct.shape, (14, 14, 12), 8)
    other = ball(ct.shape, (24, 16, 12), 5) & ~organ
    seg_node = mrml.add_segmentation_node(scene, {"liver": organ, "spleen": other}, ct_node,
                                          app.segmentations_logic)
    k, j, i = np.indices(ct.shape)
    saliency = ct.with_array((np.exp(-((i - 13) ** 2 + (j - 14) ** 2 + (k - 12) ** 2) / 30.0) - 0.1)
                             .astype(np.float32))
    segments = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic)
    table = evaluation.evaluate(saliency, segments, region="all")
    node = mrml_charts.add_metrics_table(scene, table.rows, metrics_info=metrics.METRICS)
    columns = mrml_charts.table_columns(node)
    assert columns["segment"] == [row["segment"] for row in table.rows]
    for key in ("dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game"):
        expected = [np.nan if row[key] is None else float(row[key]) for row in table.rows]
        np.testing.assert_array_equal(columns[key], expected, err_msg=key)
    del segments_module


def test_metrics_table_shows_the_map_quality_metrics_titled_from_their_registry(scene, app):
    from saliency_inspector.scoring import evaluation, metrics
    from saliency_inspector.scoring.quality import MAP_KEYS, QUALITY_METRICS, SEGMENT_KEYS

    ct = oblique_ct(shape=(20, 22, 24))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    organ = ball(ct.shape, (11, 11, 10), 6)
    seg_node = mrml.add_segmentation_node(scene, {"liver": organ, "spleen": ball(ct.shape, (18, 12, 10), 3) & ~organ},
                                          ct_node, app.segmentations_logic)
    k, j, i = np.indices(ct.shape)
    saliency = ct.with_array(np.exp(-((i - 10) ** 2 + (j - 11) ** 2 + (k - 10) ** 2) / 20.0).astype(np.float32))
    table = evaluation.evaluate(saliency, mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic),
                                region="all")
    node = mrml_charts.add_metrics_table(scene, table.rows, metrics_info=metrics.METRICS)
    columns = mrml_charts.table_columns(node)
    for key in (*SEGMENT_KEYS, *MAP_KEYS):
        expected = [np.nan if row[key] is None else float(row[key]) for row in table.rows]
        assert np.isfinite(expected).all(), key
        np.testing.assert_array_equal(columns[key], expected, err_msg=key)
        assert node.GetColumnTitle(key) == QUALITY_METRICS[key].label
        assert QUALITY_METRICS[key].meaning in node.GetColumnDescription(key)
    assert "lower is better" in node.GetColumnDescription("complexity")
    assert node.GetColumnTitle("dice") == metrics.METRICS["dice"].name  # the mask metrics keep theirs


def test_roc_chart_is_scatter_series_with_the_curve_points(scene):
    curves = {"liver": ([0.0, 0.1, 1.0], [0.0, 0.8, 1.0]), "spleen": ([0.0, 0.5, 0.7, 1.0], [0.0, 0.2, 0.6, 1.0])}
    chart = mrml_charts.add_roc_chart(scene, curves, colors={"liver": (1.0, 0.0, 0.0)})
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    for n, (name, (fpr, tpr)) in enumerate(curves.items()):
        series = chart.GetNthPlotSeriesNode(n)
        assert series.GetName() == name
        assert series.GetPlotType() == series.PlotTypeScatter  # Line would space X evenly
        columns = mrml_charts.table_columns(series.GetTableNode())
        assert columns[series.GetXColumnName()] == fpr and columns[series.GetYColumnName()] == tpr
    assert chart.GetNthPlotSeriesNode(0).GetColor() == pytest.approx((1.0, 0.0, 0.0))


def test_compare_layout_registered_and_selected(scene):
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    assert mrml_charts.set_compare_layout(layout) == mrml_charts.COMPARE_LAYOUT_ID
    assert layout.GetViewArrangement() == mrml_charts.COMPARE_LAYOUT_ID
    assert "PlotView1" in layout.GetLayoutDescription(mrml_charts.COMPARE_LAYOUT_ID)
    assert mrml_charts.set_compare_layout(layout) == mrml_charts.COMPARE_LAYOUT_ID  # idempotent
    scene.RemoveNode(layout)


# ---- rendering --------------------------------------------------------------------------------
def _egl_available() -> tuple[bool, str]:
    try:
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow  # noqa: F401
    except ImportError as err:
        return False, f"VTK was built without EGL ({err})"
    window = vtkEGLRenderWindow()
    window.SetOffScreenRendering(1)
    ok = bool(window.SupportsOpenGL())
    window.Finalize()
    return ok, "EGL offscreen rendering is not available on this machine (no libEGL / GPU driver)"


def lesion_scene():
    """A 48³ body with a liver holding a lesion and a spleen; saliency peaks on the lesion and is
    negative over the spleen (negative evidence must not show as heat)."""
    n = 48
    shape = (n, n, n)
    k, j, i = np.indices(shape).astype(float)
    ct = np.full(shape, -1000, np.int16)
    ct[((i - 24) / 20) ** 2 + ((j - 24) / 16) ** 2 <= 1] = 40
    liver = ball(shape, (17, 24, 24), 9, scale_k=1.6)
    spleen = ball(shape, (33, 26, 24), 5, scale_k=1.6)
    lesion_ijk = (15.0, 22.0, 24.0)
    lesion = ball(shape, lesion_ijk, 3, scale_k=1.6)
    ct[liver], ct[spleen], ct[lesion] = 60, 50, 120
    volume = Volume(ct, (1.2, 1.2, 2.0), (-30.0, -25.0, 10.0), _rotation(0, 0, 15))
    r2 = (i - lesion_ijk[0]) ** 2 + (j - lesion_ijk[1]) ** 2 + ((k - lesion_ijk[2]) * 1.6) ** 2
    saliency = np.exp(-r2 / (2 * 3.0 ** 2)) - 0.3 * np.exp(-((i - 33) ** 2 + (j - 26) ** 2) / 32.0)
    return volume, volume.with_array(saliency.astype(np.float32)), {"liver": liver, "spleen": spleen}, lesion_ijk


LIVER, SPLEEN = (0.2, 0.8, 0.2), (0.2, 0.4, 1.0)


def test_rendered_slice_and_3d_views_show_heat_on_the_lesion(tmp_path):
    ok, reason = _egl_available()
    if not ok:
        pytest.skip(reason)
    from slicer import vtkMRMLColorLegendDisplayNode, vtkSlicerColorLogic

    app = ov.make_app()
    app.scene.RegisterNodeClass(vtkMRMLColorLegendDisplayNode())  # the Colors module does this in Slicer
    (red,), threed = ov.make_views(app, size=(300, 300))
    scene = app.scene
    ct, saliency, organs, lesion_ijk = lesion_scene()
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    ct_node.GetDisplayNode().AutoWindowLevelOff()
    ct_node.GetDisplayNode().SetWindowLevel(400, 40)
    sal_node = mrml.add_saliency_node(scene, saliency, ct_node, "hirescam liver", ct=ct)
    window = mrml.display_window(saliency)
    mrml.set_saliency_display(sal_node, window, threshold=0.2)
    # slice layers before the segmentation exists (trame-slicer adds the image actor lazily)
    assert mrml.show_in_slice_views(scene, ct_node, sal_node, opacity=0.6) == 1
    seg_node = mrml.add_segmentation_node(scene, organs, ct_node, app.segmentations_logic,
                                          {"liver": LIVER, "spleen": SPLEEN})
    mrml.show_segmentation(seg_node)
    vr_display = mrml.setup_volume_rendering(sal_node, app.volume_rendering._logic, window, threshold=0.2)
    assert vr_display.IsA("vtkMRMLCPURayCastVolumeRenderingDisplayNode")
    legend = mrml.add_color_legend(sal_node, vtkSlicerColorLogic)
    assert legend is not None and legend.GetTitleText() == "hirescam liver"

    lesion_ras = (ct.ijk_to_ras() @ np.array([*lesion_ijk, 1.0]))[:3]
    spleen_ras = (ct.ijk_to_ras() @ np.array([33.0, 26.0, 24.0, 1.0]))[:3]
    liver_far_ras = (ct.ijk_to_ras() @ np.array([21.0, 30.0, 24.0, 1.0]))[:3]  # liver, far from the lesion
    out = Path(os.environ.get("SI_PNG_DIR", tmp_path))

    red.fit_view_to_content()
    ov.jump_to(red, lesion_ras)
    red.render()
    slice_rgb = ov.capture(red, out / "mrml_slice_axial.png").astype(int)

    def patch(rgb, rc, half=2):
        r, c = rc
        return rgb[r - half:r + half + 1, c - half:c + half + 1].reshape(-1, 3).mean(axis=0)

    # what the overlay adds: the same view rendered again with the saliency layer hidden
    mrml.show_in_slice_views(scene, ct_node, sal_node, opacity=0.0)
    red.render()
    plain_rgb = ov.capture(red).astype(int)
    mrml.show_in_slice_views(scene, ct_node, sal_node, opacity=0.6)

    def check_heat(rgb, plain, target_rc, away_rc, what):
        changed = np.abs(rgb - plain).sum(axis=2) > 40
        rows, cols = np.nonzero(changed)
        assert rows.size > 60, f"{what}: the saliency changes almost nothing ({rows.size} pixels)"
        centre = rows.mean(), cols.mean()
        assert np.hypot(centre[0] - target_rc[0], centre[1] - target_rc[1]) < 6, \
            f"{what}: heat centred at {centre}, the lesion is at {target_rc}"
        assert not changed[away_rc[0] - 3:away_rc[0] + 4, away_rc[1] - 3:away_rc[1] + 4].any(), \
            f"{what}: heat over the spleen, where the map is negative"
        added = (rgb - plain)[changed]
        # heat colours (black-red-orange-yellow-white) add at least as much red as blue, also when
        # seen through a translucent organ surface
        warm = added[:, 0] >= added[:, 2] - 2
        assert warm.mean() > 0.95, f"{what}: {1 - warm.mean():.0%} of the overlay is not a heat colour"
        return int(rows.size)

    lesion_px = ov.ras_to_slice_pixel(red, lesion_ras)
    n_heat = check_heat(slice_rgb, plain_rgb, lesion_px, ov.ras_to_slice_pixel(red, spleen_ras), "slice view")
    spleen = patch(slice_rgb, ov.ras_to_slice_pixel(red, spleen_ras))
    liver = patch(slice_rgb, ov.ras_to_slice_pixel(red, liver_far_ras))
    corner = slice_rgb[3, 3]
    # negative saliency over the spleen and weak saliency in the rest of the liver are not heat:
    # plain CT grey there
    for name, rgb in (("spleen", spleen), ("liver", liver)):
        assert np.ptp(rgb) < 12 and 100 < rgb.mean() < 200, f"{name} should be CT grey, got {rgb}"
    assert corner.max() < 10  # air outside the window is black
    # organ outlines in the segment colours somewhere in the frame
    greenish = (slice_rgb[..., 1] > 150) & (slice_rgb[..., 0] < 120) & (slice_rgb[..., 2] < 120)
    bluish = (slice_rgb[..., 2] > 180) & (slice_rgb[..., 0] < 120)
    assert greenish.sum() > 30 and bluish.sum() > 30

    threed.set_background_color([25, 25, 35])
    ov.frame_3d(threed)
    threed.render()
    rgb_3d = ov.capture(threed, out / "mrml_threed.png").astype(int)
    spleen_3d = patch(rgb_3d, ov.ras_to_3d_pixel(threed, spleen_ras))
    assert spleen_3d[2] > spleen_3d[0] + 40, f"spleen surface should be blue in 3D: {spleen_3d}"
    assert np.abs(rgb_3d[3, 3] - [25, 25, 35]).max() < 3  # clean background (no depth-peeling garbage)

    # without the volume rendering the lesion spot is no longer heat-coloured: the heat is the map
    vr_display.SetVisibility(False)
    threed.render()
    plain_3d = ov.capture(threed).astype(int)
    n_heat_3d = check_heat(rgb_3d, plain_3d, ov.ras_to_3d_pixel(threed, lesion_ras),
                           ov.ras_to_3d_pixel(threed, spleen_ras), "3D view")
    print(f"heat pixels: slice view {n_heat}, 3D view {n_heat_3d}")
    for view in (red, threed):
        view.finalize()


def test_segments_export_as_labelmap_layers_with_duplicate_names(scene, app):
    """Slicer keeps non-overlapping segments in one layer: one export per layer comes back, duplicate
    names kept apart, every voxel of overlapping segments kept."""
    ct = oblique_ct(shape=(16, 20, 24))
    ct_node = mrml.add_volume_node(scene, ct, "CT")
    organ = ball(ct.shape, (12, 10, 8), 6)
    inside = ball(ct.shape, (12, 10, 8), 2)  # overlaps the organ: another layer
    beside = ball(ct.shape, (3, 3, 13), 2)
    seg_node = mrml.add_segmentation_node(scene, {"liver": organ, "lesion": inside, "spot": beside},
                                          ct_node, app.segmentations_logic)
    segmentation = seg_node.GetSegmentation()
    segmentation.GetSegment(segmentation.GetSegmentIDs()[2]).SetName("liver")  # Slicer allows it
    segmentation.CollapseBinaryLabelmaps(False)  # as Slicer stores them: non-overlapping share a layer
    slicer_layers = segmentation.GetNumberOfLayers()
    assert slicer_layers == 2
    segments = mrml.segments_from_node(seg_node, ct_node, app.segmentations_logic)
    assert segments.names == ["liver", "lesion", "liver (2)"]
    assert len(segments.layers) == slicer_layers < len(segments)
    for name, mask in (("liver", organ), ("lesion", inside), ("liver (2)", beside)):
        assert np.array_equal(segments.mask(name), mask), name
