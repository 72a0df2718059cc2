"""A cohort from a DICOMweb server: manifest rows are studies on the test Orthanc; batch pulls,
explains, writes DICOM and pushes each case as it finishes; a failed push is retried and reported;
resuming keys a case by its series' instance UIDs; a push stores all of a case's objects or none."""

from __future__ import annotations

import csv
import http.client
import shutil
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

import requests  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402

from dicom_series import write_dicom_series  # noqa: E402
from orthanc_server import orthanc  # noqa: E402,F401 - the session fixture
from saliency_inspector.errors import InputError  # noqa: E402
from saliency_inspector.io import dicomweb  # noqa: E402
from saliency_inspector.workflows.batch import batch  # noqa: E402

STUDIES = {"a": "1.2.826.0.1.3680043.2.1125.9.1", "b": "1.2.826.0.1.3680043.2.1125.9.2"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _modalities(url, study):
    client = dicomweb.connect(url)
    return sorted(s["00080060"]["Value"][0] for s in client.search_for_series(study_instance_uid=study))


@pytest.fixture(scope="module")
def studies(orthanc, tmp_path_factory):
    """Two phantom CTs stored as two studies; study a's last slice is held back (uploaded later)."""
    from saliency_inspector.synth.phantom import make_phantom

    held = {}
    for n, (name, study) in enumerate(STUDIES.items()):
        ct = make_phantom(seed=20 + n, size=(40, 36, 20)).ct
        folder = write_dicom_series(ct.with_array(ct.array.astype(np.int16)), tmp_path_factory.mktemp(name),
                                    series_uid=f"{study}.1", study_uid=study)
        files = sorted(folder.iterdir())
        if name == "a":
            held["a"] = files.pop()
        dicomweb.push(orthanc, files)
    return held


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("case_id,study_uid,liver\n" + "".join(f"{k},{uid},{n % 2}\n" for n, (k, uid) in
                                                        enumerate(STUDIES.items())))
    return path


def _run(manifest, out, url, **kwargs):
    return batch(manifest, "demo", out, methods=["hirescam"], classes=["liver"], dicomweb=url, push=True,
                 resamples=100, device="cpu", progress=False, **kwargs)


@pytest.mark.slow
def test_batch_pulls_explains_pushes_retries_and_resumes(orthanc, studies, manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(dicomweb, "PUSH_WAIT", 0.01)
    store = DICOMwebClient.store_instances
    calls = []

    def flaky(self, *args, **kwargs):  # the first STOW-RS of the run fails as a dropped connection would
        calls.append(1)
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("connection reset")
        return store(self, *args, **kwargs)

    monkeypatch.setattr(DICOMwebClient, "store_instances", flaky)
    out = tmp_path / "run"
    result = _run(manifest, out, orthanc)
    assert sorted(result.computed) == ["a", "b"] and not result.failed and result.exit_code == 0
    pushes = {r["case_id"]: r for r in _rows(out / "pushes.csv")}
    assert [pushes[k]["status"] for k in "ab"] == ["ok", "ok"]
    assert sorted(pushes[k]["attempts"] for k in "ab") == ["1", "2"]  # the failed push was tried again
    assert "does not answer" in "".join(pushes[k]["errors"] for k in "ab")  # and the failure is on record
    for name, study in STUDIES.items():
        # per case: one Parametric Map, the saliency SEG, the organ SEG (no masks here: none), the SR
        assert _modalities(orthanc, study) == ["CT", "OT", "SEG", "SR"], name
        assert sorted(p.name for p in (out / "cases" / name / "dicom").iterdir()) == \
            ["hirescam_liver.pm.dcm", "saliency_top5.seg.dcm", "scores.sr.dcm"]
    assert len(_rows(out / "predictions.csv")) == 8  # 2 cases x 4 classes, labels from the manifest

    monkeypatch.setattr(DICOMwebClient, "store_instances", store)
    again = _run(manifest, out, orthanc)
    assert again.computed == [] and sorted(again.skipped) == ["a", "b"]
    dicomweb.push(orthanc, [studies["a"]])  # study a's series gains its last slice: a new identity
    third = _run(manifest, out, orthanc)
    assert third.computed == ["a"] and third.skipped == ["b"]


@pytest.mark.slow
def test_a_push_that_keeps_failing_is_an_error_row_and_is_redone(orthanc, studies, manifest, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(dicomweb, "PUSH_WAIT", 0.01)

    def down(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("connection refused")

    store = DICOMwebClient.store_instances
    monkeypatch.setattr(DICOMwebClient, "store_instances", down)
    out = tmp_path / "run"
    result = _run(manifest, out, orthanc)
    assert result.exit_code == 1 and sorted(result.push_failed) == ["a", "b"] and not result.failed
    errors = {r["case_id"]: r["error"] for r in _rows(out / "errors.csv")}
    assert sorted(errors) == ["a", "b"] and all("push failed after 3 attempts" in e for e in errors.values())
    assert {r["case_id"] for r in _rows(out / "per_case.csv")} <= {"a", "b"}  # the scores are kept
    assert len(_rows(out / "predictions.csv")) == 8
    monkeypatch.setattr(DICOMwebClient, "store_instances", store)
    again = _run(manifest, out, orthanc)
    assert sorted(again.computed) == ["a", "b"] and again.exit_code == 0 and not again.push_failed


def test_manifest_problems_and_server_down_before_any_case(orthanc, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,study_uid\nx,1.2.x\ny,\n")
    with pytest.raises(InputError, match=r"row 1 \(x\): study_uid '1.2.x' is not a DICOM UID.*row 2 \(y\): no study_uid"):
        batch(bad, "demo", tmp_path / "o", dicomweb=orthanc, progress=False)
    good = tmp_path / "good.csv"
    good.write_text(f"case_id,study_uid\nx,{STUDIES['a']}\n")
    with pytest.raises(InputError, match="does not answer"):
        batch(good, "demo", tmp_path / "o", dicomweb="http://127.0.0.1:9/dicom-web", progress=False)
    with pytest.raises(InputError, match="--push .* --dicomweb"):
        batch(good, "demo", tmp_path / "o", push=True, progress=False)


# ---- nothing half-written ----------------------------------------------------------------------------
def _objects(tmp_path, study, n=2):
    """``n`` small Secondary Capture objects of ``study`` (new series) written as files."""
    from pydicom.data import get_testdata_file

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = pydicom.uid.generate_uid()
    paths = []
    for k in range(n):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp_path / f"{study}-{k}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths, series


def _instances(url, study, series):
    client = dicomweb.connect(url)
    return len(client.search_for_instances(study_instance_uid=study, series_instance_uid=series))


def test_objects_of_two_studies_are_refused_before_sending(orthanc, tmp_path):
    ours, series = _objects(tmp_path, "1.2.826.0.1.3680043.2.1125.9.7")
    other, _ = _objects(tmp_path, "1.2.826.0.1.3680043.2.1125.9.8", 1)
    with pytest.raises(InputError, match="nothing was stored"):
        dicomweb.push(orthanc, ours + other)
    assert _instances(orthanc, "1.2.826.0.1.3680043.2.1125.9.7", series) == 0


def test_a_request_cut_off_half_way_stores_nothing(orthanc, tmp_path):
    """One STOW-RS request per case: the server parses the whole body before storing, so an upload
    that breaks off (network, client killed) leaves none of the objects."""
    study = "1.2.826.0.1.3680043.2.1125.9.9"
    paths, series = _objects(tmp_path, study, 3)
    client = dicomweb.connect(orthanc)
    content_type = 'multipart/related; type="application/dicom"; boundary="b0undary"'
    body = client._encode_multipart_message([p.read_bytes() for p in paths], content_type)  # the client's own encoder
    where = urlparse(orthanc)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.putrequest("POST", f"{where.path}/studies/{study}")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[: len(body) * 2 // 3])  # two objects' worth, then the connection drops
    conn.close()
    import time

    time.sleep(1.0)
    assert _instances(orthanc, study, series) == 0
    dicomweb.push(orthanc, paths)  # the same push, whole: all three
    assert _instances(orthanc, study, series) == 3
    dicomweb.push(orthanc, paths)  # and again (a retry): replaced, not doubled
    assert _instances(orthanc, study, series) == 3


def test_a_partial_refusal_by_the_server_names_what_it_kept(orthanc, tmp_path, monkeypatch):
    """What DICOMweb cannot undo: a server that takes some objects of a request and refuses others
    (409). Orthanc's DICOMweb has no DELETE (405), so the error names the objects left there."""
    study = "1.2.826.0.1.3680043.2.1125.9.10"
    ours, series = _objects(tmp_path, study, 1)
    other, _ = _objects(tmp_path, "1.2.826.0.1.3680043.2.1125.9.11", 1)
    monkeypatch.setattr(dicomweb, "_check_objects", lambda datasets: study)  # let the bad one through
    with pytest.raises(InputError) as err:
        dicomweb.push(orthanc, ours + other)
    kept = pydicom.dcmread(ours[0], stop_before_pixels=True).SOPInstanceUID
    assert "refused 1 of 2" in str(err.value) and f"kept 1 of them" in str(err.value) and kept in str(err.value)
    assert _instances(orthanc, study, series) == 1


def test_cli_batch_dicomweb_options(tmp_path, capsys):
    from saliency_inspector.cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,study_uid\nx,{STUDIES['a']}\n")
    assert main(["batch", str(manifest), "--model", "demo", "--out", str(tmp_path / "o"), "--push"]) == 2
    assert "--dicomweb" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
    assert Path(manifest).exists()
