"""Pictures and report a radiologist reads at a glance (issue 11, items 7-11).

Distinct organ colours (checked on the PNG's pixels), orientation letters checked against geometry,
one slice point for every method of a class, the model's decision per class, the peak's distance
to a mask, the topk identity said aloud, a lesion scored within its organ, and the warning for a
one-channel target layer.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from saliency_inspector.cli import main
from saliency_inspector.scoring.evaluation import evaluate, score_masks
from saliency_inspector.scoring.metrics import REFERENCE_KEYS
from saliency_inspector.scoring.thresholds import TOPK_NOTE
from saliency_inspector.io.segments import MIN_COLOR_DISTANCE, distinct_colors, read_segments
from saliency_inspector.io.volume import Volume, read_volume, write_volume
from saliency_inspector.synth.phantom import make_phantom, write_phantom_case
from saliency_inspector.view.display import LETTER_DIRECTIONS, segment_colors
from saliency_inspector.view.render import compose_overlay, render_overlay
from saliency_inspector.view.slices import slice_panels


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=2, size=(64, 64, 32), lesions=["liver"])


# ---- item 7: colours -----------------------------------------------------------------------------
def test_segment_colours_are_distinct_slicer_where_they_can_be(tmp_path, phantom):
    names = phantom.organs.names + phantom.lesions.names
    colours = distinct_colors(names)
    rgb = {n: np.asarray(c) * 255 for n, c in colours.items()}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.linalg.norm(rgb[a] - rgb[b]) >= MIN_COLOR_DISTANCE, (a, b)
    # Slicer's terminology colours where a name matches and stays distinct (liver: 221, 130, 101)
    assert tuple(np.round(rgb["liver"]).astype(int)) == (221, 130, 101)
    assert tuple(np.round(rgb["lesion_liver"]).astype(int)) == (144, 238, 144)  # "Mass"
    # the written segmentation carries them: lung_left and lung_right no longer share one colour
    write_phantom_case(phantom, tmp_path)
    organs = read_segments(tmp_path / "organs.seg.nrrd")
    assert np.linalg.norm(np.subtract(organs["lung_left"].color, organs["lung_right"].color)) * 255 >= MIN_COLOR_DISTANCE
    # colours from a file that are too alike (as TotalSegmentator's tans) are replaced for display
    from saliency_inspector.io.segments import Segment, Segments

    same = Segments([Segment(s.name, s.mask, (0.77, 0.65, 0.57)) for s in phantom.organs], phantom.organs.grid)
    shown = segment_colors(same)
    assert len({tuple(c) for c in shown.values()}) == len(shown)


def test_two_organs_outlines_differ_in_the_png(tmp_path, phantom):
    saliency = phantom.ct.with_array(phantom.lesions.mask("lesion_liver").astype(np.float32))
    lungs = phantom.organs.masks
    # an axial slice through both lungs
    k = int(np.argmax(np.minimum(lungs["lung_left"].sum(axis=(1, 2)), lungs["lung_right"].sum(axis=(1, 2)))))
    point = phantom.ct.index_to_physical([(phantom.ct.size_xyz[0] - 1) / 2, (phantom.ct.size_xyz[1] - 1) / 2, k])
    png = imread(render_overlay(phantom.ct, saliency, phantom.organs, tmp_path / "o.png", point=point,
                                with_3d=False))[..., :3]
    overlay = compose_overlay(phantom.ct, saliency, phantom.organs, point=point, with_3d=False)
    colours = segment_colors(phantom.organs)
    panel = overlay.panels["axial"]
    r0, c0 = overlay.offsets["axial"]
    h, w = panel.rgb.shape[:2]
    axial = np.round(png[r0:r0 + h, c0:c0 + w] * 255).astype(int)
    found = {}
    for name in ("lung_left", "lung_right"):
        want = np.round(np.asarray(colours[name]) * 255).astype(int)
        rows, cols = np.nonzero(np.all(axial == want, axis=-1))
        assert rows.size > 10, name
        found[name] = cols.mean()
    # two different outline colours, each on its own side: left lung on the image's right (radiological)
    assert np.linalg.norm(np.subtract(colours["lung_left"], colours["lung_right"])) * 255 >= MIN_COLOR_DISTANCE
    assert found["lung_left"] > w / 2 > found["lung_right"]


# ---- orientation letters against geometry ---------------------------------------------------------
def test_every_panels_letters_point_where_the_geometry_goes(phantom):
    """A point offset from the lesion towards each letter's direction projects to that letter's side.

    The letters checked are the ones drawn (``panel.letters``); swapping the axial R and L breaks it.
    """
    lesion = phantom.lesions.mask("lesion_liver")
    k, j, i = (v.mean() for v in np.nonzero(lesion))
    centre = phantom.ct.index_to_physical([i, j, k])
    saliency = phantom.ct.with_array(lesion.astype(np.float32))
    for oblique_ct in (phantom.ct, make_phantom(seed=2, size=(48, 48, 24), oblique=True).ct):
        for panel in slice_panels(oblique_ct, oblique_ct.with_array(np.zeros(oblique_ct.shape, np.float32)),
                                  point=centre, panel_px=120) if oblique_ct is not phantom.ct else \
                slice_panels(phantom.ct, saliency, point=centre, panel_px=120):
            row0, col0 = panel.project(centre)
            left, right, top, bottom = panel.letters
            for letter, side in ((left, "left"), (right, "right"), (top, "top"), (bottom, "bottom")):
                row, col = panel.project(centre + 30.0 * np.asarray(LETTER_DIRECTIONS[letter], float))
                moved = {"left": col0 - col, "right": col - col0, "top": row0 - row, "bottom": row - row0}[side]
                assert moved > 5, (panel.name, letter, side)


def test_3d_orientation_marker_follows_the_camera(phantom):
    saliency = phantom.ct.with_array(phantom.lesions.mask("lesion_liver").astype(np.float32))
    overlay = compose_overlay(phantom.ct, saliency, phantom.organs, panel_px=120)
    axes = overlay.axes3d
    assert set(axes) == {"R", "A", "S"}
    assert axes["R"][1] < -0.5  # seen from the front: the patient's right on the image's left
    assert axes["S"][0] < -0.5  # superior up
    assert abs(axes["A"][1]) < 0.9 and axes["A"][0] > 0  # anterior points towards the viewer, tilted by the rotation


# ---- items 8, 9, 11: the demo's pictures and report ------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_cpu):
    from saliency_inspector.workflows.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_demo(out, device="cpu", size=(64, 64, 32), classifier=demo_cpu,
                          panel_px=140)
    return out, result


def test_every_method_of_a_class_is_sliced_at_the_class_lesion(demo):
    out, result = demo
    case = make_phantom(seed=0, size=(64, 64, 32), lesions=None, lesion_scale=1.8)
    lesion = case.lesions.mask("lesion_liver")
    k, j, i = (v.mean() for v in np.nonzero(lesion))
    point, label = result.slice_points["liver"]
    np.testing.assert_allclose(point, case.ct.index_to_physical([i, j, k]), atol=1e-6)
    assert "lesion" in label
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"LPS ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm" in html
    # classes without a lesion are sliced at their organ's centre
    assert "organ" in result.slice_points["lung_left"][1]


def test_report_says_the_decision_validation_and_cell_size(demo):
    out, result = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    for p in result.predictions:
        decision = "present" if p["probability"] >= p["threshold"] else "absent"
        row = html[html.index(f"<td class='name'>{p['class']}</td><td>{p['probability']:.3f}"):]
        row = row[:row.index("</tr>")]
        assert f">{decision}</td>" in row and f"{p['threshold']:.2f}" in row
        assert f"{p['validation_roc_auc']:.2f}" in row  # from the card's validation section
    assert "feature cell" in html and "25.0 × 25.0 × 37.5 mm" in html  # 400/16 × 400/16 × 300/8
    # the demo model's target layer has 8 channels: no single-channel warning (it is tested below)
    assert "single channel" not in html and "same picture for every class" not in html


def test_single_channel_layer_warns_and_many_channels_do_not():
    from saliency_inspector.explainers.explanation import explain
    from saliency_inspector.models.card import ModelCard
    from saliency_inspector.models.loaders import Classifier

    def net(channels):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(1, channels, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool3d(2), torch.nn.Flatten(), torch.nn.Linear(8 * channels, 3))

    ct = Volume(np.random.default_rng(0).normal(0, 100, (8, 10, 12)).astype(np.float32))
    for channels, expect in ((1, True), (4, False)):
        card = ModelCard.from_dict({"classes": ["a", "b", "c"], "target_layer": "1", "input": {"size": None}})
        said = []
        res = explain(Classifier(net(channels), card, torch.device("cpu")), ct, classes="all", progress=said.append)
        warned = bool(res.info["warnings"])
        assert warned == expect and any("single channel" in m for m in said) == expect
        if channels == 1:  # and it is true: Grad-CAM maps of two classes are proportional
            a, b = (res.map("gradcam", c).array.ravel() for c in ("a", "b"))
            assert abs(np.corrcoef(a, b)[0, 1]) > 0.999


# ---- item 10: metrics ------------------------------------------------------------------------------
def test_peak_distance_is_the_distance_to_the_mask_in_mm():
    saliency = np.zeros((10, 20, 30), np.float32)
    saliency[5, 10, 3] = 1.0
    saliency[5, 10, 4] = 0.5
    mask = np.zeros(saliency.shape, bool)
    mask[5, 10, 20:25] = True  # 17 voxels along x from the peak
    for spacing in ((1.0, 1.0, 1.0), (0.7, 2.0, 3.0)):
        table = score_masks(saliency, {"m": mask}, spacing=spacing)
        assert table.row("m")["peak_distance_mm"] == pytest.approx(17 * spacing[0])
        assert table.row("m")["pointing_game"] == 0.0
    mask[5, 10, 3] = True
    assert score_masks(saliency, {"m": mask}).row("m")["peak_distance_mm"] == 0.0
    mask[2:9, 5:16, 0:10] = True  # the peak deep inside a solid mask (not on its surface): 0 too
    assert score_masks(saliency, {"m": mask}).row("m")["peak_distance_mm"] == 0.0
    # against brute force over every mask voxel: a blobby mask, peaks outside it, anisotropic voxels
    rng = np.random.default_rng(3)
    spacing = (0.7, 2.0, 3.0)
    for _ in range(5):
        blob = rng.random(saliency.shape) < 0.002
        blob[3:7, 4:12, 18:27] = True
        peak = tuple(int(rng.integers(0, n)) for n in saliency.shape)
        blob[peak] = False
        one = np.zeros(saliency.shape, np.float32)
        one[peak] = 1.0
        brute = np.min(np.linalg.norm((np.argwhere(blob) - peak) * np.asarray(spacing)[::-1], axis=1))
        got = score_masks(one, {"m": blob}, spacing=spacing).row("m")["peak_distance_mm"]
        assert got == pytest.approx(brute, rel=1e-12)


def test_topk_identity_is_said_and_reference_levels_are_not_scores(tmp_path):
    rng = np.random.default_rng(1)
    saliency = rng.random((12, 14, 16)).astype(np.float32)
    masks = {"a": np.zeros(saliency.shape, bool)}
    masks["a"][2:8, 3:9, 4:10] = True
    topk = score_masks(saliency, masks)
    row = topk.row("a")
    assert row["dice"] == row["ioa"] == row["rank_accuracy"]  # the identity the note states
    assert TOPK_NOTE in topk.notes and "by construction" in topk.format()
    otsu = score_masks(saliency, masks, threshold="otsu")
    assert TOPK_NOTE not in otsu.notes and otsu.row("a")["dice"] != otsu.row("a")["ioa"]
    assert REFERENCE_KEYS == {"auprc_chance", "mass_baseline"}
    from saliency_inspector.view.report import write_report

    html = write_report(tmp_path / "r.html", tables={("hirescam", "x"): topk}).read_text()
    assert html.count("reference level (not a score)") == 2 and "by construction" in html


def test_a_lesion_is_scored_within_its_organ_from_another_file(tmp_path, capfd, phantom):
    write_phantom_case(phantom, tmp_path / "case")
    ct = phantom.ct
    lesion = phantom.lesions.mask("lesion_liver")
    liver = phantom.organs.mask("liver")
    rng = np.random.default_rng(0)
    saliency = (lesion * 2.0 + rng.random(ct.shape)).astype(np.float32)
    write_volume(ct.with_array(saliency), tmp_path / "map.nrrd")
    code = main(["evaluate", str(tmp_path / "map.nrrd"), "--masks", str(tmp_path / "case" / "lesions.seg.nrrd"),
                 "--region", "liver", "--region-masks", str(tmp_path / "case" / "organs.seg.nrrd"),
                 "--json", str(tmp_path / "rows.json")])
    assert code == 0, capfd.readouterr().err
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    expected = evaluate(ct.with_array(saliency), {"lesion_liver": lesion}, region=liver).row("lesion_liver")
    assert row["region"].startswith("liver") and "organs.seg.nrrd" in row["region"]
    assert row["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-12)
    assert row["mask_voxels"] == int((lesion & liver).sum())


def test_shared_colour_scale_keeps_the_weaker_map_weaker(phantom):
    from saliency_inspector.view.display import display_map

    lesion = phantom.lesions.mask("lesion_liver").astype(np.float32)
    strong, weak = phantom.ct.with_array(lesion * 4.0), phantom.ct.with_array(lesion * 1.0)
    assert display_map(weak).array.max() == 1.0  # each map on its own scale: both look the same
    shared = max(float(strong.array.max()), float(weak.array.max()))
    assert display_map(weak, scale=shared).array.max() == pytest.approx(0.25)
    assert display_map(strong, scale=shared).array.max() == 1.0
    # in the picture: at threshold 0.3 the weak map shows no heat on the shared scale
    k, j, i = (v.mean() for v in np.nonzero(lesion))
    point = phantom.ct.index_to_physical([i, j, k])
    own = slice_panels(phantom.ct, weak, point=point, threshold=0.3, panel_px=100)[0].rgb
    on_shared = slice_panels(phantom.ct, weak, point=point, threshold=0.3, panel_px=100, scale=shared)[0].rgb
    heat = lambda rgb: ((rgb[..., 0] > 0.75) & (rgb[..., 0] - rgb[..., 2] > 0.35)).sum()  # noqa: E731
    assert heat(own) > 5 and heat(on_shared) == 0


def test_peak_distance_never_writes_into_the_callers_masks():
    """The peak-distance search ANDs the mask with the region in place only on arrays it made itself
    (a labelmap == label); a caller's boolean mask is read, never modified."""
    saliency = np.zeros((10, 20, 30), np.float32)
    saliency[5, 10, 3] = 1.0
    mask = np.zeros(saliency.shape, bool)
    mask[2:8, 5:15, 10:25] = True
    region = np.ones(saliency.shape, bool)
    region[:, :, 10:12] = False  # cuts the mask's near edge, inside the first search box
    before = mask.copy()
    row = score_masks(saliency, {"m": mask}, region=region).row("m")
    assert row["peak_distance_mm"] == pytest.approx(9.0)  # x 3 -> 12, the first mask voxel in the region
    np.testing.assert_array_equal(mask, before)
