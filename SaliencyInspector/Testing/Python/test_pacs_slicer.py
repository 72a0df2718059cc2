"""The Slicer module exports a CT's maps as DICOM into Slicer's DICOM database: real MRML
(slicer-core) and the module's real Logic; only the DICOM database (``slicer.dicomDatabase``, a CTK
object of the application) and ``DICOMLib.DICOMUtils`` are stand-ins, recorded here.

What only the application can check: that ctkDICOMIndexer really indexes the folder, and that the
DICOM browser then lists the Parametric Maps and SEG under the CT's study (and loads them with
QuantitativeReporting / the Segmentations DICOM plugin)."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("trame_slicer", reason="trame-slicer is not installed")
pytest.importorskip("highdicom")

import offscreen_views as ov  # noqa: E402
import slicer_standins  # noqa: E402
from dicom_series import write_dicom_series  # noqa: E402

from saliency_inspector import mrml  # noqa: E402
from saliency_inspector.errors import InputError  # noqa: E402
from saliency_inspector.io import dicom_out  # noqa: E402
from saliency_inspector.io.volume import read_volume, resample_to  # noqa: E402


class Database:
    """``slicer.dicomDatabase`` as the export uses it (ctkDICOMDatabase: isOpen, fileForInstance)."""

    def __init__(self, files):
        self.isOpen = True
        self.files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}

    def fileForInstance(self, uid):
        return self.files.get(uid, "")


@pytest.fixture
def module_env(monkeypatch, tmp_path):
    app = ov.make_app()
    slicer_standins.install(monkeypatch, app, tmp_path / "slicer-tmp")
    module = importlib.import_module("SaliencyInspector")
    monkeypatch.setattr(module.SaliencyInspectorLogic, "_dependenciesReady", False)
    yield module
    for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_export_from_a_ct_of_the_dicom_database_references_its_series_and_is_imported(module_env, tmp_path,
                                                                                      monkeypatch):
    from saliency_inspector.synth.phantom import make_phantom

    module = module_env
    case = make_phantom(seed=4, size=(48, 44, 24), lesions=["liver"], oblique=True)
    folder = write_dicom_series(case.ct.with_array(case.ct.array.astype(np.int16)), tmp_path / "ct")
    files = sorted(folder.iterdir())
    database = Database(files)
    imported = []
    dicomlib = types.ModuleType("DICOMLib")
    dicomlib.DICOMUtils = types.SimpleNamespace(importDicom=lambda d, db=None, copyFiles=False: imported.append((d, db)))
    monkeypatch.setitem(sys.modules, "DICOMLib", dicomlib)
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)

    scene = slicer.mrmlScene
    ct = read_volume(folder)
    ct_node = mrml.add_volume_node(scene, ct, "CT from the database")
    # what Slicer's DICOMScalarVolumePlugin leaves on a loaded volume: its instances, in slice order
    ct_node.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    organs = mrml.add_segmentation_node(scene, {n: case.organs.resampled_to(ct).mask(n) for n in case.organs.names},
                                        ct_node, slicer.modules.segmentations.logic())
    logic = module.SaliencyInspectorLogic()
    nodes, _, _ = logic.explain(ct_node, model="demo", methods=("hirescam",), classes=["liver"], device="cpu")
    out = tmp_path / "export"
    paths = logic.exportDicom(ct_node, out, segmentationNode=organs)

    assert sorted(p.name for p in paths) == ["hirescam_liver.pm.dcm", "organs.seg.dcm", "saliency_top5.seg.dcm"]
    assert imported == [(str(out), database)]  # into the database the CT came from
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    pm = pydicom.dcmread(out / "hirescam_liver.pm.dcm")
    assert pm.StudyInstanceUID == first.StudyInstanceUID
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    # the scene keeps the raw map; the Parametric Map holds it on the CT grid (as the views show it)
    on_ct = logic.mapOnCtGrid(nodes[("hirescam", "liver")], ct_node)
    np.testing.assert_allclose(resample_to(dicom_out.read_parametric_map(out / "hirescam_liver.pm.dcm"), on_ct).array,
                               on_ct.array, rtol=1e-5, atol=1e-6)
    masks = dicom_out.read_segmentation(out / "organs.seg.dcm")
    assert np.array_equal(resample_to(masks["liver"], ct, "nearest").array, case.organs.resampled_to(ct).mask("liver"))


def test_export_of_a_ct_not_from_the_database_gets_its_own_study_and_needs_maps(module_env, tmp_path, monkeypatch):
    from saliency_inspector import mrml_dicom
    from saliency_inspector.synth.phantom import make_phantom

    case = make_phantom(seed=4, size=(32, 30, 12))
    scene = slicer.mrmlScene
    ct_node = mrml.add_volume_node(scene, case.ct, "CT from a file")
    with pytest.raises(InputError, match="no saliency maps of 'CT from a file'"):
        mrml_dicom.export_dicom(scene, ct_node, tmp_path / "none")
    saliency = case.ct.with_array(np.random.default_rng(0).normal(size=case.ct.shape).astype(np.float32))
    node = mrml.add_saliency_node(scene, saliency, ct_node, "map")
    node.SetAttribute("SaliencyInspector.Method", "gradcam")
    node.SetAttribute("SaliencyInspector.Class", "kidney")
    paths = mrml_dicom.export_dicom(scene, ct_node, tmp_path / "out", dicom_database=Database([]))
    pm = pydicom.dcmread(paths[0])
    assert paths[0].name == "gradcam_kidney.pm.dcm" and "ReferencedSeriesSequence" not in pm
    np.testing.assert_allclose(resample_to(dicom_out.read_parametric_map(paths[0]), case.ct).array, saliency.array,
                               rtol=1e-5, atol=1e-6)
