"""Pictures as a clinician reads them (issue 23): outlines never in heat colours, one body colour
everywhere, the peak cross only where the peak is, negative evidence of signed maps in blue, a loud
note for a class the model calls absent, the kidney class sliced through a kidney, units in heads."""

from __future__ import annotations

import colorsys
import json

import numpy as np

from saliency_inspector.io.volume import Volume, write_volume
from saliency_inspector.view.display import BODY_COLOR, LESION_COLOR, PEAK_CROSS_COLOR, peak_point, segment_colors
from saliency_inspector.view.slices import slice_panels


def test_outline_colours_stay_out_of_the_heat_scale_and_the_body_keeps_one_colour(small_phantom):
    organs, lesions = small_phantom.organs, small_phantom.lesions
    both = segment_colors([organs, lesions])
    alone = segment_colors(organs)
    assert both["body"] == alone["body"] == BODY_COLOR  # was pink in demo, yellow in render
    for name, rgb in both.items():
        hue, _l, sat = colorsys.rgb_to_hls(*rgb)
        if name != "body":
            assert sat >= 0.3 and not (hue * 360 < 75 or hue * 360 > 325), (name, rgb)  # no red/orange/yellow
            assert not (165 < hue * 360 < 255), (name, rgb)  # nor the blue of negative evidence or the cyan cross
    organ_colours = [both[n] for n in organs.names]
    assert len(set(organ_colours)) == len(organ_colours)
    assert all(both[n] == LESION_COLOR for n in lesions.names)  # the truth: one colour, not an organ's
    assert all(both[n] == alone[n] for n in organs.names)  # the organs look the same in every picture


def _blob_case(sign=1.0):
    ct = Volume(np.full((30, 40, 40), 40, np.int16), (2.0, 2.0, 2.0), (-40.0, -40.0, -30.0))
    z, y, x = np.mgrid[:30, :40, :40]
    blob = np.exp(-((x - 12) ** 2 + (y - 20) ** 2 + (z - 15) ** 2) / 20.0).astype(np.float32)
    minus = np.exp(-((x - 30) ** 2 + (y - 20) ** 2 + (z - 15) ** 2) / 20.0).astype(np.float32)
    return ct, ct.with_array(blob - sign * 0.8 * minus)


def test_the_peak_cross_is_drawn_only_on_slices_through_the_peak():
    ct, saliency = _blob_case()
    peak = peak_point(saliency)
    panels = {p.name: p for p in slice_panels(ct, saliency, point=peak + [0, 0, 20.0])}  # 20 mm above it
    cyan = {n: np.all(np.isclose(p.rgb, PEAK_CROSS_COLOR), axis=-1).sum() for n, p in panels.items()}
    assert cyan["axial"] == 0  # the axial plane is 20 mm from the peak: no cross there
    assert cyan["coronal"] > 5 and cyan["sagittal"] > 5  # these planes go through the peak


def test_negative_evidence_of_a_signed_map_is_blue_and_hidden_when_unsigned():
    ct, saliency = _blob_case()
    minus = ct.index_to_physical([30, 20, 15])
    signed = {p.name: p for p in slice_panels(ct, saliency, signed=True)}
    relu = {p.name: p for p in slice_panels(ct, saliency)}
    row, col = (int(round(v)) for v in signed["axial"].project(minus))
    r, g, b = signed["axial"].rgb[row, col]
    assert b > r + 0.2 and b > g  # blue: against the class
    assert np.ptp(relu["axial"].rgb[row, col]) == 0  # ReLU: a plain CT grey, nothing shown


def test_render_says_loudly_when_the_class_is_called_absent(tmp_path):
    from saliency_inspector.cli_render import _render_context

    ct, saliency = _blob_case()
    write_volume(saliency, tmp_path / "hirescam_liver.nrrd")
    write_volume(saliency.with_array(saliency.array * 10), tmp_path / "hirescam_kidney.nrrd")
    (tmp_path / "predictions.json").write_text(json.dumps({
        "class_names": ["liver", "kidney"], "probabilities": [0.02, 0.9], "multilabel": True}))
    title, signed, banner = _render_context(tmp_path / "hirescam_liver.nrrd")
    assert title == "HiResCAM · class liver · p = 0.02" and signed
    assert banner.startswith("ABSENT (p = 0.02)") and "×10.0" in banner
    assert _render_context(tmp_path / "hirescam_kidney.nrrd")[2] is None  # present: no banner


def test_the_kidney_class_is_sliced_through_a_kidney_not_the_midline(small_phantom):
    from saliency_inspector.workflows.demo import _class_point

    case = small_phantom
    left = case.organs.mask("kidney_left")
    heat = case.ct.with_array(left.astype(np.float32))  # the map sits on the left kidney
    point, label = _class_point(case, "kidney", heat, peak_point)
    k, j, i = np.rint(case.ct.physical_to_index(point)[::-1]).astype(int)
    assert left[k, j, i], label  # inside the left kidney (the union's centre lay between the kidneys)
    assert "kidney_left" in label


def test_the_report_heads_carry_units():
    from saliency_inspector.view.report import _metrics_table_html

    html = _metrics_table_html([{"segment": "liver", "peak_distance_mm": 3.0}])
    assert "Peak distance (mm)" in html
