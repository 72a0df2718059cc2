"""Organ masks: named binary segments on a grid, read from Slicer `.seg.nrrd` files or labelmaps.

A :class:`Segments` holds one boolean mask per segment, all indexed (z, y, x) on one grid (a
:class:`~saliency_inspector.volume.Volume` carrying the geometry). `.seg.nrrd` files are read and
written with `slicerio`, so segment names, colours and overlapping segments (layers) survive the
round trip and Slicer opens the result.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .volume import Volume, overlap_fraction, read_volume, resample_to

# Colours for segments without one (Slicer's GenericAnatomyColors where a name matches).
ANATOMY_COLORS = {
    "body": (177, 122, 101),
    "lung_left": (197, 165, 145),
    "lung_right": (197, 165, 145),
    "lung": (197, 165, 145),
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney_left": (185, 102, 83),
    "kidney_right": (185, 102, 83),
    "kidney": (185, 102, 83),
    "spine": (241, 214, 145),
    "aorta": (224, 97, 76),
    "heart": (206, 110, 84),
    "lesion": (144, 238, 144),
}
_FALLBACK_COLORS = [(128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210),
                    (216, 101, 79), (221, 130, 101), (144, 238, 144), (192, 104, 88)]


# Slicer's terminology colours ("recommendedDisplayRGBValue" in Slicer/Slicer
# Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json):
# Lung/Kidney (both sides share one), Liver, Spleen, Bone, Aorta, Heart, Skin, Mass.
SLICER_TERMINOLOGY_COLORS = {
    "body": (177, 122, 101), "lung": (197, 165, 145), "liver": (221, 130, 101),
    "spleen": (157, 108, 162), "kidney": (185, 102, 83), "spine": (241, 214, 145),
    "aorta": (224, 97, 76), "heart": (206, 110, 84), "lesion": (144, 238, 144),
}
# A qualitative palette for names without a terminology colour, or whose terminology colour is too
# close to one already used: matplotlib's tab20 (lib/matplotlib/_cm.py _tab20_data), dark shades
# first, without its cyans (cyan marks the map's peak in the pictures).
QUALITATIVE_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                       (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34),
                       (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
                       (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141)]
MIN_COLOR_DISTANCE = 60.0  # RGB (0..255) distance under which two outlines are hard to tell apart


def _terminology_color(name: str):
    key = name.lower()
    for side in ("_left", "_right", " left", " right"):
        key = key.replace(side, "")
    if key.startswith("lesion"):
        key = "lesion"
    return SLICER_TERMINOLOGY_COLORS.get(key)


def distinct_colors(names, given=None) -> dict:
    """name -> (r, g, b) in 0..1, every pair at least :data:`MIN_COLOR_DISTANCE` apart where possible.

    Each name keeps its ``given`` colour (e.g. from the file) or Slicer's terminology colour when
    that is distinct from the colours already chosen; otherwise it gets the next distinct colour of
    :data:`QUALITATIVE_PALETTE`. ``body`` is chosen last, so organs keep their anatomy colours.
    lung_left and lung_right (one terminology colour) therefore get different colours.
    """
    given = dict(given or {})
    order = sorted(names, key=lambda n: n.lower() == "body")
    chosen = {}

    def far(rgb):
        return all(np.linalg.norm(np.subtract(rgb, c)) >= MIN_COLOR_DISTANCE for c in chosen.values())

    for name in order:
        candidate = given.get(name)
        candidate = tuple(255.0 * c for c in candidate[:3]) if candidate is not None else _terminology_color(name)
        if candidate is None or not far(candidate):
            spare = [c for c in QUALITATIVE_PALETTE if far(c)]
            candidate = spare[0] if spare else max(
                QUALITATIVE_PALETTE, key=lambda c: min(np.linalg.norm(np.subtract(c, o)) for o in chosen.values()))
        chosen[name] = tuple(candidate)
    return {n: tuple(round(c / 255.0, 6) for c in chosen[n]) for n in names}


def default_color(name: str, index: int = 0) -> tuple:
    """An RGB colour in 0..1 for a segment name (anatomy colours where the name matches)."""
    key = name.lower()
    if key not in ANATOMY_COLORS and key.startswith("lesion"):
        key = "lesion"
    rgb = ANATOMY_COLORS.get(key, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])
    return tuple(round(c / 255.0, 6) for c in rgb)


@dataclass(frozen=True, eq=False)
class Segment:
    """One named binary mask, indexed (z, y, x), with a display colour (r, g, b in 0..1)."""

    name: str
    mask: np.ndarray
    color: tuple = (0.5, 0.5, 0.5)

    def __post_init__(self):
        object.__setattr__(self, "mask", np.asarray(self.mask, dtype=bool))
        object.__setattr__(self, "color", tuple(float(c) for c in self.color))


class Segments:
    """Named masks on one grid. ``grid`` is a Volume whose geometry matters, not its array."""

    def __init__(self, segments, grid: Volume):
        self._segments = list(segments)
        # A zero-stride array: the grid carries geometry only and costs no memory.
        self.grid = Volume(np.broadcast_to(np.zeros((), np.uint8), grid.shape),
                           grid.spacing, grid.origin, grid.direction)
        names = [s.name for s in self._segments]
        if len(set(names)) != len(names):
            raise InputError(f"segment names must be unique, got {names}")
        for s in self._segments:
            if s.mask.shape != self.grid.shape:
                raise ValueError(f"segment {s.name!r} has shape {s.mask.shape}, grid has {self.grid.shape}")

    # ---- access ------------------------------------------------------------------------------
    @property
    def names(self) -> list:
        """Segment names, in file order."""
        return [s.name for s in self._segments]

    def mask(self, name: str) -> np.ndarray:
        """The boolean (z, y, x) mask of segment ``name``."""
        for s in self._segments:
            if s.name == name:
                return s.mask
        raise InputError(f"no segment named {name!r}; the segments are: {', '.join(self.names)}")

    def __getitem__(self, name: str) -> Segment:
        for s in self._segments:
            if s.name == name:
                return s
        raise InputError(f"no segment named {name!r}; the segments are: {', '.join(self.names)}")

    def __contains__(self, name) -> bool:
        return name in self.names

    @property
    def masks(self) -> dict:
        """name -> boolean (z, y, x) mask."""
        return {s.name: s.mask for s in self._segments}

    @property
    def colors(self) -> dict:
        """name -> (r, g, b) in 0..1."""
        return {s.name: s.color for s in self._segments}

    def __iter__(self):
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def __repr__(self) -> str:
        return f"Segments({self.names}, {self.grid.describe_grid()})"

    # ---- geometry ----------------------------------------------------------------------------
    def resampled_to(self, reference: Volume) -> "Segments":
        """These segments on ``reference``'s grid (nearest neighbour, in physical space)."""
        if self.grid.same_grid(reference):
            return Segments(self._segments, reference)
        out = []
        for s in self._segments:
            mask = resample_to(self.grid.with_array(s.mask), reference, interpolation="nearest").array
            out.append(Segment(s.name, mask, s.color))
        return Segments(out, reference)


