"""Geometry round trips: SimpleITK ⇄ Volume ⇄ NRRD / NIfTI / MHA / DICOM ⇄ IJK→RAS.

A bright voxel sits at a known physical point of an oblique, anisotropic volume with a non-zero
origin; after every round trip it must be found at that same point. Peer readers (pynrrd,
nibabel) cross-check what we write.
"""

from __future__ import annotations

import os

import nibabel
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import POINT_IJK, rotation
from dicom_series import write_dicom_series
from saliency_inspector.errors import InputError
from saliency_inspector.io.volume import (LPS_TO_RAS, Volume, from_sitk, overlap_fraction, read_volume,
                                       resample_to, to_sitk, volume_from_ijk_to_ras, write_volume)


def bright_point_lps(volume: Volume) -> np.ndarray:
    """Physical LPS position of the brightest voxel."""
    k, j, i = np.unravel_index(np.argmax(volume.array), volume.shape)
    return volume.index_to_physical([i, j, k])


def test_index_to_physical_agrees_with_simpleitk(oblique_volume):
    image = to_sitk(oblique_volume)
    for ijk in [(0, 0, 0), POINT_IJK, (19, 23, 11), (3, 0, 9)]:
        expected = image.TransformIndexToPhysicalPoint(ijk)
        assert np.allclose(oblique_volume.index_to_physical(ijk), expected, atol=1e-9)
        assert np.allclose(oblique_volume.physical_to_index(expected), ijk, atol=1e-9)
    # continuous indices too
    assert np.allclose(oblique_volume.index_to_physical([1.5, 2.25, 0.5]),
                       image.TransformContinuousIndexToPhysicalPoint((1.5, 2.25, 0.5)), atol=1e-9)


