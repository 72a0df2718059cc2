"""DICOM as it comes: several series, rescale slope/intercept, uneven slices; broken directions."""

import hashlib

import numpy as np
import pydicom
import pytest

from dicom_series import write_dicom_series
from saliency_inspector.cli import main
from saliency_inspector.errors import InputError
from saliency_inspector.io.volume import Volume, read_volume

CT_UID, SMALL_UID, MR_UID = "1.2.826.0.1.3680043.2.1125.7.1", "1.2.826.0.1.3680043.2.1125.7.2", "1.2.826.0.1.3680043.2.1125.7.3"


def volume(slices, seed=0):
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1000, 1200, (slices, 10, 12)).astype(np.int16), (0.8, 0.8, 2.5),
                  (-4.0, -4.0, 30.0), np.diag([1.0, -1.0, -1.0]))


def folder_digest(folder):
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


@pytest.fixture
def mixed(tmp_path):
    """A PACS export: a 12-slice CT, a 6-slice CT reconstruction and a 20-slice MR in one folder."""
    folder = tmp_path / "export"
    ct, small, mr = volume(12, 1), volume(6, 2), volume(20, 3)
    write_dicom_series(ct, folder, series_uid=CT_UID, prefix="ct")
    write_dicom_series(small, folder, series_uid=SMALL_UID, prefix="small")
    write_dicom_series(mr, folder, series_uid=MR_UID, modality="MR", prefix="mr")
    return folder, ct, small


def test_largest_ct_series_by_default_with_a_note_and_series_to_choose(mixed):
    folder, ct, small = mixed
    notes = []
    back = read_volume(folder, note=notes.append)
    assert np.array_equal(back.array, ct.array)  # not the 20-slice MR
    assert len(notes) == 1 and CT_UID in notes[0] and "--series" in notes[0]
    chosen = read_volume(folder, series=SMALL_UID)
    assert np.array_equal(chosen.array, small.array)


