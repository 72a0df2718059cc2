"""Organ masks: `.seg.nrrd` via slicerio, labelmaps with name tables, resampling onto a CT grid."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import slicerio
import SimpleITK as sitk

from conftest import rotation
from saliency_inspector.errors import InputError
from saliency_inspector.io.segments import Segment, Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, write_volume


@pytest.fixture
def grid() -> Volume:
    """Oblique, anisotropic grid 14×18×10 (x×y×z) with a non-zero origin."""
    return Volume(np.zeros((10, 18, 14), np.int16), spacing=(1.2, 0.8, 3.0), origin=(40.0, -22.5, 101.0),
                  direction=rotation(5.0, 10.0, -15.0))


@pytest.fixture
def overlapping(grid) -> Segments:
    """Three segments; 'organ' and 'lesion' overlap (lesion inside organ) as in a real case."""
    z, y, x = np.indices(grid.shape)
    organ = (x > 2) & (x < 11) & (y > 3) & (y < 15) & (z > 1) & (z < 9)
    lesion = (x > 5) & (x < 8) & (y > 6) & (y < 10) & (z > 3) & (z < 6)
    other = (x < 2) & (z == 0)
    return Segments([Segment("organ", organ, (0.8, 0.5, 0.4)), Segment("lesion", lesion, (0.5, 0.9, 0.5)),
                     Segment("other tissue", other, (0.1, 0.2, 0.9))], grid)


def snapshot(path):
    return path.read_bytes(), os.stat(path).st_mtime_ns


def test_written_seg_nrrd_is_read_by_slicerio_with_same_names_voxels_and_geometry(overlapping, tmp_path):
    path = write_segments(overlapping, tmp_path / "masks.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(seg) == ["organ", "lesion", "other tissue"]
    assert np.allclose(seg["ijkToLPS"], overlapping.grid.ijk_to_lps(), atol=1e-9)
    for s in overlapping:
        mask_ijk = slicerio.segment_mask(seg, s.name)  # slicerio: (i, j, k) order
        assert np.array_equal(mask_ijk.transpose(2, 1, 0), s.mask)
        info = slicerio.segment_from_name(seg, s.name)
        assert np.allclose(info["color"], s.color, atol=1e-6)
    # overlapping segments need two layers (Slicer's shared-labelmap layout)
    assert seg["voxels"].ndim == 4


def test_seg_nrrd_round_trip(overlapping, tmp_path):
    path = write_segments(overlapping, tmp_path / "masks.seg.nrrd")
    before = snapshot(path)
    back = read_segments(path)
    assert back.names == overlapping.names
    assert back.grid.same_grid(overlapping.grid, atol=1e-9)
    for name in overlapping.names:
        assert np.array_equal(back.mask(name), overlapping.mask(name))
        assert np.allclose(back.colors[name], overlapping.colors[name], atol=1e-6)
    assert snapshot(path) == before  # reading never modifies the user's file


def test_reads_a_seg_nrrd_written_by_slicerio_with_custom_label_values(grid, tmp_path):
    labels_ijk = np.zeros(grid.size_xyz, np.uint8)
    labels_ijk[2:5, 3:9, 1:4] = 7
    labels_ijk[8:12, 10:15, 5:8] = 3
    seg = {"voxels": labels_ijk, "ijkToLPS": grid.ijk_to_lps(),
           "segments": [{"id": "Segment_7", "name": "liver", "labelValue": 7, "layer": 0, "color": [0.9, 0.5, 0.4]},
                        {"id": "Segment_3", "name": "spleen", "labelValue": 3, "layer": 0, "color": [0.6, 0.4, 0.6]}]}
    path = tmp_path / "slicer.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    segments = read_segments(path)
    assert segments.names == ["liver", "spleen"]
    assert np.array_equal(segments.mask("liver"), (labels_ijk == 7).transpose(2, 1, 0))
    assert np.array_equal(segments.mask("spleen"), (labels_ijk == 3).transpose(2, 1, 0))
    assert segments.grid.same_grid(grid, atol=1e-9)


def labelmap(grid) -> Volume:
    z, y, x = np.indices(grid.shape)
    array = np.zeros(grid.shape, np.uint8)
    array[(x < 6) & (z < 5)] = 1
    array[(x > 8) & (y > 9)] = 4
    return grid.with_array(array)


@pytest.mark.parametrize("table", ["json", "json_list", "csv", "ctbl", "dict", None])
def test_labelmap_with_name_table(grid, tmp_path, table):
    lab = labelmap(grid)
    path = write_volume(lab, tmp_path / "labels.nii.gz")
    names = {
        "json": lambda p: (p.write_text(json.dumps({"1": "liver", "4": "spleen"})), p)[1],
        "json_list": lambda p: (p.write_text(json.dumps([{"label": 1, "name": "liver"},
                                                         {"label": 4, "name": "spleen"}])), p)[1],
        "csv": lambda p: (p.write_text("label,name\n1,liver\n4,spleen\n"), p)[1],
        # Slicer colour table: "# comment" then "label name r g b a"
        "ctbl": lambda p: (p.write_text("# Color table file\n0 Background 0 0 0 0\n1 liver 221 130 101 255\n"
                                        "4 spleen 157 108 162 255\n"), p)[1],
        "dict": lambda p: {1: "liver", 4: "spleen"},
        None: lambda p: None,
    }[table](tmp_path / {"json": "n.json", "json_list": "n.json", "csv": "n.csv", "ctbl": "n.ctbl"}.get(table, "x"))
    segments = read_segments(path, names=names)
    expected = ["liver", "spleen"] if table else ["label_1", "label_4"]
    assert segments.names == expected
    assert np.array_equal(segments.mask(expected[0]), lab.array == 1)
    assert np.array_equal(segments.mask(expected[1]), lab.array == 4)
    assert segments.grid.same_grid(grid, atol=1e-4)


def test_masks_on_another_grid_are_resampled_onto_the_reference(grid, tmp_path):
    lab = labelmap(grid)
    path = write_volume(lab, tmp_path / "labels.nrrd")
    # a finer, axis-aligned reference grid that covers part of the labelmap
    centre = grid.index_to_physical(np.array(grid.size_xyz) / 2)
    reference = Volume(np.zeros((20, 22, 24), np.int16), spacing=(0.6, 0.6, 1.0),
                       origin=tuple(centre - 8.0), direction=np.eye(3))
    notes = []
    segments = read_segments(path, reference=reference, note=notes.append)
    assert len(notes) == 1 and "resampl" in notes[0]
    assert segments.grid.same_grid(reference)
    # independent nearest-neighbour lookup in numpy: each reference voxel centre -> source index
    k, j, i = np.indices(reference.shape).reshape(3, -1)
    src = np.rint(grid.physical_to_index(reference.index_to_physical(np.stack([i, j, k], 1)))).astype(int)
    inside = np.all((src >= 0) & (src < np.array(grid.size_xyz)), axis=1)
    expected = np.zeros(len(i), np.uint8)
    expected[inside] = lab.array[src[inside, 2], src[inside, 1], src[inside, 0]]
    expected = expected.reshape(reference.shape)
    for label, name in [(1, "label_1"), (4, "label_4")]:
        got = segments.mask(name)
        assert (expected == label).sum() > 0
        # ties exactly halfway between voxels may round either way: allow a sliver
        assert np.mean(got == (expected == label)) > 0.995


def test_same_grid_is_not_resampled(overlapping, tmp_path):
    path = write_segments(overlapping, tmp_path / "m.seg.nrrd")
    notes = []
    back = read_segments(path, reference=overlapping.grid.with_array(np.zeros(overlapping.grid.shape)), note=notes.append)
    assert notes == []
    assert np.array_equal(back.mask("lesion"), overlapping.mask("lesion"))


def test_resampled_to_same_and_shifted_grid(overlapping):
    same = overlapping.resampled_to(overlapping.grid)
    assert np.array_equal(same.mask("organ"), overlapping.mask("organ"))
    g = overlapping.grid
    # shifting the origin by exactly one voxel along i moves every mask by one index
    shifted = Volume(np.zeros(g.shape), g.spacing, tuple(g.index_to_physical([1, 0, 0])), g.direction)
    moved = overlapping.resampled_to(shifted)
    assert np.array_equal(moved.mask("organ")[:, :, :-1], overlapping.mask("organ")[:, :, 1:])


def test_access_api(overlapping):
    assert len(overlapping) == 3
    assert [s.name for s in overlapping] == overlapping.names
    assert set(overlapping.masks) == set(overlapping.names)
    assert overlapping.colors["organ"] == (0.8, 0.5, 0.4)
    assert overlapping.mask("organ").dtype == bool
    with pytest.raises(InputError, match="no segment named 'kidney'"):
        overlapping.mask("kidney")


# ---- bad input ----------------------------------------------------------------------------------
def test_missing_masks_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_segments(tmp_path / "missing.seg.nrrd")


def test_masks_that_do_not_overlap_the_image(grid, tmp_path):
    path = write_volume(labelmap(grid), tmp_path / "labels.nrrd")
    before = snapshot(path)
    far = Volume(np.zeros((8, 8, 8)), origin=(900.0, 900.0, 900.0))
    with pytest.raises(InputError) as err:
        read_segments(path, reference=far)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "do not overlap" in str(err.value)
    assert snapshot(path) == before


def test_empty_labelmap(grid, tmp_path):
    path = write_volume(grid.with_array(np.zeros(grid.shape, np.uint8)), tmp_path / "empty.nrrd")
    with pytest.raises(InputError, match="no labels"):
        read_segments(path)


def test_image_with_fractional_values_is_not_a_labelmap(grid, tmp_path):
    path = write_volume(grid.with_array(np.full(grid.shape, 0.5, np.float32)), tmp_path / "map.nrrd")
    with pytest.raises(InputError, match="not a labelmap"):
        read_segments(path)


def test_unreadable_and_2d_masks(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_bytes(b"NRRD0004\ngarbage without end")
    before = snapshot(bad)
    with pytest.raises(InputError) as err:
        read_segments(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert snapshot(bad) == before
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkUInt8) + 1, str(flat))
    with pytest.raises(InputError, match="2D"):
        read_segments(flat)


def test_bad_name_table(grid, tmp_path):
    path = write_volume(labelmap(grid), tmp_path / "labels.nrrd")
    with pytest.raises(InputError, match="names table not found"):
        read_segments(path, names=tmp_path / "nope.json")
    table = tmp_path / "names.json"
    table.write_text("[1, 2, 3]")
    with pytest.raises(InputError, match="label -> name"):
        read_segments(path, names=table)


def test_write_refuses_other_suffixes(overlapping, tmp_path):
    with pytest.raises(InputError, match=".seg.nrrd"):
        write_segments(overlapping, tmp_path / "masks.nii.gz")


def test_duplicate_segment_names_in_a_slicer_file_are_kept_apart(grid, tmp_path):
    labels_ijk = np.zeros(grid.size_xyz, np.uint8)
    labels_ijk[1:3, 1:3, 1:3] = 1
    labels_ijk[5:7, 5:7, 5:7] = 2
    seg = {"voxels": labels_ijk, "ijkToLPS": grid.ijk_to_lps(),
           "segments": [{"id": "a", "name": "nodule", "labelValue": 1, "layer": 0},
                        {"id": "b", "name": "nodule", "labelValue": 2, "layer": 0}]}
    path = tmp_path / "dup.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    segments = read_segments(path)
    assert segments.names == ["nodule", "nodule (2)"]
    assert segments.mask("nodule (2)").sum() == 8


def test_slicer_mrml_opens_written_seg_nrrd_with_names_colors_and_voxels(overlapping, tmp_path):
    """Real MRML (slicer-core) reads the file the way the Slicer application does."""
    slicer = pytest.importorskip("slicer")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    path = write_segments(overlapping, tmp_path / "masks.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == overlapping.names
    for segment_id, s in zip(ids, overlapping):
        assert np.allclose(segmentation.GetSegment(segment_id).GetColor(), s.color, atol=1e-5)
        image = slicer.vtkOrientedImageData()
        node.GetBinaryLabelmapRepresentation(segment_id, image)
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        assert np.allclose(ijk_to_ras, overlapping.grid.ijk_to_ras(), atol=1e-6)  # Slicer world is RAS
        i0, i1, j0, j1, k0, k1 = image.GetExtent()
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
        mask = np.zeros(overlapping.grid.shape, bool)
        mask[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = voxels > 0
        assert np.array_equal(mask, s.mask), s.name