def test_sitk_round_trip_keeps_array_and_geometry(oblique_volume):
    back = from_sitk(to_sitk(oblique_volume))
    assert back.same_grid(oblique_volume, atol=1e-12)
    assert np.array_equal(back.array, oblique_volume.array)
    assert back.array.dtype == np.int16
    assert np.allclose(bright_point_lps(back), oblique_volume.index_to_physical(POINT_IJK))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_file_round_trip_finds_the_point_at_the_same_place(oblique_volume, tmp_path, suffix):
    expected = oblique_volume.index_to_physical(POINT_IJK)
    path = write_volume(oblique_volume, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    assert back.shape == oblique_volume.shape
    assert np.array_equal(back.array, oblique_volume.array)
    # NIfTI stores the affine in float32: allow a micrometre.
    assert back.same_grid(oblique_volume, atol=1e-4)
    assert np.allclose(bright_point_lps(back), expected, atol=1e-3)


def test_nrrd_header_read_by_pynrrd(oblique_volume, tmp_path):
    path = write_volume(oblique_volume, tmp_path / "ct.nrrd")
    data, header = nrrd.read(str(path))  # pynrrd: (i, j, k) order, LPS space
    assert header["space"] == "left-posterior-superior"
    assert np.allclose(np.asarray(header["space directions"]).T, oblique_volume.ijk_to_lps()[:3, :3], atol=1e-9)
    assert np.allclose(header["space origin"], oblique_volume.origin, atol=1e-9)
    assert data[POINT_IJK] == 1000


def test_nifti_affine_read_by_nibabel_is_ras(oblique_volume, tmp_path):
    path = write_volume(oblique_volume, tmp_path / "ct.nii.gz")
    image = nibabel.load(str(path))
    # nibabel gives voxel (i, j, k) -> RAS; our ijk_to_ras must be the same matrix.
    assert np.allclose(image.affine, oblique_volume.ijk_to_ras(), atol=1e-4)
    assert np.asarray(image.dataobj)[POINT_IJK] == 1000


def test_ijk_to_ras_round_trip(oblique_volume):
    m = oblique_volume.ijk_to_ras()
    point_ras = m @ np.r_[POINT_IJK, 1.0]
    assert np.allclose(point_ras[:3], LPS_TO_RAS @ oblique_volume.index_to_physical(POINT_IJK))
    back = volume_from_ijk_to_ras(oblique_volume.array, m)
    assert back.same_grid(oblique_volume, atol=1e-9)
    assert np.allclose(back.direction, oblique_volume.direction, atol=1e-12)


def test_dicom_series_folder_keeps_geometry(oblique_volume, tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    write_dicom_series(oblique_volume, folder)
    back = read_volume(folder)
    assert back.shape == oblique_volume.shape
    assert np.array_equal(back.array.astype(np.int16), oblique_volume.array)
    assert np.allclose(back.spacing, oblique_volume.spacing, atol=1e-4)
    assert np.allclose(back.origin, oblique_volume.origin, atol=1e-3)
    assert np.allclose(back.direction, oblique_volume.direction, atol=1e-5)
    assert np.allclose(bright_point_lps(back), oblique_volume.index_to_physical(POINT_IJK), atol=1e-3)


def test_resample_nearest_keeps_the_point(oblique_volume):
    reference = Volume(np.zeros((40, 50, 45), np.int16), spacing=(0.5, 0.5, 0.5),
                       origin=tuple(oblique_volume.index_to_physical(POINT_IJK) - 10.0), direction=np.eye(3))
    out = resample_to(oblique_volume, reference, interpolation="nearest", default_value=-1000)
    assert out.same_grid(reference)
    hot = out.array == 1000
    assert hot.any()
    # every hot voxel of the resampled volume lies within the source voxel's box around the point
    k, j, i = np.nonzero(hot)
    src = oblique_volume.physical_to_index(out.index_to_physical(np.stack([i, j, k], axis=1)))
    assert np.all(np.abs(src - np.asarray(POINT_IJK)) <= 0.5 + 1e-6)


def test_overlap_fraction(oblique_volume):
    assert overlap_fraction(oblique_volume, oblique_volume) == 1.0
    far = Volume(np.zeros((4, 4, 4)), origin=(5000.0, 5000.0, 5000.0))
    assert overlap_fraction(far, oblique_volume) == 0.0


# ---- bad input: one-line InputError naming the file; the file is never modified -----------------
def snapshot(path):
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns


def assert_one_line_naming(err: InputError, path) -> None:
    message = str(err)
    assert "\n" not in message
    assert str(path) in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nrrd"
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert_one_line_naming(err.value, path)
    assert "not found" in str(err.value)


def write_garbage(path):
    path.write_bytes(b"this is not an image\x00\x01\x02" * 10)


def write_2d(path):
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16), str(path))


def write_4d(path):
    sitk.WriteImage(sitk.JoinSeries([sitk.Image([8, 8, 4], sitk.sitkInt16) for _ in range(3)]), str(path))


@pytest.mark.parametrize("name, write, problem", [
    ("garbage.nrrd", write_garbage, None),  # unreadable: the message names the file
    ("slice.nrrd", write_2d, "2D"),
    ("series.nii.gz", write_4d, "4D"),
])
def test_bad_file_is_refused_in_one_line_and_not_modified(tmp_path, name, write, problem):
    path = tmp_path / name
    write(path)
    before = snapshot(path)
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert_one_line_naming(err.value, path)
    if problem:
        assert problem in str(err.value)
    assert snapshot(path) == before


def test_rotation_helper_is_proper():
    r = rotation(12.0, -7.0, 20.0)
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as err:
        read_volume(folder)
    assert_one_line_naming(err.value, folder)
    assert "no DICOM series" in str(err.value)


def test_is_volume_path_keeps_the_folder_name_case(tmp_path):
    from saliency_inspector.io.volume import is_volume_path

    folder = tmp_path / "CT_Series"
    folder.mkdir()
    assert is_volume_path(folder)
    assert is_volume_path(tmp_path / "Scan.NII.GZ")
    assert not is_volume_path(tmp_path / "notes.txt")


def test_direction_must_be_orthonormal():
    shear = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # det 1, not a rotation
    with pytest.raises(InputError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=shear)
    flip = np.diag([-1.0, -1.0, 1.0])  # reflections/axis flips are fine
    assert np.array_equal(Volume(np.zeros((2, 2, 2)), direction=flip).direction, flip)
