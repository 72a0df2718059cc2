"""Volumes that carry their true geometry.

A :class:`Volume` is a numpy array indexed ``(z, y, x)`` (= ``(k, j, i)``) plus the geometry ITK
and SimpleITK use: ``spacing`` and ``origin`` as ``(x, y, z)`` in millimetres and a 3×3
``direction`` whose columns are the physical directions of the i, j, k axes, all in LPS.
A voxel index ``(i, j, k)`` sits at the physical LPS point ``origin + direction @ (spacing * ijk)``.

Slicer (MRML) speaks RAS; the conversion lives here and only here (:func:`Volume.ijk_to_ras`,
:func:`volume_from_ijk_to_ras`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .files import written_atomically

# LPS <-> RAS: flip the first two physical axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_WRITABLE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array`` indexed (z, y, x) plus spacing/origin (x, y, z; mm, LPS) and direction.

    Library functions never modify a Volume in place; they return new ones.
    """

    array: np.ndarray
    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)
    direction: np.ndarray = None  # 3x3; columns are the i, j, k axis directions (LPS)

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise InputError(f"a Volume needs a 3D array (z, y, x), got shape {array.shape}")
        direction = np.eye(3) if self.direction is None else np.asarray(self.direction, dtype=float)
        direction = direction.reshape(3, 3)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or min(spacing) <= 0 or not np.all(np.isfinite(spacing)):
            raise InputError(f"spacing must be three positive numbers (x, y, z mm), got {self.spacing}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):  # a det test lets shears through
            raise InputError(f"direction must be an orthonormal 3x3 matrix, got {direction.tolist()}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", direction)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """Array shape (z, y, x)."""
        return tuple(self.array.shape)

    @property
    def size_xyz(self) -> tuple:
        """Image size as ITK has it: (x, y, z) voxel counts."""
        return tuple(reversed(self.array.shape))

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new Volume with this geometry and another array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def ijk_to_lps(self) -> np.ndarray:
        """4×4 matrix from voxel index (i, j, k, 1) to physical LPS (mm)."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4×4 IJK→RAS matrix, as Slicer's ``vtkMRMLVolumeNode.SetIJKToRASMatrix`` takes it."""
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return flip @ self.ijk_to_lps()

    def index_to_physical(self, ijk) -> np.ndarray:
        """Continuous voxel indices (..., 3) in (i, j, k) order → LPS points (..., 3) in mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def physical_to_index(self, points) -> np.ndarray:
        """LPS points (..., 3) in mm → continuous voxel indices (..., 3) in (i, j, k) order."""
        points = np.asarray(points, dtype=float) - np.asarray(self.origin)
        inverse = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return points @ inverse.T

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when both volumes have the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def describe_grid(self) -> str:
        """One-line description of the geometry, for messages."""
        sp = "×".join(f"{s:g}" for s in self.spacing)
        org = ", ".join(f"{o:.1f}" for o in self.origin)
        return f"size {'×'.join(map(str, self.size_xyz))} (x×y×z), spacing {sp} mm, origin ({org}) LPS"


# ---- SimpleITK ---------------------------------------------------------------------------------
def to_sitk(volume: Volume) -> sitk.Image:
    """The Volume as a SimpleITK image (array copied)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def from_sitk(image: sitk.Image, source: str = "image") -> Volume:
    """A Volume from a 3D scalar SimpleITK image; ``source`` names it in error messages."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a CT or saliency map must be a scalar image"
        )
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        what = "2D" if dim == 2 else f"{dim}D"
        raise InputError(
            f"{source}: is a {what} image of size {image.GetSize()}; a CT must be a 3D volume "
            "(for a 4D series, export the one time point or channel you want)"
        )
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6 or \
            not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputError(f"{source}: its direction matrix {np.round(direction, 4).tolist()} is singular or not "
                         "orthonormal, so its voxels have no well-defined position; fix the file's header "
                         "(space directions / direction cosines) or re-export it")
    return Volume(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), direction)


# ---- reading and writing -----------------------------------------------------------------------
def read_volume(path, series: str | None = None, note=None, strict_geometry: bool = False,
                provenance: dict | None = None) -> Volume:
    """Read a 3D scalar image: NRRD, NIfTI (.nii/.nii.gz), MHA/MHD, or a DICOM series folder.

    For a DICOM folder, ``series`` picks a SeriesInstanceUID (default: the CT series with the most
    slices) and ``note(message)`` is told which series was used when there was a choice;
    ``strict_geometry`` and ``provenance``: see :func:`read_dicom_series`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        return read_dicom_series(path, series=series, note=note, strict_geometry=strict_geometry,
                                 provenance=provenance)
    if series is not None:
        raise InputError(f"--series {series}: only applies to a DICOM folder, and {path} is a file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        if "Bad direction" in str(err):  # ITK refuses a singular direction matrix while reading
            raise InputError(f"{path}: its direction matrix is singular (determinant 0), so its "
                             "voxels have no well-defined position; fix the file's header (space "
                             "directions / direction cosines) or re-export it") from None
        if str(path).lower().endswith(_VOLUME_SUFFIXES):  # the right name, the wrong content
            raise InputError(f"{path}: is not a valid image file although its name says so "
                             f"({_first_line(err)}); check that it is really a CT or map") from None
        raise InputError(f"{path}: cannot be read as an image ({_first_line(err)}); "
                         f"expected one of {', '.join(_VOLUME_SUFFIXES)} or a DICOM folder") from None
    return from_sitk(image, source=str(path))


def _dicom_tags(file_name: str, tags) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {tag: reader.GetMetaData(tag).strip() for tag in tags if reader.HasMetaDataKey(tag)}


def read_dicom_series(folder, series: str | None = None, note=None, strict_geometry: bool = False,
                      provenance: dict | None = None) -> Volume:
    """Read one DICOM series of ``folder`` as it comes from a scanner or PACS export.

    ``series``: a SeriesInstanceUID; by default the CT series with the most slices (other series,
    e.g. scouts, dose reports, MR or another reconstruction, are left out and ``note`` says so).
    Rescale slope and intercept are applied (GDCM), so the values are Hounsfield units. A series
    with a gap (a missing slice) or a tilted gantry is resampled onto an even grid, linearly
    (:mod:`.dicom_grid`); ``note`` gets a warning and ``provenance`` (a dict, when given) the record
    ``{"regularized": ...}``; ``strict_geometry`` refuses such a series instead. Duplicated slices,
    mixed orientations and a non-CT series (also one chosen with ``series``) are InputErrors.
    """
    folder = Path(folder)
    if not any(p.is_file() for p in folder.iterdir()):
        raise InputError(f"{folder}: the folder is empty; give a CT file or a folder holding a DICOM series")
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found" WARNING block
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder)) or ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    modality = {sid: _dicom_tags(files[0], ["0008|0060"]).get("0008|0060", "?") or "?"
                for sid, files in files_per_series.items()}
    listing = ", ".join(f"{sid} ({modality[sid]}, {len(files_per_series[sid])} slices)" for sid in series_ids)
    if series is not None:
        if series not in files_per_series:
            raise InputError(f"--series {series}: no such series in {folder}; its series are: {listing}")
        chosen = series
        if modality[chosen].upper() not in ("CT", "?"):
            raise InputError(f"--series {series}: is a {modality[chosen]} series, not CT; the models read CT "
                             f"(the folder's series: {listing})")
    else:
        ct_series = [sid for sid in series_ids if modality[sid].upper() == "CT"]
        if not ct_series:
            raise InputError(f"{folder}: no CT series in this folder (found {listing}); give a folder "
                             "with a CT series, or choose one with --series UID")
        chosen = max(ct_series, key=lambda sid: len(files_per_series[sid]))
        if len(series_ids) > 1 and note is not None:
            note(f"{folder.name}: using CT series {chosen} ({len(files_per_series[chosen])} slices), the "
                 f"largest of {len(series_ids)} series; choose another with --series UID")
    files = files_per_series[chosen]
    if len(files) < 2:
        raise InputError(f"{folder}: the DICOM series {chosen} has a single slice; a CT volume needs several")
    from .dicom_grid import plan, regularize, slice_geometry

    geometry = slice_geometry(folder, files, _dicom_tags)
    todo = plan(folder, geometry, strict=strict_geometry) if geometry is not None else None
    reader.SetFileNames(files)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(todo is None)  # ITK's "non uniform sampling" warning: handled here
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder}: cannot read the DICOM series ({_first_line(err)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if todo is None:
        return from_sitk(image, source=str(folder))
    array, spacing, origin, direction = regularize(sitk.GetArrayFromImage(image), geometry, image.GetSpacing()[:2], todo)
    record = {"regularized": {"reason": todo["notes"], "gaps": todo["gaps"], "tilt_deg": round(todo["tilt_deg"], 3),
                              "interpolation": "linear along the slice stacking line"
                              + (", then linear onto the orthogonal grid" if todo["tilt_deg"] > 0.05 else ""),
                              "slices": [len(files), int(array.shape[0])], "spacing_mm": float(spacing[2])}}
    if provenance is not None:
        provenance.update(record)
    if note is not None:
        note(f"warning: {folder.name}: {'; '.join(todo['notes'])}; resampled onto an even grid of {array.shape[0]} "
             f"slices {spacing[2]:.2f} mm apart by linear interpolation (--strict-geometry refuses instead)")
    return Volume(array.astype(np.float32), spacing, origin, direction)


def write_volume(volume: Volume, path, compression_level: int = -1) -> Path:
    """Write a Volume as NRRD, NIfTI or MHA (by suffix), compressed; returns the path. The file is
    written under a temporary name and renamed into place, so a failure leaves no partial file.

    ``compression_level`` is zlib's (1 fastest … 9 smallest; -1 ITK's default): saliency maps are
    written with 1, about twice as fast for files a fifth larger (float maps compress poorly anyway).
    """
    path = Path(path)
    if not str(path).lower().endswith(_WRITABLE_SUFFIXES):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(_WRITABLE_SUFFIXES)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(path) as tmp:  # a failed write leaves no truncated file behind
            sitk.WriteImage(to_sitk(volume), str(tmp), True, int(compression_level))
    except (OSError, RuntimeError) as err:  # ITK reports "Permission denied" etc. as RuntimeError
        raise InputError(f"{path}: cannot be written ({_first_line(err)}); choose a folder you can "
                         "write to") from None
    return path


# ---- Slicer (RAS) -------------------------------------------------------------------------------
def volume_from_ijk_to_ras(array: np.ndarray, ijk_to_ras) -> Volume:
    """A Volume from a (z, y, x) array and a Slicer IJK→RAS 4×4 matrix."""
    m = np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)
    lps = LPS_TO_RAS @ m[:3, :3]  # LPS_TO_RAS is its own inverse
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ m[:3, 3]
    return Volume(array, tuple(spacing), tuple(origin), direction)


# ---- resampling ---------------------------------------------------------------------------------
def resample_to(volume: Volume, reference: Volume, interpolation: str = "linear",
                default_value: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid in physical space.

    ``interpolation`` is ``"linear"`` for images and ``"nearest"`` for labels and masks. Voxels of
    the reference grid outside the volume get ``default_value``. The dtype is kept.
    """
    if volume.same_grid(reference):
        return volume.with_array(volume.array.copy())
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}, got {interpolation!r}")
    source = volume
    if volume.array.dtype == bool:
        source = volume.with_array(volume.array.astype(np.uint8))
    out = sitk.Resample(to_sitk(source), _geometry_image(reference), sitk.Transform(),
                        interpolators[interpolation], float(default_value))
    array = sitk.GetArrayFromImage(out)
    if volume.array.dtype == bool:
        array = array.astype(bool)
    return reference.with_array(array)


def overlap_fraction(volume: Volume, reference: Volume) -> float:
    """Fraction of ``reference``'s voxel centres that fall inside ``volume``'s field of view."""
    k, j, i = [np.linspace(0, n - 1, min(n, 16)) for n in reference.shape]
    grid = np.stack(np.meshgrid(i, j, k, indexing="ij"), axis=-1).reshape(-1, 3)
    ijk = volume.physical_to_index(reference.index_to_physical(grid))
    upper = np.asarray(volume.size_xyz) - 0.5
    inside = np.all((ijk >= -0.5) & (ijk <= upper), axis=1)
    return float(inside.mean())


def _geometry_image(reference: Volume) -> sitk.Image:
    image = sitk.Image([int(n) for n in reference.size_xyz], sitk.sitkUInt8)
    image.SetSpacing(reference.spacing)
    image.SetOrigin(reference.origin)
    image.SetDirection(tuple(reference.direction.ravel()))
    return image


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line[len("sitk::ERROR:"):].strip() if line.startswith("sitk::ERROR:") else line for line in lines]
    # ITK errors put the useful sentence last ("... Could not create IO object for reading file");
    # lines naming ITK's own source files are noise to the user.
    useful = [line for line in lines if not line.startswith(("/", "sitk::", "itk::", "Exception thrown in"))
              and ".cxx:" not in line]
    text = (useful or lines or [type(err).__name__])[-1]
    return text[:200]


def is_volume_path(path) -> bool:
    """True when ``path`` looks like a volume file we can read, or is a folder (DICOM)."""
    p = os.fspath(path)
    return p.lower().endswith(_VOLUME_SUFFIXES) or os.path.isdir(p)  # isdir on the real (cased) name