def test_cli_series_errors_are_one_line_exit_2_and_files_untouched(mixed, tmp_path, capsys):
    folder, _ct, _small = mixed
    before = folder_digest(folder)
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--model", "demo", "--series", "1.2.3.4", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--series 1.2.3.4: no such series" in err[0] and CT_UID in err[0]
    only_mr = tmp_path / "mr"
    write_dicom_series(volume(8), only_mr, series_uid=MR_UID, modality="MR")
    assert main(["explain", str(only_mr), "--model", "demo", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "no CT series" in err[0] and "MR, 8 slices" in err[0]
    assert folder_digest(folder) == before and not out.exists()


def test_uint16_with_intercept_minus_1024_gives_hounsfield_units(tmp_path):
    hu = volume(5)
    folder = write_dicom_series(hu, tmp_path / "ct", intercept=-1024)
    for path in sorted(folder.iterdir()):  # store them as many scanners do: unsigned raw = HU + 1024
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)  # back to HU
        ds.PixelRepresentation = 0
        ds.PixelData = (raw + 1024).astype(np.uint16).tobytes()
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.save_as(path)
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert ds.PixelRepresentation == 0 and ds.pixel_array.dtype == np.uint16 and ds.pixel_array.min() >= 0
    back = read_volume(folder)
    assert back.array.min() < 0
    np.testing.assert_array_equal(back.array, hu.array)


def _ramp(slices):
    """Slices whose value is 10 × their index: linear along the slices, so interpolation is exact."""
    return Volume(np.repeat(np.arange(slices, dtype=np.int16)[:, None, None] * 10, 10 * 12).reshape(slices, 10, 12),
                  (0.8, 0.8, 2.5), (-4.0, -4.0, 30.0), np.diag([1.0, -1.0, -1.0]))


def test_a_missing_slice_is_interpolated_with_a_warning_and_a_record(tmp_path):
    positions = [0, 1, 2, 3, 5, 6, 7, 8]  # slice 4 missing: a 5 mm gap among 2.5 mm ones
    ramp = _ramp(9)
    stored = Volume(ramp.array[positions], ramp.spacing, ramp.origin, ramp.direction)
    folder = write_dicom_series(stored, tmp_path / "gap", slice_positions=positions)
    notes, record = [], {}
    back = read_volume(folder, note=notes.append, provenance=record)
    assert back.same_grid(ramp)  # 9 slices 2.5 mm apart where the series had 8
    np.testing.assert_allclose(back.array, ramp.array, atol=1e-4)  # the missing one: the mean of its neighbours
    assert len(notes) == 1 and "5.00 mm apart where the others are 2.50 mm" in notes[0] and "linear" in notes[0]
    assert record["regularized"]["gaps"] == [{"after_slice": 4, "mm": 5.0}]
    assert record["regularized"]["slices"] == [8, 9] and "linear" in record["regularized"]["interpolation"]


def test_strict_geometry_refuses_the_gap_in_one_line(tmp_path, capsys):
    positions = [0, 1, 2, 3, 5, 6, 7, 8]
    folder = write_dicom_series(volume(8), tmp_path / "gap", slice_positions=positions)
    with pytest.raises(InputError) as err:
        read_volume(folder, strict_geometry=True)
    text = str(err.value)
    assert "\n" not in text and "slices 4 and 5 of 8 are 5.00 mm apart where the others are 2.50 mm" in text
    assert main(["explain", str(folder), "--model", "demo", "--strict-geometry", "--out", str(tmp_path / "o")]) == 2
    assert "--strict-geometry" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_explain_records_the_regularization_in_predictions_json(tmp_path):
    import json

    positions = [0, 1, 2, 3, 5, 6, 7, 8]
    folder = write_dicom_series(volume(8), tmp_path / "gap", slice_positions=positions)
    assert main(["explain", str(folder), "--model", "demo", "--method", "hirescam", "--out", str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert record["ct_geometry"]["regularized"]["gaps"] == [{"after_slice": 4, "mm": 5.0}]


def test_a_tilted_gantry_series_is_resampled_onto_an_orthogonal_grid(tmp_path):
    """Slices shifted 0.5 mm along their column direction per 2 mm slice (a 14° tilt) holding the
    linear field 2·y + 3·z (LPS mm): on the regular grid every covered voxel holds 2·y + 3·z again."""
    n, shift = 10, 0.5
    base = Volume(np.zeros((n, 24, 20), np.int16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    k, j, i = np.meshgrid(np.arange(n), np.arange(24), np.arange(20), indexing="ij")
    y, z = j + shift * k, 2.0 * k
    folder = write_dicom_series(base.with_array((2 * y + 3 * z).astype(np.int16)), tmp_path / "tilt")
    for path in sorted(folder.iterdir()):  # move each slice along y: the gantry's shear
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, shift * (int(ds.InstanceNumber) - 1), 2.0 * (int(ds.InstanceNumber) - 1)]
        ds.save_as(path)
    notes, record = [], {}
    back = read_volume(folder, note=notes.append, provenance=record)
    assert "gantry tilt" in notes[0] and record["regularized"]["tilt_deg"] == pytest.approx(14.04, abs=0.01)
    np.testing.assert_allclose(back.direction, np.eye(3), atol=1e-6)
    kk, jj, ii = np.meshgrid(*[np.arange(s) for s in back.shape], indexing="ij")
    p = back.index_to_physical(np.stack([ii, jj, kk], axis=-1))
    expected = 2 * p[..., 1] + 3 * p[..., 2]
    covered = (p[..., 1] >= shift * p[..., 2] / 2.0) & (p[..., 1] <= 23 + shift * p[..., 2] / 2.0 - 1)
    assert covered.mean() > 0.8
    np.testing.assert_allclose(back.array[covered], expected[covered], atol=1e-3)
    with pytest.raises(InputError, match="gantry tilt.*--strict-geometry"):
        read_volume(folder, strict_geometry=True)


def test_duplicated_slice_mixed_orientation_and_non_ct_are_one_clear_error_each(tmp_path, capsys):
    folder = write_dicom_series(volume(6), tmp_path / "dup")
    ds = pydicom.dcmread(folder / "slice002.dcm")
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(folder / "slice002b.dcm")  # the same slice twice, as a bad export does
    with pytest.raises(InputError, match="slices .* are at the same position .*duplicated slice"):
        read_volume(folder)
    mixed = write_dicom_series(volume(6), tmp_path / "mixed")
    ds = pydicom.dcmread(mixed / "slice003.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal slice among axial ones, one series UID
    ds.save_as(mixed / "slice003.dcm")
    with pytest.raises(InputError, match="mixes slices of 2 orientations"):
        read_volume(mixed)
    both = tmp_path / "both"
    write_dicom_series(volume(6), both, series_uid=CT_UID, prefix="ct")
    write_dicom_series(volume(8), both, series_uid=MR_UID, modality="MR", prefix="mr")
    assert main(["explain", str(both), "--model", "demo", "--series", MR_UID, "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "is a MR series, not CT" in err[0]


@pytest.mark.parametrize("directions, words", [
    ("(1,0,0) (0.5,1,0) (0,0,1)", "not orthonormal"),  # sheared
    ("(1,0,0) (1,0,0) (0,0,1)", "singular"),  # two axes along one line
])
def test_bad_direction_matrix_is_one_line_exit_2(tmp_path, capsys, directions, words):
    path = tmp_path / "ct.nrrd"
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\n"
              f"space directions: {directions}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
              "space origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + np.zeros((4, 5, 6), np.int16).tobytes())
    before = path.read_bytes()
    assert main(["explain", str(path), "--model", "demo", "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "direction matrix" in err[0] and words in err[0] and "header" in err[0]
    assert path.read_bytes() == before and not (tmp_path / "out").exists()