# ---- reading ------------------------------------------------------------------------------------
def read_segments(path, reference: Volume | None = None, names=None, note=None) -> Segments:
    """Read organ masks from a `.seg.nrrd` (Slicer segmentation) or a labelmap volume.

    ``names`` (labelmaps only) is a dict label -> name or the path of a JSON / CSV / Slicer colour
    table; without it labels are named ``label_<n>``. With ``reference``, masks on another grid are
    resampled onto it (nearest neighbour) and ``note(message)`` is told so; masks that do not
    overlap the reference at all are an :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if _is_slicer_segmentation(path):
        segments = _read_seg_nrrd(path)
    else:
        segments = _read_labelmap(path, names)
    if reference is None or segments.grid.same_grid(reference):
        return segments
    if overlap_fraction(segments.grid, reference) == 0.0:
        raise InputError(
            f"{path}: the masks ({segments.grid.describe_grid()}) do not overlap the image they should "
            f"describe ({reference.describe_grid()}); use masks made for this image")
    if note is not None:
        note(f"{path.name}: masks are on another grid than the image; resampling them onto it "
             f"(nearest neighbour)")
    return segments.resampled_to(reference)


def _is_slicer_segmentation(path: Path) -> bool:
    """True for ``.seg.nrrd`` files and NRRD files with Slicer segmentation fields in their header."""
    if path.is_dir() or not path.name.lower().endswith((".nrrd", ".nhdr")):
        return False
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception as err:  # pynrrd raises its own NRRDError and also ValueError/UnicodeError
        raise InputError(f"{path}: cannot be read as NRRD ({str(err).splitlines()[0][:200]})") from None
    return path.name.lower().endswith(".seg.nrrd") or any(
        key.startswith(("Segment0_", "Segmentation_")) for key in header)


def _read_seg_nrrd(path: Path) -> Segments:
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as err:
        raise InputError(f"{path}: cannot be read as a Slicer segmentation ({str(err)[:200]})") from None
    voxels = seg["voxels"]
    if voxels.ndim not in (3, 4):
        raise InputError(f"{path}: segmentation voxels have {voxels.ndim} dimensions; expected 3 or 4")
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    spatial_xyz = voxels.shape[-3:]  # slicerio reads in (i, j, k) order
    grid = Volume(np.broadcast_to(np.zeros((), np.uint8), spatial_xyz[::-1]),
                  tuple(spacing), tuple(ijk_to_lps[:3, 3]), linear / spacing)
    segments = []
    for index, info in enumerate(seg["segments"]):
        mask = slicerio.segment_mask(seg, info["id"]).transpose(2, 1, 0)
        name = _unique(info.get("name", info["id"]), [s.name for s in segments])  # Slicer allows duplicates
        segments.append(Segment(name, np.ascontiguousarray(mask), tuple(info.get("color", default_color(name, index)))))
    return Segments(segments, grid)  # may be empty: a segmentation with no segments is valid


def _unique(name: str, taken) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"


def _read_labelmap(path: Path, names) -> Segments:
    volume = read_volume(path)
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(f"{path}: has non-integer voxel values, so it is an image, not a labelmap; "
                             "give a .seg.nrrd or an integer labelmap as masks")
        array = array.astype(np.int64)
    labels = [int(v) for v in np.unique(array) if v != 0]
    if not labels:
        raise InputError(f"{path}: the labelmap has no labels (every voxel is 0); give masks with organs in them")
    table = _read_name_table(names) if names is not None else {}
    segments = []
    for index, label in enumerate(labels):
        name = _unique(table.get(label, f"label_{label}"), [s.name for s in segments])
        segments.append(Segment(name, array == label, default_color(name, index)))
    return Segments(segments, volume)


def _read_name_table(names) -> dict:
    """label -> name from a dict, or a JSON / CSV / TSV / Slicer colour-table file."""
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    path = Path(names)
    if not path.exists():
        raise InputError(f"{path}: names table not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, list):  # [{"label": 1, "name": "liver"}, ...]
                return {int(row["label"]): str(row["name"]) for row in data}
            return {int(k): str(v) for k, v in data.items()}
        table = {}
        delimiter = "," if "," in text else ("\t" if "\t" in text else " ")
        for row in csv.reader(text.splitlines(), delimiter=delimiter, skipinitialspace=True):
            row = [c.strip() for c in row if c.strip()]
            if len(row) < 2 or row[0].startswith("#") or not row[0].lstrip("-").isdigit():
                continue  # header line, comment, or blank (Slicer colour tables start with '#')
            table[int(row[0])] = row[1]
        if not table:
            raise ValueError("no 'label, name' rows")
        return table
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: cannot read a label -> name table ({err}); expected JSON "
                         '{"1": "liver", ...} or CSV lines "1,liver"') from None


# ---- writing ------------------------------------------------------------------------------------
def write_segments(segments: Segments, path) -> Path:
    """Write ``segments`` as a Slicer `.seg.nrrd` (names and colours kept; overlaps as layers).

    Segments share one labelmap layer where they do not overlap, as Slicer stores them; a segment
    that overlaps every existing layer (e.g. an organ inside "body") starts a new layer.
    """
    import slicerio

    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise InputError(f"{path}: segmentations are written as .seg.nrrd; change the file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The same layer packing as slicerio.add_segment, done here because add_segment's boolean
    # indexing and np.nonzero extents took 12 s for the 10 organs of a 512x512x60 phantom
    # (this takes well under 1 s); the file itself is written by slicerio.
    layers, infos = [], []
    for index, s in enumerate(segments):
        for layer_index, (layer, count) in enumerate(layers):
            if count < 255 and not np.logical_and(layer != 0, s.mask).any():
                break
        else:
            layers.append((np.zeros(segments.grid.shape, np.uint8), 0))
            layer_index = len(layers) - 1
        layer, count = layers[layer_index]
        np.putmask(layer, s.mask, count + 1)
        layers[layer_index] = (layer, count + 1)
        infos.append({"id": f"Segment_{index + 1}", "name": s.name, "color": [float(c) for c in s.color],
                      "nameAutoGenerated": False, "colorAutoGenerated": False,
                      "labelValue": count + 1, "layer": layer_index, "extent": _extent_ijk(s.mask)})
    if not layers:
        layers.append((np.zeros(segments.grid.shape, np.uint8), 0))
    voxels = np.stack([layer for layer, _ in layers]) if len(layers) > 1 else layers[0][0]
    seg = {"voxels": voxels.T if voxels.ndim == 3 else voxels.transpose(0, 3, 2, 1),  # (z,y,x) -> (i,j,k)
           "ijkToLPS": segments.grid.ijk_to_lps(), "segments": infos}
    slicerio.write_segmentation(str(path), seg)
    return path


def _extent_ijk(mask: np.ndarray) -> list:
    """[i0, i1, j0, j1, k0, k1] of a (z, y, x) mask, or Slicer's empty extent."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    extent = []
    for axis in (2, 1, 0):  # i (x), j (y), k (z)
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        extent += [int(hit[0]), int(hit[-1])]
    return extent
