"""``demo --dicom-out DIR``: the demo's case as a PACS would keep it, from the files the demo wrote:
its maps as Parametric Maps, its organs and lesions as one SEG, its scores and probabilities as an SR
(:func:`~saliency_inspector.io.dicom_case.write_case_dicom`). The phantom has no DICOM series, so the
objects form a study of their own (:meth:`~saliency_inspector.io.dicom_out.DicomSource.standalone`)."""

from __future__ import annotations

from pathlib import Path


def write_demo_dicom(result, dicom_dir) -> list:
    """Write the DICOM objects of a :class:`~.demo.DemoResult` into ``dicom_dir``; returns the paths."""
    from ..io.dicom_case import write_case_dicom
    from ..io.dicom_out import DicomSource
    from ..io.names import safe_name
    from ..io.segments import Segments, read_segments
    from ..io.volume import read_volume
    from ..scoring.metrics import METRICS

    out = Path(result.out_dir)
    ct = read_volume(out / "ct.nrrd")
    parts = []
    for name in ("organs.seg.nrrd", "lesions.seg.nrrd"):
        if (out / name).exists():
            parts += list(read_segments(out / name, reference=ct))
    rows = [{"method": method, "class": name, **row}
            for (method, name), table in result.tables.items() for row in table.to_records()]
    maps = _LazyMaps({key: out / "maps" / f"{key[0]}_{safe_name(key[1])}.nrrd" for key in result.tables})
    predictions = [{"class": p["class"], "probability": p["probability"]} for p in result.predictions]
    return write_case_dicom(dicom_dir, DicomSource.standalone(ct), maps=maps,
                            segments=Segments(parts, ct) if parts else None, rows=rows, predictions=predictions,
                            metrics=METRICS)


class _LazyMaps(dict):
    """``{(method, class): path}`` whose values are read as Volumes one at a time when iterated."""

    def items(self):
        from ..io.volume import read_volume

        for key, path in super().items():
            yield key, read_volume(path)
