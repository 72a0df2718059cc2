"""Everything one case leaves for a PACS, in one folder: the maps as Parametric Maps, the binarised
maps and the masks as SEG, the scores as a Structured Report that references both.

``explain``, ``evaluate``, ``demo`` and ``batch`` (``--dicom-out DIR``) and the Slicer module all
write through :func:`write_case_dicom`, so the objects and their file names are the same everywhere:

    <method>_<class>.pm.dcm     one Parametric Map per map (io/dicom_out.py)
    saliency_top5.seg.dcm       the top 5 % of each map, one segment per map
    organs.seg.dcm              the masks the maps were scored against
    scores.sr.dcm               TID 1500 measurements (io/dicom_sr.py) and the model's probabilities
"""

from __future__ import annotations

from pathlib import Path

from .dicom_out import DicomSource, write_saliency, write_segments_dicom

SCORES_FILE = "scores.sr.dcm"
ORGANS_FILE = "organs.seg.dcm"


def source_for(ct, ct_path=None, series: str | None = None) -> DicomSource:
    """The DICOM source of a CT read from ``ct_path``: its series when that is a DICOM folder (the
    objects then reference it), else a stand-in with a new study (see :meth:`DicomSource.standalone`)."""
    if ct_path is not None and Path(ct_path).is_dir():
        return DicomSource.from_folder(ct_path, series)
    return DicomSource.standalone(ct)


def write_case_dicom(out_dir, source: DicomSource, maps=None, segments=None, rows=None, predictions=None,
                     metrics=None, top_percent: float = 5.0) -> list:
    """Write the case's DICOM objects into ``out_dir``; returns their paths (maps first, SR last).

    ``maps``: ``{(method, class): Volume}`` on the CT grid (e.g. ``Explanation.maps``); ``segments``:
    the :class:`~saliency_inspector.io.segments.Segments` the maps were scored against, on the CT grid;
    ``rows``: score rows (dicts with ``method``, ``class``, ``segment`` and the metric keys);
    ``predictions``: dicts with ``class`` and ``probability``; ``metrics``: the metric registry the
    rows' keys come from (needed with ``rows``). The SR is written when there are rows or
    predictions, and references the organ SEG's segments and the Parametric Maps.
    """
    import pydicom

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, headers = [], {}
    grid = segments.grid if segments is not None and len(segments) else next(iter(maps.items()))[1] if maps else None
    if grid is not None:
        source = source.for_grid(grid)  # a regularized series: stand-ins in its study (DicomSource.for_grid)
    if maps:
        keys = list(maps)
        paths = write_saliency(maps, out, source, top_percent=top_percent)
        written += paths
        # the PM files come first, one per map in the order of ``maps``; their headers (no pixels)
        # are what the SR references
        headers = {key: pydicom.dcmread(str(p), stop_before_pixels=True) for key, p in zip(keys, paths)}
    seg = None
    if segments is not None and len(segments):
        path = write_segments_dicom(segments, out / ORGANS_FILE, source)
        written.append(path)
        seg = pydicom.dcmread(str(path), stop_before_pixels=True)
    if rows or predictions:
        from .dicom_sr import scores_report

        path = out / SCORES_FILE
        if rows and metrics is None:
            raise ValueError("write_case_dicom: rows need the metric registry (metrics=METRICS)")
        scores_report(rows or [], source, metrics or {}, seg=seg, maps=headers, predictions=predictions).save_as(path)
        written.append(path)
    return written
