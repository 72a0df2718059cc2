"""Saliency maps and masks as standard DICOM objects that a PACS viewer shows beside the study.

* every saliency map as a **Parametric Map** (float32 pixels; the real-world value mapping names
  the unit, "no units", and the method and class);
* binarised maps and organ masks as a **DICOM SEG** (one segment per map or organ, SNOMED-coded
  where the name is known, see :data:`ORGAN_CODES` and :data:`FALLBACK_TYPE`).

Both reference the CT series they derive from (its Study, Series and Frame of Reference UIDs) and
carry one frame per CT slice with the CT's exact geometry (per-frame Image Position, one Image
Orientation, Pixel Spacing): oblique and flipped storage come out as they went in. A CT that did
not come from DICOM (NRRD, NIfTI) has no series to reference: the objects then get a new Study and
Frame of Reference UID of their own and no references (:meth:`DicomSource.standalone`).

Written with highdicom (optional extra ``dicom``; Slicer ships highdicom 0.27.0). The API used
here was read in highdicom 0.27.0's own sources: ``highdicom/pm/sop.py`` (``ParametricMap``),
``highdicom/pm/content.py`` (``RealWorldValueMapping``), ``highdicom/seg/sop.py``
(``Segmentation``, ``segread``), ``highdicom/seg/content.py`` (``SegmentDescription``),
``highdicom/content.py`` (``PixelMeasuresSequence``, ``PlaneOrientationSequence``,
``PlanePositionSequence``) and ``highdicom/image.py`` (``imread``, ``Image.get_volume``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .volume import Volume

MANUFACTURER = "SaliencyInspector"
SOFTWARE_VERSION = "0.1.0"
SALIENCY_SERIES_NUMBER = 9100   # Parametric Maps get 9101, 9102, …; SEGs 9201, …
SEG_SERIES_NUMBER = 9200

# SNOMED CT codes (value, meaning) for the phantom's organ names and the TotalSegmentator names
# that match them. Left/right organs use SNOMED's pre-coordinated "left lung structure" etc.
# (highdicom 0.27's SegmentDescription has no property-type modifier).
ORGAN_CODES = {
    "body": ("38266002", "Entire body"),
    "lung": ("39607008", "Lung"),
    "lung_left": ("44029006", "Left lung"),
    "lung_right": ("3341006", "Right lung"),
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney": ("64033007", "Kidney"),
    "kidney_left": ("18639004", "Left kidney"),
    "kidney_right": ("9846003", "Right kidney"),
    "spine": ("421060004", "Spine"),
    "vertebral_column": ("421060004", "Spine"),
    "aorta": ("15825003", "Aorta"),
    "heart": ("80891009", "Heart"),
}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")  # category of every organ segment
# A name not in ORGAN_CODES (e.g. a TotalSegmentator label we do not map) is coded as this type
# in the anatomical-structure category; its own name stays the segment label.
FALLBACK_TYPE = ANATOMICAL_STRUCTURE
LESION_CATEGORY = ("49755003", "Morphologically Abnormal Structure")
LESION_TYPE = ("52988006", "Lesion")
# Binarised saliency maps: DCM 130404 "Saliency" in the spatial-and-relational-concept category.
SALIENCY_CATEGORY = ("309825002", "Spatial and Relational Concept", "SCT")
SALIENCY_TYPE = ("130404", "Saliency", "DCM")


def _hd():
    """highdicom, or an InputError saying how to install it."""
    try:
        import highdicom
    except ImportError:
        raise InputError("writing DICOM needs highdicom: pip install 'saliency-inspector[dicom]' "
                         "(Slicer 5.10+ ships it)") from None
    return highdicom


@dataclass
class DicomSource:
    """The CT series the objects derive from.

    ``headers``: the series' slice headers (pydicom Datasets without pixels). ``from_dicom`` is
    False for a stand-in made by :meth:`standalone`: objects written for it reference nothing.
    """

    headers: list
    from_dicom: bool = True

    @classmethod
    def from_folder(cls, folder, series: str | None = None) -> "DicomSource":
        """The headers of the CT series :func:`~saliency_inspector.io.volume.read_dicom_series`
        reads from ``folder`` (``series``: a SeriesInstanceUID; default the CT series with the
        most slices, the same rule)."""
        import pydicom

        by_series = {}
        for path in sorted(Path(folder).iterdir()):
            if not path.is_file():
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not a DICOM file: the volume reader skips it too
                continue
            if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds:
                by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        if series is None:
            ct = {uid: h for uid, h in by_series.items() if str(h[0].get("Modality", "")).upper() == "CT"}
            series = max(ct, key=lambda uid: len(ct[uid])) if ct else None
        if series not in by_series:
            raise InputError(f"{folder}: no CT series {'to reference' if series is None else series} "
                             "among its DICOM files")
        headers = by_series[series]
        if "FrameOfReferenceUID" not in headers[0]:
            # A conformant CT always has one; for one that has not (some exports), the objects get a
            # new Frame of Reference of their own (their positions are still the CT's).
            from pydicom.uid import generate_uid

            frame_of_reference = generate_uid()
            for ds in headers:
                ds.FrameOfReferenceUID = frame_of_reference
        return cls(headers, True)

    @classmethod
    def standalone(cls, grid: Volume) -> "DicomSource":
        """For a CT that is not a DICOM series: stand-in slice headers (kept in memory, never
        written) with the grid's geometry and a new Study and Frame of Reference UID; the objects
        written for it carry no references to them."""
        from pydicom.dataset import Dataset
        from pydicom.uid import CTImageStorage, generate_uid

        study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
        d = grid.direction
        headers = []
        for k in range(grid.shape[0]):
            ds = Dataset()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.FrameOfReferenceUID, ds.SOPInstanceUID = frame_of_reference, generate_uid()
            ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
            ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[2])
            ds.ImagePositionPatient = [float(v) for v in grid.index_to_physical([0, 0, k])]
            ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
            ds.PixelSpacing = [grid.spacing[1], grid.spacing[0]]
            ds.SliceThickness = grid.spacing[2]
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                            "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber"):
                setattr(ds, keyword, "")
            headers.append(ds)
        return cls(headers, False)

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID of the objects (the CT's, or the stand-in's new one)."""
        return str(self.headers[0].StudyInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        """FrameOfReferenceUID the objects' positions are in."""
        return str(self.headers[0].FrameOfReferenceUID)

    def for_grid(self, grid: Volume) -> "DicomSource":
        """This source, or, for a series read onto another grid (a gap or a tilt regularized, see
        io/dicom_grid.py), stand-in headers on ``grid`` in the series' study, Frame of Reference and
        patient: the objects then sit in the CT's study without referencing slices that are not there."""
        try:
            self.aligned_headers(grid)
            return self
        except InputError:
            if not self.from_dicom:
                raise
        stand_in = DicomSource.standalone(grid)
        first = self.headers[0]
        for ds in stand_in.headers:
            for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID", "PatientBirthDate",
                            "PatientSex", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
                            "AccessionNumber"):
                if keyword in first:
                    setattr(ds, keyword, first.get(keyword))
        return stand_in

    def aligned_headers(self, grid: Volume) -> list:
        """The headers in the order of ``grid``'s slices (k = 0, 1, …); InputError when the series
        is not on ``grid`` (another slice size, count or position)."""
        h = self.headers[0]
        where = f"the map grid ({grid.describe_grid()}) is not the grid of the source series {h.SeriesInstanceUID}"
        if (int(h.Rows), int(h.Columns)) != tuple(grid.shape[1:]) or len(self.headers) != grid.shape[0]:
            raise InputError(f"{where} ({h.Columns}×{h.Rows} pixels, {len(self.headers)} slices)")
        k = np.array([grid.physical_to_index([float(v) for v in ds.ImagePositionPatient])[2]
                      for ds in self.headers])
        order = np.argsort(k)
        if not np.allclose(k[order], np.arange(grid.shape[0]), atol=0.01):
            raise InputError(f"{where} (slice positions differ)")
        return [self.headers[i] for i in order]


