"""MRML glue for DICOM export: the saliency maps of a CT node (and optionally its segmentation) as
Parametric Maps and SEG, with the same writer as the CLI (:func:`~.io.dicom_case.write_case_dicom`).

A CT loaded from Slicer's DICOM database carries its slices' SOP Instance UIDs in the node
attribute ``DICOM.instanceUIDs`` (set by Slicer's DICOMScalarVolumePlugin,
Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py) and the database gives each instance's
file (``ctkDICOMDatabase.fileForInstance``): the objects then reference that series and sit in its
study, so Slicer's DICOM browser shows them under the study once the folder is imported
(DICOMLib/DICOMUtils.py ``importDicom``; the Logic does that). A CT that did not come from the
database gets a study of its own. The scene and the database are passed in (no ``slicer`` import).
"""

from __future__ import annotations

from .errors import InputError
from .mrml import segments_from_node, volume_from_node

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


def saliency_maps_of(scene, ct_node, ct=None) -> dict:
    """``{(method, class): Volume}`` of the scene's saliency maps on ``ct_node``'s grid (made by this
    module: attribute ``SaliencyInspector.Saliency``); of several runs, the last node added wins."""
    from .models.preprocess import resample_map
    from .mrml_maps import ct_node_of, is_raw_map, is_slot_node

    ct = volume_from_node(ct_node) if ct is None else ct
    maps = {}
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(k, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute("SaliencyInspector.Saliency") != "1" or is_slot_node(node):
            continue  # a shared view node only shows one of the maps listed here
        volume = volume_from_node(node, "saliency map")
        if is_raw_map(node):  # maps live raw in the scene: put on the CT grid as Explanation.map does
            owner = ct_node_of(node)
            if owner is None or owner.GetID() != ct_node.GetID():
                continue
            volume = resample_map(volume, ct)
        if volume.same_grid(ct):
            maps[(node.GetAttribute("SaliencyInspector.Method") or "map",
                  node.GetAttribute("SaliencyInspector.Class") or node.GetName())] = volume
    return maps


def dicom_source(ct_node, ct, dicom_database=None):
    """The :class:`~.io.dicom_out.DicomSource` of ``ct_node``: its series' headers from the DICOM
    database when the node came from it, else a stand-in with a new study."""
    import pydicom

    from .io.dicom_out import DicomSource

    uids = (ct_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    files = [dicom_database.fileForInstance(uid) for uid in uids] if uids and dicom_database is not None else []
    if not files or not all(files):
        return DicomSource.standalone(ct)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if "FrameOfReferenceUID" not in headers[0]:  # as DicomSource.from_folder: a new one for all slices
        frame = pydicom.uid.generate_uid()
        for ds in headers:
            ds.FrameOfReferenceUID = frame
    return DicomSource(headers, True)


def export_dicom(scene, ct_node, out_dir, dicom_database=None, segmentation_node=None,
                 segmentations_logic=None) -> list:
    """Write the CT node's saliency maps (Parametric Maps, the top-5 % SEG) and, with
    ``segmentation_node``, its segments (SEG) into ``out_dir``; returns the paths. InputError when the
    scene holds no saliency map on the CT's grid."""
    from .io.dicom_case import write_case_dicom

    ct = volume_from_node(ct_node)
    maps = saliency_maps_of(scene, ct_node, ct)
    if not maps:
        raise InputError(f"no saliency maps of '{ct_node.GetName()}' in the scene; compute them first")
    segments = segments_from_node(segmentation_node, ct_node, segmentations_logic) \
        if segmentation_node is not None else None
    return write_case_dicom(out_dir, dicom_source(ct_node, ct, dicom_database), maps=maps, segments=segments)
