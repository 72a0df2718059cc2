"""The scores as a DICOM Structured Report: a TID 1500 Measurement Report that a PACS keeps beside
the saliency maps (Parametric Maps) and the masks (SEG) it was computed from.

One measurement group per scored row (a map of one method and class against one segment):

* TID 1411 "Volumetric ROI Measurements" referencing the segment of the organ SEG it was scored
  against (``ReferencedSegment``: the SEG's SOP Instance UID and segment number, plus the CT series
  the SEG was made on), with the method as the group's algorithm, and each metric a TID 300
  measurement whose source is the Parametric Map of that method and class;
* a segment that is not in the SEG (e.g. a region given in another file) gets a TID 1501 group
  (measurements without a region) with the segment named in its tracking identifier;
* the model's probability of each class: one TID 1501 group per class.

The metrics are not in any DICOM code table, so they are coded in a private coding scheme
(:data:`SCHEME`, a "99" designator as PS3.16 §8.2 allows) with the metric registry's key as the code
value and its name as the meaning; ratios have the UCUM unit "1", distances "mm". Undefined values
(NaN: an empty mask, a constant map) are left out of the report (the CSV/JSON tables keep them with
their reason).

API read in highdicom 0.27.0's sources: ``highdicom/sr/templates.py`` (``MeasurementReport``,
``VolumetricROIMeasurementsAndQualitativeEvaluations``, ``MeasurementsAndQualitativeEvaluations``,
``Measurement``, ``TrackingIdentifier``, ``AlgorithmIdentification``, ``ObservationContext``,
``DeviceObserverIdentifyingAttributes``), ``highdicom/sr/content.py`` (``ReferencedSegment``,
``SourceSeriesForSegmentation``, ``SourceImageForMeasurement``) and ``highdicom/sr/sop.py``
(``Comprehensive3DSR``, ``srread``).
"""

from __future__ import annotations

import math

from .dicom_out import MANUFACTURER, SOFTWARE_VERSION, _hd, _lo

SCHEME = "99SALINSP"  # private coding scheme of the saliency metrics
SR_SERIES_NUMBER = 9300
PROBABILITY = ("probability", "Model probability of the class")


def _concept(value: str, meaning: str, scheme: str = SCHEME):
    return _hd().sr.CodedConcept(value, scheme, _lo(meaning))


def _unit(unit: str):
    return _concept("mm", "millimeter", "UCUM") if unit == "mm" else _concept("1", "no units", "UCUM")


def scores_report(rows, source, metrics: dict, seg=None, maps=None, predictions=None,
                  series_number: int = SR_SERIES_NUMBER + 1):
    """A Comprehensive 3D SR (pydicom Dataset) holding the scores.

    ``rows``: dicts with ``method``, ``class``, ``segment`` and the metric keys (as
    :meth:`EvaluationTable.to_records` plus method and class); ``source``: the
    :class:`~.dicom_out.DicomSource` of the CT; ``metrics``: the metric registry
    (:data:`~saliency_inspector.scoring.metrics.METRICS`: key -> info with ``name`` and ``unit``;
    passed in, io/ imports nothing of scoring); ``seg``: the header of the organ SEG the segments are
    in (its ``SegmentSequence`` is matched by label); ``maps``: ``{(method, class): header}`` of the
    Parametric Maps; ``predictions``: dicts with ``class`` and ``probability``.
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    maps = maps or {}
    segment_numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence} if seg else {}
    ct_series = hd.sr.SourceSeriesForSegmentation(str(source.headers[0].SeriesInstanceUID))
    groups = []
    for row in rows:
        method, klass, segment = str(row["method"]), str(row["class"]), str(row["segment"])
        pm = maps.get((method, klass))
        measurements = [hd.sr.Measurement(
            name=_concept(key, info.name), value=float(row[key]), unit=_unit(info.unit),
            referenced_images=[hd.sr.SourceImageForMeasurement(str(pm.SOPClassUID), str(pm.SOPInstanceUID))]
            if pm is not None else None)
            for key, info in metrics.items() if _finite(row.get(key))]
        if not measurements:
            continue
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=_lo(f"{method} {klass} vs {segment}"))
        algorithm = hd.sr.AlgorithmIdentification(name=_lo(method), version=SOFTWARE_VERSION)
        if seg is not None and segment in segment_numbers:
            reference = hd.sr.ReferencedSegment(str(seg.SOPClassUID), str(seg.SOPInstanceUID),
                                                segment_numbers[segment], source_series=ct_series)
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_segment=reference, algorithm_id=algorithm,
                measurements=measurements))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, algorithm_id=algorithm, measurements=measurements))
    for p in predictions or ():
        if _finite(p.get("probability")):
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=_lo(f"class {p['class']}")),
                measurements=[hd.sr.Measurement(name=_concept(*PROBABILITY), value=float(p["probability"]),
                                                unit=_unit(""))]))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=SOFTWARE_VERSION))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    evidence = [h for h in [seg, *maps.values()] if h is not None] or [source.headers[0]]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description="saliency scores", record_evidence=True)
    # the private scheme is declared, as PS3.3 C.12.1.1.2 asks for a scheme not in PS3.16's table
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "SaliencyInspector saliency metrics"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def read_scores(path) -> dict:
    """The report back: ``{"rows": [{"tracking", "segment_number" | None, key: value}], "probabilities":
    {class: p}}`` read with highdicom's own SR parser (``hd.sr.srread`` + ``MeasurementReport``)."""
    hd = _hd()
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(str(path)).content)
    rows, probabilities = [], {}
    for group in report.get_volumetric_roi_measurement_groups() + report.get_image_measurement_groups():
        tracking = str(group.tracking_identifier)
        values = {m.name.value: float(m.value) for m in group.get_measurements()}
        if tracking.startswith("class ") and PROBABILITY[0] in values:
            probabilities[tracking[len("class "):]] = values[PROBABILITY[0]]
            continue
        number = None
        if isinstance(group, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations):
            number = int(group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
        rows.append({"tracking": tracking, "segment_number": number, **values})
    return {"rows": rows, "probabilities": probabilities}