# ---- geometry -----------------------------------------------------------------------------------
def _planes(grid: Volume) -> dict:
    """highdicom's per-frame geometry for ``grid``: frame k is the CT's slice k, in the CT's order."""
    hd = _hd()
    d, (sx, sy, sz) = grid.direction, grid.spacing
    positions = grid.index_to_physical(np.stack([np.zeros(grid.shape[0]), np.zeros(grid.shape[0]),
                                                 np.arange(grid.shape[0])], axis=1))
    return {
        # PixelSpacing is (between rows, between columns) = (j spacing, i spacing)
        "pixel_measures": hd.PixelMeasuresSequence(pixel_spacing=(sy, sx), slice_thickness=sz,
                                                   spacing_between_slices=sz),
        # ImageOrientationPatient: the row direction (i axis) then the column direction (j axis)
        "plane_orientation": hd.PlaneOrientationSequence(
            coordinate_system="PATIENT", image_orientation=(*d[:, 0], *d[:, 1])),
        "plane_positions": [hd.PlanePositionSequence(coordinate_system="PATIENT", image_position=tuple(p))
                            for p in positions],
    }


def _drop_references(ds) -> None:
    """Remove the references highdicom made to a stand-in source (see DicomSource.standalone)."""
    for keyword in ("ReferencedSeriesSequence", "SourceImageSequence",
                    "StudiesContainingOtherReferencedInstancesSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        if "DerivationImageSequence" in frame:
            del frame.DerivationImageSequence


def _code(value, meaning, scheme="SCT"):
    return _hd().sr.CodedConcept(value, scheme, meaning)


def _lo(text: str) -> str:
    """A DICOM LO value: at most 64 characters, no backslash."""
    return text.replace("\\", "/")[:64]


# ---- Parametric Map -----------------------------------------------------------------------------
def parametric_map(volume: Volume, source: DicomSource, method: str, class_name: str,
                   series_number: int = SALIENCY_SERIES_NUMBER + 1):
    """A Parametric Map (float32) of one saliency map on the CT grid, as a pydicom Dataset."""
    hd = _hd()
    from pydicom.sr.codedict import codes

    headers = source.aligned_headers(volume)
    pixels = np.ascontiguousarray(volume.array, dtype=np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    what = _lo(f"{method} saliency, class {class_name}")
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=re.sub(r"[^A-Z0-9_ ]", "_", method.upper())[:16] or "SALIENCY",
        lut_explanation=what, unit=codes.UCUM.NoUnits, value_range=(low, high),
        slope=1.0, intercept=0.0, quantity_definition=codes.DCM.Saliency)
    pm = hd.pm.ParametricMap(
        source_images=headers, pixel_array=pixels,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER,
        software_versions=SOFTWARE_VERSION, device_serial_number="0",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        window_center=(low + high) / 2, window_width=max(high - low, 1e-6),
        content_description=what, content_label="SALIENCY", series_description=what,
        **_planes(volume))
    # General Series Laterality is type 2C (paired body parts); dciodvfy asks for it on a
    # Parametric Map: present and empty (unknown) is valid.
    pm.Laterality = ""
    # Saliency values are small floats: a window under 1 is only valid with LINEAR_EXACT (dciodvfy).
    for voi in pm.SharedFunctionalGroupsSequence[0].get("FrameVOILUTSequence", []):
        voi.VOILUTFunction = "LINEAR_EXACT"
    _keep_slice_spacing(pm, volume)
    if not source.from_dicom:
        _drop_references(pm)
    return pm


# ---- SEG ----------------------------------------------------------------------------------------
def _segment_codes(name: str, kind: str):
    if kind == "saliency":
        return _code(*SALIENCY_CATEGORY), _code(*SALIENCY_TYPE)
    if kind == "lesion" or name.lower().startswith("lesion"):
        return _code(*LESION_CATEGORY), _code(*LESION_TYPE)
    return _code(*ANATOMICAL_STRUCTURE), _code(*ORGAN_CODES.get(name.lower(), FALLBACK_TYPE))


def segmentation(masks: dict, grid: Volume, source: DicomSource, description: str = "organs",
                 kind: str = "organ", colors: dict | None = None,
                 series_number: int = SEG_SERIES_NUMBER + 1):
    """A binary DICOM SEG with one segment per ``masks`` entry (name -> bool (z, y, x) array on
    ``grid``; segments may overlap). ``kind``: "organ" (SNOMED-coded by name, see
    :data:`ORGAN_CODES`), "lesion" or "saliency" (binarised maps)."""
    hd = _hd()
    headers = source.aligned_headers(grid)
    names = list(masks)
    if not names:
        raise InputError("no masks to write as a DICOM SEG")
    pixels = np.zeros((*grid.shape, len(names)), dtype=bool)
    for s, name in enumerate(names):
        pixels[..., s] = masks[name]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=MANUFACTURER, version=SOFTWARE_VERSION, family=_code("123109", "Manual Processing", "DCM")
        if kind != "saliency" else _code("130404", "Saliency", "DCM"))
    descriptions = []
    for number, name in enumerate(names, start=1):
        category, prop = _segment_codes(name, kind)
        rgb = (colors or {}).get(name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=_lo(name), segmented_property_category=category,
            segmented_property_type=prop,
            algorithm_type="AUTOMATIC" if kind == "saliency" else "MANUAL",
            algorithm_identification=algorithm if kind == "saliency" else None,
            display_color=hd.color.CIELabColor.from_rgb(*rgb) if rgb else None))
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER,
        software_versions=SOFTWARE_VERSION, device_serial_number="0",
        series_description=_lo(description), **_planes(grid))
    _keep_slice_spacing(seg, grid)
    if not source.from_dicom:
        _drop_references(seg)
    return seg


