"""Scores out for a PACS: the metric rows as a DICOM SR (TID 1500) that references the organ SEG's
segments and the Parametric Maps; ``--dicom-out`` on evaluate and demo, through the output guards."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")

from dicom_series import write_dicom_series  # noqa: E402
from saliency_inspector.cli import main  # noqa: E402
from saliency_inspector.io import dicom_case, dicom_out, dicom_sr  # noqa: E402
from saliency_inspector.io.segments import write_segments  # noqa: E402
from saliency_inspector.io.volume import write_volume  # noqa: E402
from saliency_inspector.scoring.evaluation import evaluate  # noqa: E402
from saliency_inspector.scoring.metrics import METRICS  # noqa: E402


def _dciodvfy_errors(path) -> list:
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def scored(small_phantom):
    """A peaked map on the phantom's CT and its evaluation rows against every organ."""
    ct = small_phantom.ct
    rng = np.random.default_rng(2)
    saliency = ct.with_array((rng.normal(size=ct.shape) + 4 * small_phantom.organs.mask("liver")).astype(np.float32))
    table = evaluate(saliency, small_phantom.organs, ct=ct)
    return saliency, [{"method": "hirescam", "class": "liver", **row} for row in table.to_records()]


def test_scores_report_reads_back_equal_and_references_the_segments(small_phantom, scored, tmp_path):
    saliency, rows = scored
    source = dicom_out.DicomSource.standalone(small_phantom.ct)
    paths = dicom_case.write_case_dicom(tmp_path, source, maps={("hirescam", "liver"): saliency},
                                        segments=small_phantom.organs, rows=rows,
                                        predictions=[{"class": "liver", "probability": 0.25}], metrics=METRICS)
    assert [p.name for p in paths] == ["hirescam_liver.pm.dcm", "saliency_top5.seg.dcm", "organs.seg.dcm",
                                       "scores.sr.dcm"]
    back = dicom_sr.read_scores(tmp_path / "scores.sr.dcm")
    assert back["probabilities"] == {"liver": 0.25}
    seg = pydicom.dcmread(tmp_path / "organs.seg.dcm")
    label = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    by_segment = {label[r["segment_number"]]: r for r in back["rows"]}
    assert set(by_segment) == {r["segment"] for r in rows}  # every scored organ is a referenced segment
    for row in rows:
        read = by_segment[row["segment"]]
        assert read["tracking"] == f"hirescam liver vs {row['segment']}"
        for key in METRICS:
            if row[key] is None or not math.isfinite(row[key]):
                assert key not in read  # undefined values are left out, not written as numbers
            else:
                assert read[key] == pytest.approx(row[key], rel=1e-12), (row["segment"], key)
    assert by_segment["liver"]["roc_auc"] > 0.9  # the map is peaked on the liver: the SR says so
    sr = pydicom.dcmread(tmp_path / "scores.sr.dcm")
    pm = pydicom.dcmread(tmp_path / "hirescam_liver.pm.dcm", stop_before_pixels=True)
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == pm.StudyInstanceUID
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert evidence == {str(seg.SOPInstanceUID), str(pm.SOPInstanceUID)}
    if shutil.which("dciodvfy"):
        assert not _dciodvfy_errors(tmp_path / "scores.sr.dcm")


def test_a_segment_not_in_the_seg_gets_a_group_without_a_region(small_phantom, scored, tmp_path):
    saliency, rows = scored
    source = dicom_out.DicomSource.standalone(small_phantom.ct)
    dicom_sr.scores_report([{**rows[0], "segment": "elsewhere"}], source, METRICS).save_as(tmp_path / "sr.dcm")
    [row] = dicom_sr.read_scores(tmp_path / "sr.dcm")["rows"]
    assert row["tracking"].endswith("vs elsewhere") and row["segment_number"] is None


