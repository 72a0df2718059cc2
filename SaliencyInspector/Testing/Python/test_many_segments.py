"""Many segments held as labelmap layers: 117 labels, overlapping layers and duplicate names,
evaluated equal to a per-segment scikit-learn computation and to bool masks one by one."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from saliency_inspector.cli import main
from saliency_inspector.scoring.evaluation import evaluate
from saliency_inspector.io.segments import Segment, Segments, read_segments, write_segments
from saliency_inspector.io.volume import Volume, write_volume

SHAPE = (30, 40, 36)


@pytest.fixture(scope="module")
def many():
    """117 labels tiling a volume (one uint8 layer, as TotalSegmentator writes them) plus a second
    layer of 3 segments overlapping them, two of them named like layer-one segments."""
    rng = np.random.default_rng(7)
    grid = Volume(np.zeros(SHAPE, np.int16), (1.5, 1.2, 2.0), (5.0, -3.0, 40.0), np.diag([-1.0, 1.0, 1.0]))
    seeds = rng.uniform(0, 1, (117, 3)) * np.asarray(SHAPE)
    k, j, i = np.indices(SHAPE)
    points = np.stack([k, j, i], -1).reshape(-1, 3).astype(np.float32)
    nearest = np.argmin(((points[:, None, :] - seeds[None].astype(np.float32)) ** 2).sum(-1), axis=1)
    tiles = (nearest + 1).astype(np.uint8).reshape(SHAPE)
    tiles[:, :3] = 0  # some background
    second = np.zeros(SHAPE, np.uint8)
    second[5:15, 10:25, 8:20] = 1
    second[18:26, 5:30, 20:34] = 2
    second[2:8, 30:38, 2:10] = 3
    names = [f"organ_{n}" for n in range(1, 118)]
    names[4] = "liver"
    entries = [(name, 0, n + 1, (0.5, 0.5, 0.5)) for n, name in enumerate(names)]
    entries += [("liver", 1, 1, (1, 0, 0)), ("lesion", 1, 2, (0, 1, 0)), ("organ_9", 1, 3, (0, 0, 1))]
    segments = Segments.from_layers([tiles, second], entries, grid)
    smooth = np.cumsum(np.cumsum(rng.normal(size=SHAPE), 0), 1)
    saliency = grid.with_array(np.round(smooth, 1).astype(np.float32))  # signed, with ties
    return grid, segments, saliency


def test_duplicate_names_kept_apart(many):
    _grid, segments, _map = many
    assert len(segments) == 120 and len(segments.layers) == 2
    assert segments.names[4] == "liver" and "liver (2)" in segments.names and "organ_9 (2)" in segments.names
    assert segments.mask("liver (2)").sum() == 10 * 15 * 12


@pytest.mark.parametrize("region", [pytest.param("all", marks=pytest.mark.slow), "box"])
def test_117_labels_equal_per_segment_scikit_learn_and_bool_masks(many, region):
    _grid, segments, saliency = many
    if region == "box":
        region = np.zeros(SHAPE, bool)
        region[4:28, 6:36, 3:30] = True
    table = evaluate(saliency, segments, region=region)
    scores = np.maximum(saliency.array, 0)
    v = np.ones(SHAPE, bool) if isinstance(region, str) else region
    by_masks = evaluate(saliency, segments.masks, region=region)  # one bool volume per segment
    assert [r["segment"] for r in table.rows] == [r["segment"] for r in by_masks.rows]
    assert len(table.rows) == 120
    checked = 0
    for row, twin in zip(table.rows, by_masks.rows):
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(twin[key]), (row["segment"], key)
            elif isinstance(value, float):
                assert value == pytest.approx(twin[key], rel=1e-12, abs=1e-12), (row["segment"], key)
            else:
                assert value == twin[key], (row["segment"], key)
        m = segments.mask(row["segment"])[v]
        if 0 < m.sum() < m.size:
            assert row["roc_auc"] == pytest.approx(roc_auc_score(m, scores[v]), abs=1e-12)
            assert row["auprc"] == pytest.approx(average_precision_score(m, scores[v]), abs=1e-12)
            checked += 1
    assert checked >= 100


def test_cli_json_keeps_duplicate_names_apart(many, tmp_path):
    grid, segments, saliency = many
    seg_path = write_segments(segments, tmp_path / "organs.seg.nrrd")
    back = read_segments(seg_path)
    assert back.names == segments.names and len(back.layers) == 2
    map_path = write_volume(saliency, tmp_path / "map.nrrd")
    before = seg_path.read_bytes()
    assert main(["evaluate", str(map_path), "--masks", str(seg_path), "--region", "all",
                 "--json", str(tmp_path / "m.json")]) == 0
    rows = json.loads((tmp_path / "m.json").read_text())
    names = [r["segment"] for r in rows]
    assert names.count("liver") == 1 and names.count("liver (2)") == 1 and len(names) == 120
    assert seg_path.read_bytes() == before
    # a plain labelmap file with 117 labels is one layer, not 117 masks
    labelmap = write_volume(grid.with_array(segments.layers[0]), tmp_path / "labels.nrrd")
    as_labels = read_segments(labelmap)
    assert len(as_labels) == 117 and len(as_labels.layers) == 1 and as_labels.layers[0].dtype == np.uint8


def test_segments_from_bool_masks_pack_into_layers():
    grid = Volume(np.zeros((4, 5, 6), np.int16))
    a = np.zeros((4, 5, 6), bool)
    a[1:3, 1:4, 1:5] = True
    b = np.zeros_like(a)
    b[2, 2, 2] = True  # inside a: needs a second layer
    c = np.zeros_like(a)
    c[0, 0, 0] = True  # beside a: shares its layer
    segments = Segments([Segment("a", a), Segment("b", b), Segment("c", c)], grid)
    assert len(segments.layers) == 2
    for name, mask in (("a", a), ("b", b), ("c", c)):
        assert np.array_equal(segments.mask(name), mask)


def test_split_by_label_in_chunks_equals_one_comparison_per_label():
    from saliency_inspector.scoring.masks import split_by_label

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 9, 1000).astype(np.uint8)
    group_of = rng.integers(0, 50, 1000).astype(np.int32)
    for chunk in (7, 64, 4096):
        split = split_by_label(labels, group_of, [1, 3, 8, 9], chunk=chunk)
        for label in (1, 3, 8, 9):
            want = np.sort(group_of[labels == label])
            np.testing.assert_array_equal(np.sort(split[label]), want)


def test_dense_ranks_scattered_in_chunks_equal_one_piece():
    from saliency_inspector.scoring.ranking import _dense_ranks_numpy

    scores = np.round(np.random.default_rng(5).normal(size=1001), 1).astype(np.float32)  # many ties
    values, sizes, group_of = _dense_ranks_numpy(scores, chunk=1 << 20)
    assert np.all(np.diff(values) < 0) and sizes.sum() == scores.size
    np.testing.assert_array_equal(values[group_of], scores)  # every score in its own value's group
    for chunk in (1, 7, 100):
        again = _dense_ranks_numpy(scores, chunk=chunk)
        np.testing.assert_array_equal(again[2], group_of)
