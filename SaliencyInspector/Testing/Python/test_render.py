"""Pictures: pixels of the written PNG, geometry of the panels, the 3D view, the `render` command."""

import numpy as np
import pytest
from matplotlib.image import imread

from saliency_inspector.errors import InputError
from saliency_inspector.view.display import BACKGROUND, DEFAULT_WINDOW, display_map, peak_point, PEAK_CROSS_COLOR
from saliency_inspector.view.render import compose_overlay, render_overlay
from saliency_inspector.view.render3d import render_3d
from saliency_inspector.view.slices import slice_panels
from saliency_inspector.io.segments import Segment, Segments
from saliency_inspector.io.volume import Volume

# outline colours the pictures keep as they are (green, purple: outside the heat and negative scales)
LIVER_RGB = (0.2, 0.85, 0.3)
LUNG_RGB = (0.65, 1.0, 0.4)
LESION = np.array([-30.0, 4.0, -10.0])  # LPS mm: on the patient's right (-x), a bit inferior


def rotation_z(degrees):
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def make_case(direction=None, size=(40, 36, 16), spacing=(2.0, 2.0, 5.0)):
    """Tiny anisotropic CT (soft tissue 40 HU in a body, -1000 outside), liver and left lung masks,
    and a signed Gaussian saliency map peaking at LESION."""
    nx, ny, nz = size
    origin = -np.asarray(spacing) * (np.asarray(size) - 1) / 2
    if direction is not None:  # keep the field of view centred on (0, 0, 0)
        origin = np.asarray(direction) @ origin
    grid = Volume(np.zeros((nz, ny, nx), np.int16), spacing, origin, direction)
    k, j, i = np.mgrid[0:nz, 0:ny, 0:nx]
    p = grid.index_to_physical(np.stack([i, j, k], axis=-1))
    body = (p[..., 0] / 36) ** 2 + (p[..., 1] / 30) ** 2 <= 1
    liver = np.linalg.norm((p - [-28, 2, -8]) / [14, 14, 22], axis=-1) <= 1
    lung = np.linalg.norm((p - [24, 0, 15]) / [10, 12, 20], axis=-1) <= 1
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[lung] = -850
    ct = grid.with_array(hu)
    saliency = grid.with_array((np.exp(-np.sum((p - LESION) ** 2, -1) / (2 * 8.0 ** 2)) - 0.1).astype(np.float32))
    organs = Segments([Segment("liver", liver, LIVER_RGB), Segment("lung_left", lung, LUNG_RGB)], grid)
    return ct, saliency, organs


def is_heat(rgb):
    r, g, b = (float(c) for c in rgb[:3])
    return r > 0.75 and r - b > 0.35


def test_display_map_is_relu_over_max_and_peak_is_the_argmax():
    ct, saliency, _ = make_case()
    shown = display_map(saliency).array
    raw = saliency.array
    np.testing.assert_allclose(shown, np.maximum(raw, 0) / raw.max(), rtol=1e-6)
    assert shown.min() == 0 and shown.max() == pytest.approx(1.0)
    # the peak voxel is the grid point nearest to LESION
    assert np.linalg.norm(peak_point(saliency) - LESION) <= np.linalg.norm(np.asarray(saliency.spacing)) / 2