def test_evaluate_dicom_out_writes_map_masks_and_scores(small_phantom, scored, tmp_path, capsys):
    saliency, _ = scored
    ct_folder = write_dicom_series(small_phantom.ct.with_array(small_phantom.ct.array.astype(np.int16)),
                                   tmp_path / "ct")
    map_path = write_volume(saliency, tmp_path / "gradcam_liver.nrrd")
    masks = write_segments(small_phantom.organs, tmp_path / "organs.seg.nrrd")
    out = tmp_path / "dicom"
    code = main(["evaluate", str(map_path), "--masks", str(masks), "--ct", str(ct_folder), "--json",
                 str(tmp_path / "rows.json"), "--dicom-out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["gradcam_liver.pm.dcm", "organs.seg.dcm",
                                                    "saliency_top5.seg.dcm", "scores.sr.dcm"]
    rows = json.loads((tmp_path / "rows.json").read_text())
    back = {r["tracking"].split(" vs ")[1]: r for r in dicom_sr.read_scores(out / "scores.sr.dcm")["rows"]}
    assert set(back) == {r["segment"] for r in rows}
    for row in rows:
        assert back[row["segment"]]["roc_auc"] == pytest.approx(row["roc_auc"])
    sr = pydicom.dcmread(out / "scores.sr.dcm")
    first = pydicom.dcmread(sorted(ct_folder.iterdir())[0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == first.StudyInstanceUID  # the CT folder's study: they sit beside it


@pytest.mark.parametrize("command", ["explain", "evaluate", "demo"])
def test_dicom_out_goes_through_the_output_guards(small_phantom_files, command, tmp_path, capsys):
    """``--dicom-out`` naming a file, or the input DICOM folder, is refused before any work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    args = {"explain": ["explain", str(small_phantom_files["ct"]), "--model", "demo", "--out", str(tmp_path / "o")],
            "evaluate": ["evaluate", str(small_phantom_files["ct"]), "--masks", str(small_phantom_files["organs"])],
            "demo": ["demo", "--out", str(tmp_path / "o")]}[command]
    assert main(args + ["--dicom-out", str(blocker)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "not a folder" in err[0]
    assert blocker.read_text() == "keep me" and not (tmp_path / "o").exists()


def test_explain_dicom_out_into_its_own_dicom_input_is_refused(small_phantom, tmp_path, capsys):
    folder = write_dicom_series(small_phantom.ct.with_array(small_phantom.ct.array.astype(np.int16)), tmp_path / "ct")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["explain", str(folder), "--model", "demo", "--out", str(tmp_path / "o"),
                 "--dicom-out", str(folder)]) == 2
    assert "inputs" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.slow
def test_demo_dicom_out_has_maps_organs_lesions_and_scores(tmp_path):
    import contextlib
    import io

    from saliency_inspector.workflows.demo import run_demo
    from saliency_inspector.workflows.demo_dicom import write_demo_dicom
    from test_demo import small_classifier

    with contextlib.redirect_stdout(io.StringIO()):
        result = run_demo(tmp_path / "demo", device="cpu", size=(48, 48, 20), classifier=small_classifier(),
                          panel_px=96)
    paths = write_demo_dicom(result, tmp_path / "dicom")
    names = sorted(p.name for p in paths)
    assert len([n for n in names if n.endswith(".pm.dcm")]) == len(result.tables)
    assert "organs.seg.dcm" in names and "scores.sr.dcm" in names
    labels = {str(s.SegmentLabel) for s in pydicom.dcmread(tmp_path / "dicom" / "organs.seg.dcm").SegmentSequence}
    assert "liver" in labels and any(label.startswith("lesion") for label in labels)
    back = dicom_sr.read_scores(tmp_path / "dicom" / "scores.sr.dcm")
    assert set(back["probabilities"]) == {p["class"] for p in result.predictions}
    rows = sum(len(t.rows) for t in result.tables.values())
    assert len(back["rows"]) == rows


@pytest.mark.slow
def test_dicom_out_of_a_regularized_series_sits_in_its_study_without_false_references(small_phantom, tmp_path,
                                                                                     capsys):
    """A series with a missing slice is read onto 20 even slices where the files hold 19: the objects
    keep the CT's study and Frame of Reference but reference no slice (the grid's slices are new)."""
    ct = small_phantom.ct
    ct = ct.with_array(ct.array[:, :, :].astype(np.int16))
    keep = [k for k in range(ct.shape[0]) if k != 7]
    from saliency_inspector.io.volume import Volume

    folder = write_dicom_series(Volume(ct.array[keep], ct.spacing, ct.origin, ct.direction), tmp_path / "gap",
                                slice_positions=keep)
    out = tmp_path / "dicom"
    assert main(["explain", str(folder), "--model", "demo", "--method", "hirescam", "--class", "liver",
                 "--out", str(tmp_path / "o"), "--dicom-out", str(out)]) == 0, capsys.readouterr().err
    first = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    pm = pydicom.dcmread(out / "hirescam_liver.pm.dcm")
    assert pm.StudyInstanceUID == first.StudyInstanceUID and int(pm.NumberOfFrames) == ct.shape[0]
    assert "ReferencedSeriesSequence" not in pm
