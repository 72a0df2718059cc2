"""From PACS to PACS: saliency maps as DICOM Parametric Maps, masks as DICOM SEG, and a real
DICOMweb server (a throwaway Orthanc, see orthanc_server.py) to pull the CT from and push them to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

import pydicom  # noqa: E402

from conftest import rotation  # noqa: E402
from dicom_series import write_dicom_series  # noqa: E402
from orthanc_server import free_port, orthanc  # noqa: E402,F401 - the session fixture
from saliency_inspector.cli import main  # noqa: E402
from saliency_inspector.errors import InputError  # noqa: E402
from saliency_inspector.io import dicom_out, dicomweb  # noqa: E402
from saliency_inspector.io.volume import Volume, read_volume, resample_to  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1.41"  # dicom_series.py's study


def _grids(ct: Volume) -> dict:
    """The phantom's grid as stored four ways: identity, flipped (k and i reversed), permuted
    (j and k swapped) and oblique (rotated)."""
    a = ct.array
    d, sp = ct.direction, ct.spacing
    flipped = Volume(a[::-1, :, ::-1], sp, ct.index_to_physical([a.shape[2] - 1, 0, a.shape[0] - 1]),
                     d @ np.diag([-1.0, 1.0, -1.0]))
    permuted = Volume(np.ascontiguousarray(np.swapaxes(a, 0, 1)), (sp[0], sp[2], sp[1]), ct.origin,
                      d[:, [0, 2, 1]])
    oblique = Volume(a, sp, ct.origin, rotation(10.0, -6.0, 15.0))
    return {"identity": ct, "flipped": flipped, "permuted": permuted, "oblique": oblique}


@pytest.fixture(scope="module")
def phantom():
    from saliency_inspector.synth.phantom import make_phantom

    return make_phantom(seed=5, size=(40, 36, 20))


@pytest.mark.parametrize("storage", ["identity", "flipped", "permuted", "oblique"])
def test_parametric_map_and_seg_round_trip_on_the_ct_grid(phantom, storage, tmp_path):
    ct = _grids(phantom.ct)[storage]
    assert np.array_equal(resample_to(ct, phantom.ct, "nearest").array, phantom.ct.array) or storage == "oblique"
    rng = np.random.default_rng(1)
    saliency = ct.with_array(rng.normal(size=ct.shape).astype(np.float32) * 3.5)
    organs = phantom.organs.resampled_to(ct)
    source = dicom_out.DicomSource.standalone(ct)
    dicom_out.parametric_map(saliency, source, "hirescam", "liver").save_as(tmp_path / "map.dcm")
    dicom_out.write_segments_dicom(organs, tmp_path / "organs.dcm", source)

    back = dicom_out.read_parametric_map(tmp_path / "map.dcm")
    on_ct = resample_to(back, ct, "linear")
    np.testing.assert_allclose(on_ct.array, saliency.array, rtol=1e-5, atol=1e-5)
    masks = dicom_out.read_segmentation(tmp_path / "organs.dcm")
    assert list(masks) == organs.names
    for name, mask in masks.items():
        assert np.array_equal(resample_to(mask, ct, "nearest").array, organs.mask(name)), name

    pm = pydicom.dcmread(tmp_path / "map.dcm")
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and "FloatPixelData" in pm
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert "hirescam" in pm.ContentDescription and "liver" in pm.ContentDescription
    assert "ReferencedSeriesSequence" not in pm  # a CT from NRRD: nothing to reference
    seg = pydicom.dcmread(tmp_path / "organs.dcm")
    assert pm.StudyInstanceUID == seg.StudyInstanceUID and pm.FrameOfReferenceUID == seg.FrameOfReferenceUID
    codes = {s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence}
    assert codes["liver"] == "10200004" and codes["lung_left"] == "44029006" and codes["kidney_right"] == "9846003"


def test_unknown_organ_name_gets_the_stated_fallback_code(phantom, tmp_path):
    ct = phantom.ct
    source = dicom_out.DicomSource.standalone(ct)
    mask = np.zeros(ct.shape, bool)
    mask[5:9, 10:20, 10:20] = True
    dicom_out.segmentation({"gallbladder_thing": mask}, ct, source).save_as(tmp_path / "x.dcm")
    item = pydicom.dcmread(tmp_path / "x.dcm").SegmentSequence[0]
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == dicom_out.FALLBACK_TYPE[0]
    assert item.SegmentLabel == "gallbladder_thing"


def test_objects_for_a_dicom_ct_reference_its_series(phantom, tmp_path):
    ct = _grids(phantom.ct)["flipped"]
    folder = write_dicom_series(ct.with_array(ct.array.astype(np.int16)), tmp_path / "ct")
    read = read_volume(folder)
    source = dicom_out.DicomSource.from_folder(folder)
    path = tmp_path / "map.dcm"
    dicom_out.parametric_map(read.with_array(read.array.astype(np.float32)), source, "gradcam", "x").save_as(path)
    pm = pydicom.dcmread(path)
    first = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    assert pm.StudyInstanceUID == first.StudyInstanceUID
    # the test writer (GDCM) leaves FrameOfReferenceUID out: the objects then get a new one
    assert pm.FrameOfReferenceUID == first.get("FrameOfReferenceUID", pm.FrameOfReferenceUID) != ""
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    back = resample_to(dicom_out.read_parametric_map(path), read)
    np.testing.assert_allclose(back.array, read.array, atol=1e-4)


# ---- a real DICOMweb server ------------------------------------------------------------------------
def _upload(url, folder):
    return dicomweb.push(url, sorted(p for p in Path(folder).iterdir() if p.is_file()))


@pytest.fixture(scope="module")
def phantom_study(orthanc, phantom, tmp_path_factory):
    """The phantom (oblique storage) written as a DICOM CT series and stored on the test Orthanc."""
    ct = _grids(phantom.ct)["oblique"]
    folder = write_dicom_series(ct.with_array(ct.array.astype(np.int16)), tmp_path_factory.mktemp("ct"))
    _upload(orthanc, folder)
    return folder


def test_pull_explain_push_and_read_back_equal_to_the_local_maps(orthanc, phantom_study, tmp_path, capsys):
    out = tmp_path / "pacs"
    code = main(["explain", "--dicomweb", orthanc, "--study", STUDY_UID, "--model", "demo", "--method", "hirescam",
                 "--push", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    local = tmp_path / "local"
    assert main(["explain", str(phantom_study), "--model", "demo", "--method", "hirescam", "--out", str(local)]) == 0

    client = dicomweb.connect(orthanc)
    series = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0]
              for s in client.search_for_series(study_instance_uid=STUDY_UID)}
    maps = sorted(local.glob("hirescam_*.nrrd"))
    # one series per Parametric Map (highdicom gives them modality OT), one SEG of the binarised maps,
    # one SR of the probabilities
    assert sorted(series.values()) == ["CT", *["OT"] * len(maps), "SEG", "SR"]
    ct = None
    for nrrd in maps:
        ct = read_volume(nrrd)
        pulled = _pull_object(client, series, "OT", nrrd.stem, tmp_path)
        np.testing.assert_allclose(resample_to(dicom_out.read_parametric_map(pulled), ct).array, ct.array,
                                   rtol=1e-5, atol=1e-6)
    assert ct is not None
    seg = _pull_object(client, series, "SEG", None, tmp_path)
    local_seg = out / "dicom" / "saliency_top5.seg.dcm"
    for name, mask in dicom_out.read_segmentation(seg).items():
        assert np.array_equal(mask.array, dicom_out.read_segmentation(local_seg)[name].array)


def _pull_object(client, series, modality, stem, tmp_path):
    for uid, m in series.items():
        if m != modality:
            continue
        for ds in client.retrieve_series(study_instance_uid=STUDY_UID, series_instance_uid=uid):
            if stem is None or stem.split("_", 1)[1].replace("_", " ") in ds.ContentDescription.replace("_", " "):
                path = tmp_path / f"{uid}.dcm"
                ds.save_as(path)
                return path
    raise AssertionError(f"no {modality} {stem} on the server")


def test_server_down_is_one_clear_line(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(InputError, match="does not answer"):
        dicomweb.read_study_ct(url, STUDY_UID)
    code = main(["explain", "--dicomweb", url, "--study", STUDY_UID, "--model", "demo", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not answer" in err


def test_wrong_study_uid_and_not_a_uid(orthanc):
    with pytest.raises(InputError, match="no such study"):
        dicomweb.read_study_ct(orthanc, "1.2.3.4.5.6.7")
    with pytest.raises(InputError, match="not a DICOM UID"):
        dicomweb.read_study_ct(orthanc, "1.2.x")


def test_study_without_ct_and_a_single_slice_ct_from_pydicom_test_data(orthanc, tmp_path):
    from pydicom.data import get_testdata_file

    mr = Path(get_testdata_file("MR_small.dcm"))  # real scanner files shipped inside pydicom
    dicomweb.push(orthanc, [mr])
    study = str(pydicom.dcmread(mr, stop_before_pixels=True).StudyInstanceUID)
    with pytest.raises(InputError, match="no CT series in this study .*MR"):
        dicomweb.read_study_ct(orthanc, study)
    ct_small = Path(get_testdata_file("CT_small.dcm"))  # pydicom ships one CT slice, no CT series
    dicomweb.push(orthanc, [ct_small])
    study = str(pydicom.dcmread(ct_small, stop_before_pixels=True).StudyInstanceUID)
    with pytest.raises(InputError, match="single slice"):
        dicomweb.read_study_ct(orthanc, study)


def test_http_error_is_one_clear_line(orthanc):
    with pytest.raises(InputError, match="answered 404"):
        dicomweb.read_study_ct(orthanc.replace("/dicom-web", "/no-such-root"), STUDY_UID)


@pytest.mark.parametrize("input_kind", ["nrrd", "dicom"])
def test_cli_dicom_out_objects_pass_dciodvfy(phantom, input_kind, tmp_path, capsys):
    """``explain --dicom-out`` from an NRRD (new study, no references) and from a DICOM folder
    (references its series); every object is checked with dciodvfy (dicom3tools) where installed."""
    import shutil
    import subprocess

    from saliency_inspector.io.volume import write_volume

    ct = _grids(phantom.ct)["flipped"]
    if input_kind == "nrrd":
        given = write_volume(ct, tmp_path / "ct.nrrd")
    else:
        given = write_dicom_series(ct.with_array(ct.array.astype(np.int16)), tmp_path / "ct")
    out = tmp_path / "dicom"
    assert main(["explain", str(given), "--model", "demo", "--method", "gradcam", "--out", str(tmp_path / "o"),
                 "--dicom-out", str(out)]) == 0, capsys.readouterr().err
    # a Parametric Map per map, the SEG of the binarised maps, the SR of the probabilities
    assert len(list(out.glob("*.dcm"))) == len(list((tmp_path / "o").glob("*.nrrd"))) + 2
    source = dicom_out.DicomSource.standalone(ct) if input_kind == "nrrd" else dicom_out.DicomSource.from_folder(given)
    dicom_out.write_segments_dicom(phantom.organs.resampled_to(read_volume(given)), out / "organs.seg.dcm", source)
    objects = sorted(out.glob("*.dcm"))
    for path in objects:
        ds = pydicom.dcmread(path)
        if ds.Modality != "SR":  # the SR references its evidence (the maps and SEGs) instead
            assert ("ReferencedSeriesSequence" in ds) == (input_kind == "dicom")
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools): highdicom's own checks only")
    for path in objects:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (path.name, errors)
