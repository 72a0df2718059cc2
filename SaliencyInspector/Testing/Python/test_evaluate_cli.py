"""`saliency-inspector evaluate MAP --masks SEG`: real files written and read back, exit codes, messages."""

import csv
import json

import numpy as np
import pytest

from saliency_inspector import cli
from saliency_inspector.synth.phantom import make_phantom, write_phantom_case
from saliency_inspector.io.segments import Segment, Segments, write_segments
from saliency_inspector.io.volume import Volume, resample_to, write_volume

JSON_KEYS = {"segment", "dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game", "threshold", "region"}


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    """A small phantom on disk plus a 'saliency map' that is exactly the liver lesion."""
    out = tmp_path_factory.mktemp("case")
    case = make_phantom(size=(40, 40, 16))
    write_phantom_case(case, out)
    paths = {name: out / name for name in ["ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd"]}
    lesion = case.lesions.mask("lesion_liver")
    paths["map"] = write_volume(case.ct.with_array(lesion.astype(np.float32)), out / "map.nrrd")
    return case, paths


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_evaluate_writes_json_csv_and_a_table(case_files, capsys, tmp_path):
    case, paths = case_files
    rc, out, err = run(["evaluate", paths["map"], "--masks", paths["lesions.seg.nrrd"], "--ct", paths["ct.nrrd"],
                        "--json", tmp_path / "rows.json", "--csv", tmp_path / "rows.csv"], capsys)
    assert rc == 0, err
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["segment"] for r in rows] == ["lesion_liver"]
    row = rows[0]
    assert JSON_KEYS <= set(row)
    # the map is the lesion mask itself: perfect agreement
    for key in ["dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game", "rank_accuracy"]:
        assert row[key] == 1.0, key
    assert row["region"].startswith("body (CT") and row["threshold"] == "topk"
    with open(tmp_path / "rows.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert csv_rows[0]["segment"] == "lesion_liver" and float(csv_rows[0]["roc_auc"]) == 1.0
    assert "lesion_liver" in out and "ROC AUC" in out


def test_evaluate_against_organs_uses_the_body_segment(case_files, capsys, tmp_path):
    case, paths = case_files
    rc, out, err = run(["evaluate", paths["map"], "--masks", paths["organs.seg.nrrd"], "--threshold", "otsu",
                        "--json", tmp_path / "rows.json"], capsys)
    assert rc == 0, err
    rows = {r["segment"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert "body" not in rows and set(rows) == set(case.organs.names) - {"body"}
    body, liver = case.organs.mask("body"), case.organs.mask("liver") & case.organs.mask("body")
    lesion = case.lesions.mask("lesion_liver") & body
    inside = (lesion & liver).sum()
    # lesion voxels (1) outrank everything else (0); the rest of the liver ties with the negatives
    assert rows["liver"]["roc_auc"] == pytest.approx(0.5 + 0.5 * inside / liver.sum(), abs=1e-12)
    assert rows["liver"]["ioa"] == pytest.approx(inside / lesion.sum())
    assert rows["liver"]["threshold"] == "otsu" and rows["liver"]["region"] == "body (segment 'body')"
    assert rows["spleen"]["pointing_game"] == 0.0


def test_masks_on_another_grid_are_resampled_with_a_note(case_files, capsys, tmp_path):
    case, paths = case_files
    ct = case.ct
    coarse = Volume(np.zeros((8, 20, 20), np.uint8), spacing=tuple(s * 2 for s in ct.spacing),
                    origin=ct.origin, direction=ct.direction)
    labels = np.zeros(ct.shape, np.uint8)
    labels[case.organs.mask("liver")] = 3
    labels[case.organs.mask("spleen")] = 5
    write_volume(resample_to(ct.with_array(labels), coarse, "nearest"), tmp_path / "labels.nrrd")
    (tmp_path / "names.json").write_text(json.dumps({"3": "liver", "5": "spleen"}))
    rc, out, err = run(["evaluate", paths["map"], "--masks", tmp_path / "labels.nrrd", "--names",
                        tmp_path / "names.json", "--region", "all", "--json", tmp_path / "rows.json"], capsys)
    assert rc == 0, err
    assert "resampled" in err
    rows = {r["segment"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert set(rows) == {"liver", "spleen"} and rows["liver"]["mask_voxels"] > 0
    assert rows["liver"]["region"] == "all"


def test_empty_segment_gives_nan_and_a_reason(case_files, capsys, tmp_path):
    case, paths = case_files
    segs = Segments([Segment("liver", case.organs.mask("liver")),
                     Segment("nothing", np.zeros(case.ct.shape, bool))], case.ct)
    write_segments(segs, tmp_path / "two.seg.nrrd")
    rc, out, err = run(["evaluate", paths["map"], "--masks", tmp_path / "two.seg.nrrd", "--region", "all",
                        "--json", tmp_path / "rows.json"], capsys)
    assert rc == 0, err
    rows = {r["segment"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert rows["nothing"]["dice"] is None and rows["nothing"]["roc_auc"] is None
    assert "empty mask" in rows["nothing"]["note"] and "empty mask" in out
    assert rows["liver"]["roc_auc"] is not None


def assert_one_line_error(rc, err, *words):
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saliency-inspector: error: ")
    for word in words:
        assert word in lines[0]


def test_bad_input_is_one_line_and_exit_code_2(case_files, capsys, tmp_path):
    case, paths = case_files
    write_volume(case.ct.with_array(np.zeros(case.ct.shape, np.uint8)), tmp_path / "nolabels.nrrd")
    rc, _, err = run(["evaluate", paths["map"], "--masks", tmp_path / "nolabels.nrrd"], capsys)
    assert_one_line_error(rc, err, "no labels")

    rc, _, err = run(["evaluate", paths["map"], "--masks", paths["lesions.seg.nrrd"], "--region", "body"], capsys)
    assert_one_line_error(rc, err, "--ct")

    rc, _, err = run(["evaluate", tmp_path / "missing.nrrd", "--masks", paths["organs.seg.nrrd"]], capsys)
    assert_one_line_error(rc, err, "not found")

    rc, _, err = run(["evaluate", paths["map"], "--masks", paths["organs.seg.nrrd"], "--threshold", "half"], capsys)
    assert_one_line_error(rc, err, "half", "topk")

    far = Volume(np.zeros((4, 4, 4), np.uint8), origin=(900.0, 900.0, 900.0))
    labels = far.with_array(np.ones((4, 4, 4), np.uint8))
    write_volume(labels, tmp_path / "far.nrrd")
    rc, _, err = run(["evaluate", paths["map"], "--masks", tmp_path / "far.nrrd"], capsys)
    assert_one_line_error(rc, err, "do not overlap")

    # the user's files are left as they were
    assert paths["map"].exists() and (tmp_path / "far.nrrd").exists()


def test_evaluate_uses_the_method_of_the_map_file(case_files, capsys, tmp_path):
    """A gradient map (file gradient_<class>.nrrd) whose evidence is negative on the lesion: ranked
    by |map|, its declared importance, it finds the lesion; ReLU would not. Each table says which."""
    case, paths = case_files
    lesion = case.lesions.mask("lesion_liver")
    noise = 0.01 * np.random.default_rng(0).random(case.ct.shape)
    negative = case.ct.with_array((noise - 1.0 * lesion).astype(np.float32))
    gradient = write_volume(negative, tmp_path / "gradient_liver.nrrd")
    rc, out, err = run(["evaluate", gradient, "--masks", paths["lesions.seg.nrrd"], "--ct", paths["ct.nrrd"],
                        "--json", tmp_path / "g.json"], capsys)
    assert rc == 0, err
    row = json.loads((tmp_path / "g.json").read_text())[0]
    assert row["importance"] == "abs" and row["roc_auc"] == 1.0
    assert "ranked by: |map| (abs)" in out and "method gradient" in err
    rc, out, err = run(["evaluate", gradient, "--masks", paths["lesions.seg.nrrd"], "--ct", paths["ct.nrrd"],
                        "--importance", "relu", "--json", tmp_path / "r.json"], capsys)
    assert rc == 0, err
    row = json.loads((tmp_path / "r.json").read_text())[0]
    assert row["importance"] == "relu" and row["roc_auc"] < 0.6 and "ranked by: ReLU(map) (relu)" in out
    # a name that is no method's: ReLU(map), said on stderr
    rc, out, err = run(["evaluate", paths["map"], "--masks", paths["lesions.seg.nrrd"], "--ct", paths["ct.nrrd"]],
                       capsys)
    assert rc == 0 and "not known from its file name" in err and "ranked by: ReLU(map)" in out
