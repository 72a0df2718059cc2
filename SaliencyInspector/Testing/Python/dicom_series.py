"""Test helper: write a Volume as a DICOM series the way a scanner does (SimpleITK + GDCM)."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from saliency_inspector.io.volume import Volume, to_sitk


def write_dicom_series(volume: Volume, folder, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42",
                       modality: str = "CT", intercept: float = 0.0, slope: float = 1.0,
                       slice_positions=None, prefix: str = "slice",
                       study_uid: str = "1.2.826.0.1.3680043.2.1125.1.41") -> Path:
    """One slice per file with the geometry tags a scanner writes; returns ``folder``.

    The stored pixel values are ``volume.array`` as they are (e.g. uint16 raw values with
    ``intercept=-1024`` for HU = raw - 1024). ``slice_positions`` (k -> k index as a float) moves
    slices to make uneven spacing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale (ASCII text I/O after it)
    try:
        _write(volume, folder, series_uid, modality, intercept, slope, slice_positions, prefix, study_uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder


def _write(volume, folder, series_uid, modality, intercept, slope, slice_positions, prefix, study_uid) -> None:
    image = to_sitk(volume)
    d = volume.direction
    orientation = "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[0]):
        s = image[:, :, k]
        where = k if slice_positions is None else slice_positions[k]
        position = volume.index_to_physical([0, 0, where])
        tags = {
            "0008|0060": modality, "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}", "0020|000d": study_uid,
            "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": orientation,
            "0028|0030": f"{volume.spacing[1]:.6f}\\{volume.spacing[0]:.6f}",
            "0018|0050": f"{volume.spacing[2]:.6f}",
            "0028|1052": f"{intercept:g}", "0028|1053": f"{slope:g}",
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(s)