def _keep_slice_spacing(ds, grid: Volume) -> None:
    """Spacing Between Slices as the grid has it: highdicom can take another value from the source
    headers (seen: 1 for a 12.5 mm series), and readers use it as the slice spacing."""
    for measures in ds.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence", []):
        measures.SpacingBetweenSlices = float(grid.spacing[2])


def binarise(volume: Volume, top_percent: float = 5.0) -> np.ndarray:
    """The map's top ``top_percent`` % of CT voxels by value, strictly positive ones only."""
    values = volume.array
    cut = np.percentile(values, 100.0 - top_percent)
    return (values >= cut) & (values > 0)


# ---- writing a whole explanation -----------------------------------------------------------------
def write_saliency(maps, out_dir, source: DicomSource, top_percent: float = 5.0, segments=None) -> list:
    """Write one Parametric Map per map (``<method>_<class>.pm.dcm``), one SEG of the binarised
    maps (``saliency_top<P>.seg.dcm``: the top ``top_percent`` % of voxels of each map) and, with
    ``segments`` (a :class:`~saliency_inspector.io.segments.Segments` on the CT grid), one SEG of
    the organ masks (``organs.seg.dcm``). ``maps``: ``{(method, class): Volume}`` on the CT grid,
    e.g. ``Explanation.maps`` (one map is made at a time). Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, binary, grid = [], {}, None
    for number, ((method, name), volume) in enumerate(maps.items(), start=1):
        # file names as Explanation.save names the NRRD maps (explainers.explanation.safe_name)
        path = out_dir / f"{method}_{re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)) or '_'}.pm.dcm"
        parametric_map(volume, source, method, name, SALIENCY_SERIES_NUMBER + number).save_as(path)
        written.append(path)
        binary[f"{method} {name}"] = binarise(volume, top_percent)
        grid = volume
    if grid is None:
        raise InputError("no saliency maps to write as DICOM")
    path = out_dir / f"saliency_top{top_percent:g}.seg.dcm"
    segmentation(binary, grid, source, description=f"saliency, top {top_percent:g}% of voxels",
                 kind="saliency", series_number=SEG_SERIES_NUMBER + 1).save_as(path)
    written.append(path)
    if segments is not None:
        written.append(write_segments_dicom(segments, out_dir / "organs.seg.dcm", source))
    return written


def write_segments_dicom(segments, path, source: DicomSource, description: str = "organs") -> Path:
    """Write a :class:`~saliency_inspector.io.segments.Segments` as one DICOM SEG; returns the path."""
    masks = {name: segments.mask(name) for name in segments.names}
    colors = segments.colors
    segmentation(masks, segments.grid, source, description=description, colors=colors,
                 series_number=SEG_SERIES_NUMBER + 2).save_as(path)
    return Path(path)


# ---- reading back -------------------------------------------------------------------------------
def read_parametric_map(path) -> Volume:
    """A Parametric Map file as a float32 Volume of real-world values, read with pydicom.

    (highdicom 0.27's ``Image.get_volume`` fails on float pixels: it reads PixelRepresentation,
    which a float Parametric Map does not have.) Frames are stacked in order along the slice
    normal, whatever their order in the file.
    """
    import pydicom

    ds = pydicom.dcmread(str(path))
    frames = np.asarray(ds.pixel_array, dtype=np.float32).reshape(-1, int(ds.Rows), int(ds.Columns))
    shared = ds.SharedFunctionalGroupsSequence[0]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    orientation = _first(shared, per_frame[0], "PlaneOrientationSequence").ImageOrientationPatient
    spacing = [float(v) for v in _first(shared, per_frame[0], "PixelMeasuresSequence").PixelSpacing]
    mapping = _first(shared, per_frame[0], "RealWorldValueMappingSequence")
    slope = float(mapping.get("RealWorldValueSlope", 1.0))
    intercept = float(mapping.get("RealWorldValueIntercept", 0.0))
    positions = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in per_frame])
    return _stack(frames * slope + intercept, positions, [float(v) for v in orientation], spacing)


def _first(shared, frame, keyword):
    """The first item of a functional group, from the shared groups or else the frame's own."""
    return (shared if keyword in shared else frame)[keyword][0]