@pytest.mark.slow
def test_png_shows_heat_at_the_lesion_grey_ct_and_organ_outlines(tmp_path):
    ct, saliency, organs = make_case()
    out = render_overlay(ct, saliency, organs, tmp_path / "overlay.png", title="liver / hirescam", with_3d=False)
    png = imread(out)[..., :3]
    overlay = compose_overlay(ct, saliency, organs, with_3d=False)
    assert png.shape == overlay.image.shape  # one PNG pixel per composed pixel

    # heat colours at the lesion in every panel (the slices pass through the peak)
    for name in ("axial", "coronal", "sagittal"):
        row, col = (int(round(v)) for v in overlay.project(name, LESION))
        assert is_heat(png[row, col]), (name, png[row, col])

    # CT greys elsewhere: soft tissue 40 HU in the [-160, 240] window is exactly mid-grey
    lo, hi = DEFAULT_WINDOW
    expected = round((40 - lo) / (hi - lo) * 255) / 255
    row, col = (int(round(v)) for v in overlay.project("axial", [0.0, -20.0, LESION[2]]))
    np.testing.assert_allclose(png[row, col], [expected] * 3, atol=1 / 255)

    # organ outline colours are present (liver in the panels through the lesion)
    colours = {tuple(np.round(c * 255).astype(int)) for c in png.reshape(-1, 3)}
    assert tuple(np.round(np.asarray(LIVER_RGB) * 255).astype(int)) in colours
    # and pixels away from text equal the composed image exactly
    r0, c0 = overlay.offsets["axial"]
    h, w = overlay.panels["axial"].rgb.shape[:2]
    crop = (slice(r0 + h // 4, r0 + 3 * h // 4), slice(c0 + w // 4, c0 + 3 * w // 4))
    np.testing.assert_allclose(png[crop], overlay.image[crop] / 255, atol=1 / 255)


def test_panels_have_true_proportions_and_radiological_orientation():
    ct, saliency, organs = make_case(size=(40, 36, 16), spacing=(2.0, 2.0, 5.0))
    panels = {p.name: p for p in slice_panels(ct, saliency, organs, panel_px=200)}
    # field of view 80 x 72 x 80 mm: one pixel size for all panels, proportions kept
    for name, (w_mm, h_mm) in {"axial": (80, 72), "coronal": (80, 80), "sagittal": (72, 80)}.items():
        h, w = panels[name].rgb.shape[:2]
        assert abs(w * panels[name].pixel_mm - w_mm) <= panels[name].pixel_mm
        assert abs(h * panels[name].pixel_mm - h_mm) <= panels[name].pixel_mm
    # the lesion lies on the patient's right (-x): image left in axial and coronal
    for name in ("axial", "coronal"):
        row, col = panels[name].project(LESION)
        assert col < panels[name].rgb.shape[1] / 2
        assert is_heat(panels[name].rgb[int(round(row)) + 2, int(round(col)) + 2])  # beside the peak's cross
    # the left lung (+x, superior) is on the image right and, in the coronal panel, in the upper half
    lung_colour = np.all(np.isclose(panels["coronal"].rgb, LUNG_RGB), axis=-1)
    rows, cols = np.nonzero(lung_colour)
    assert cols.mean() > panels["coronal"].rgb.shape[1] / 2
    assert rows.mean() < panels["coronal"].rgb.shape[0] / 2
    # anterior (-y) is up in the axial panel and on the left in the sagittal panel
    anterior = LESION + [0, -10, 0]
    assert panels["axial"].project(anterior)[0] < panels["axial"].project(LESION)[0]
    assert panels["sagittal"].project(anterior)[1] < panels["sagittal"].project(LESION)[1]


def test_oblique_ct_is_sampled_in_physical_space():
    ct, saliency, organs = make_case(direction=rotation_z(25))
    assert not np.allclose(ct.direction, np.eye(3))
    panels = {p.name: p for p in slice_panels(ct, saliency, organs)}
    for name, panel in panels.items():
        row, col = panel.project(LESION)
        assert is_heat(panel.rgb[int(round(row)) + 2, int(round(col)) + 2]), name  # beside the peak's cross
        peak_row, peak_col = (int(round(v)) for v in panel.project(peak_point(saliency)))
        assert np.allclose(panel.rgb[peak_row, peak_col], PEAK_CROSS_COLOR), name  # the peak is marked
    # a point 30 mm away from the lesion shows no heat
    row, col = panels["axial"].project(LESION + [30, 0, 0])
    assert not is_heat(panels["axial"].rgb[int(round(row)), int(round(col))])


def test_3d_view_shows_heat_on_the_patients_right_and_organ_surfaces():
    ct, saliency, organs = make_case()
    image = render_3d(saliency, organs, size=(160, 200)).astype(float) / 255
    assert image.shape == (160, 200, 3)
    heat = (image[..., 0] > 0.7) & (image[..., 0] - image[..., 2] > 0.35)
    assert heat.sum() > 20
    # seen from the front, the patient's right (the lesion) is on the image's left
    assert np.nonzero(heat)[1].mean() < image.shape[1] / 2
    # the lung surface (lime: green well above blue, and not heat) appears on the other side
    lime = (image[..., 1] > image[..., 2] + 0.15) & (image[..., 1] > image[..., 0]) & (image[..., 1] > 0.2)
    assert lime.sum() > 20 and np.nonzero(lime)[1].mean() > image.shape[1] / 2


def test_map_outside_the_ct_is_an_input_error(tmp_path):
    ct, saliency, organs = make_case()
    far = Volume(saliency.array, saliency.spacing, (5000.0, 5000.0, 5000.0))
    with pytest.raises(InputError, match="does not overlap"):
        render_overlay(ct, far, organs, tmp_path / "x.png", with_3d=False)
    assert not (tmp_path / "x.png").exists()


def test_render_command_writes_the_png(tmp_path, capsys):
    from saliency_inspector.cli import main
    from saliency_inspector.io.segments import write_segments
    from saliency_inspector.io.volume import write_volume

    ct, saliency, organs = make_case()
    write_volume(ct, tmp_path / "ct.nrrd")
    write_volume(saliency, tmp_path / "map.nrrd")
    write_segments(organs, tmp_path / "organs.seg.nrrd")
    out = tmp_path / "pics" / "overlay.png"
    code = main(["render", str(tmp_path / "ct.nrrd"), str(tmp_path / "map.nrrd"),
                 "--masks", str(tmp_path / "organs.seg.nrrd"), "--out", str(out)])
    assert code == 0 and str(out) in capsys.readouterr().out
    png = imread(out)[..., :3]
    assert (np.abs(png[..., 0] - png[..., 2]) > 0.35).sum() > 50  # heat pixels
    assert main(["render", str(tmp_path / "missing.nrrd"), str(tmp_path / "map.nrrd"), "--out", str(out)]) == 2


def test_map_without_positive_values_shows_the_ct_centre_without_heat():
    ct, saliency, organs = make_case()
    negative = saliency.with_array(-np.abs(saliency.array) - 1)
    overlay = compose_overlay(ct, negative, organs, with_3d=False)
    assert overlay.notes and "no positive values" in overlay.notes[0]
    centre = ct.index_to_physical((np.asarray(ct.size_xyz) - 1) / 2)
    np.testing.assert_allclose(overlay.panels["axial"].point, centre)
    # every pixel is a CT grey, the outside-the-field background or an outline colour: no heat anywhere
    allowed = np.array([BACKGROUND, LIVER_RGB, LUNG_RGB])
    for panel in overlay.panels.values():
        rgb = panel.rgb.reshape(-1, 3)
        grey = np.ptp(rgb, axis=1) == 0
        known = np.any(np.all(np.isclose(rgb[:, None, :], allowed[None]), axis=-1), axis=1)
        assert np.all(grey | known)
