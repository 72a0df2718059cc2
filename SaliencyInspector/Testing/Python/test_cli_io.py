"""CLI input/output: `phantom` writes a case; bad files give a one-line error and exit code 2.

Each bad input (missing, unreadable, 2D, 4D, masks that cannot be matched to the image) must
produce `saliency-inspector: error: <file>: <problem>` on one line, no traceback, and leave the
user's files byte-for-byte and mtime unchanged.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from saliency_inspector.cli import main
from saliency_inspector.io.segments import Segment, Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, read_volume, write_volume


def snapshot(paths):
    return {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *must_contain):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("saliency-inspector: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in must_contain:
        assert str(text) in lines[0], (text, lines[0])


def test_phantom_command_writes_a_case(tmp_path, capsys):
    out = tmp_path / "case"
    code, stdout, _ = run_cli(capsys, "phantom", "--out", out, "--seed", 7, "--size", 40, 36, 24,
                              "--lesion", "liver", "--lesion", "kidney_right", "--oblique")
    assert code == 0
    for name in ["ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd", "case.json"]:
        assert (out / name).is_file() and str(out / name) in stdout
    ct = read_volume(out / "ct.nrrd")
    assert ct.size_xyz == (40, 36, 24) and ct.array.dtype == np.int16
    assert not np.allclose(ct.direction, np.eye(3))
    lesions = read_segments(out / "lesions.seg.nrrd", reference=ct)
    assert lesions.names == ["lesion_liver", "lesion_kidney_right"]
    organs = read_segments(out / "organs.seg.nrrd", reference=ct)
    assert not (lesions.mask("lesion_kidney_right") & ~organs.mask("kidney_right")).any()
    info = json.loads((out / "case.json").read_text())
    assert info["seed"] == 7 and [d["organ"] for d in info["lesions"]] == ["liver", "kidney_right"]


def test_phantom_command_bad_values(tmp_path, capsys):
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path / "x", "--lesion", "pancreas", "--size", 24, 24, 16)
    assert_clean_error(code, err, "pancreas")
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path / "y", "--size", 2, 2, 2)
    assert_clean_error(code, err, "size")
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path / "z", "--size", 24, 24, 16, "--lesion-scale", 0)
    assert_clean_error(code, err, "lesion_scale")


@pytest.fixture
def masks_and_map(tmp_path):
    grid = Volume(np.zeros((10, 12, 14), np.float32), spacing=(2.0, 2.0, 3.0), origin=(-10.0, 5.0, 20.0))
    organ = np.zeros(grid.shape, bool)
    organ[3:7, 4:9, 5:10] = True
    seg_path = write_segments(Segments([Segment("liver", organ, (0.9, 0.5, 0.4))], grid), tmp_path / "organs.seg.nrrd")
    map_path = write_volume(grid.with_array(organ.astype(np.float32)), tmp_path / "map.nrrd")
    return grid, seg_path, map_path


def test_missing_map(tmp_path, capsys, masks_and_map):
    _, seg_path, _ = masks_and_map
    missing = tmp_path / "missing.nrrd"
    before = snapshot([seg_path])
    code, _, err = run_cli(capsys, "evaluate", missing, "--masks", seg_path)
    assert_clean_error(code, err, missing, "not found")
    assert snapshot([seg_path]) == before


def test_missing_ct_for_explain(tmp_path, capsys):
    missing = tmp_path / "nope" / "ct.nii.gz"
    code, _, err = run_cli(capsys, "explain", missing, "--model", "demo", "--out", tmp_path / "o")
    assert_clean_error(code, err, missing, "not found")


def test_unreadable_map(tmp_path, capsys, masks_and_map):
    _, seg_path, _ = masks_and_map
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip" * 20)
    before = snapshot([bad, seg_path])
    code, _, err = run_cli(capsys, "evaluate", bad, "--masks", seg_path)
    assert_clean_error(code, err, bad)
    assert snapshot([bad, seg_path]) == before


def test_2d_and_4d_maps(tmp_path, capsys, masks_and_map):
    _, seg_path, _ = masks_and_map
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkFloat32), str(flat))
    series = tmp_path / "series.nrrd"
    sitk.WriteImage(sitk.JoinSeries([sitk.Image([6, 6, 4], sitk.sitkFloat32)] * 2), str(series))
    before = snapshot([flat, series, seg_path])
    code, _, err = run_cli(capsys, "evaluate", flat, "--masks", seg_path)
    assert_clean_error(code, err, flat, "2D")
    code, _, err = run_cli(capsys, "evaluate", series, "--masks", seg_path)
    assert_clean_error(code, err, series, "4D")
    assert snapshot([flat, series, seg_path]) == before


def test_masks_whose_geometry_cannot_be_matched(tmp_path, capsys, masks_and_map):
    grid, _, map_path = masks_and_map
    far_grid = Volume(np.zeros(grid.shape), grid.spacing, origin=(800.0, 800.0, 800.0))
    far = write_segments(Segments([Segment("liver", np.ones(grid.shape, bool))], far_grid), tmp_path / "far.seg.nrrd")
    before = snapshot([far, map_path])
    code, _, err = run_cli(capsys, "evaluate", map_path, "--masks", far, "--ct", map_path)
    assert_clean_error(code, err, far, "do not overlap")
    assert snapshot([far, map_path]) == before


def test_missing_masks(tmp_path, capsys, masks_and_map):
    _, _, map_path = masks_and_map
    missing = tmp_path / "organs_missing.seg.nrrd"
    code, _, err = run_cli(capsys, "evaluate", map_path, "--masks", missing)
    assert_clean_error(code, err, missing, "not found")