def _stack(frames: np.ndarray, positions: np.ndarray, orientation, pixel_spacing) -> Volume:
    """A Volume from 2D frames at ``positions`` (LPS) with one ImageOrientationPatient."""
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    along = positions @ normal
    order = np.argsort(along)
    gaps = np.diff(along[order])
    if len(gaps) and (gaps.min() <= 0 or not np.allclose(gaps, gaps.mean(), rtol=1e-3, atol=1e-4)):
        raise InputError("the DICOM object's frames are not evenly spaced slices of one volume")
    step = float(gaps.mean()) if len(gaps) else 1.0
    direction = np.stack([row, col, normal], axis=1)
    return Volume(frames[order], (pixel_spacing[1], pixel_spacing[0], step), tuple(positions[order[0]]), direction)


def read_segmentation(path) -> dict:
    """A DICOM SEG file as {segment label: bool Volume}, via highdicom's own reader."""
    hd = _hd()
    seg = hd.seg.segread(str(path))
    out = {}
    for number in seg.segment_numbers:
        label = seg.get_segment_description(number).segment_label
        volume = seg.get_volume(segment_numbers=[number], combine_segments=True)
        a = np.asarray(volume.affine, dtype=float)
        m = a[:3, [2, 1, 0]]  # its index is (slice, row, column), ours (i, j, k) = (column, row, slice)
        spacing = np.linalg.norm(m, axis=0)
        out[label] = Volume(np.asarray(volume.array) > 0, tuple(spacing), tuple(a[:3, 3]), m / spacing)
    return out
