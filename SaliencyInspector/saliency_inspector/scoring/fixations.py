"""Readers' fixations: reading and writing them, and placing them on a CT.

Input: fixations as CSV (columns ``x, y, z`` in mm, optional ``duration`` and ``reader``; the
coordinate system from ``space`` — LPS by default — or a first line ``# space: RAS``), a Slicer
markups file (``.mrk.json``: every markup's ``controlPoints[].position`` in its
``coordinateSystem``, LPS or RAS, ``coordinateUnits`` mm or um — as Slicer's
``Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json`` defines them; each markup
is one reader), or a reader heatmap volume. Points are kept in LPS mm. How a map agrees with them
is :mod:`.gaze`'s concern.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io.volume import LPS_TO_RAS, Volume, is_volume_path, read_volume

SPACES = ("LPS", "RAS")


@dataclass(frozen=True)
class Fixations:
    """Fixation points in LPS mm (N, 3), durations (N,) and reader names (N,), plus notes."""

    points: np.ndarray
    duration: np.ndarray
    reader: np.ndarray
    source: str = "fixations"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, keep: np.ndarray) -> Fixations:
        """The fixations selected by ``keep`` (bool mask or indices), with a copy of the notes."""
        return Fixations(self.points[keep], self.duration[keep], self.reader[keep], self.source, list(self.notes))

    @property
    def readers(self) -> list[str]:
        """Reader names in order of first appearance."""
        return list(dict.fromkeys(self.reader.tolist()))

    @staticmethod
    def concat(parts: Sequence[Fixations]) -> Fixations:
        """All fixations of ``parts`` in one (the first part's source; no notes)."""
        return Fixations(np.concatenate([p.points for p in parts]), np.concatenate([p.duration for p in parts]),
                         np.concatenate([p.reader for p in parts]), parts[0].source)


def read_fixations(path: str | Path, space: str | None = None) -> Fixations:
    """Fixations from a CSV or ``.mrk.json`` file (see the module docstring), points in LPS.

    ``space`` ("LPS"/"RAS") says how a CSV's coordinates are given; a first line ``# space: RAS``
    in the file wins when ``space`` is None; LPS otherwise. InputError for an empty file, missing
    columns, non-numeric values or a markups file without control points.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: fixation file not found")
    if path.name.lower().endswith(".json"):
        return _read_markups(path)
    return _read_csv(path, space)


def _to_lps(points: np.ndarray, space: str) -> np.ndarray:
    space = space.upper()
    if space not in SPACES:
        raise InputError(f"coordinate system {space!r}: use LPS or RAS")
    return points if space == "LPS" else points @ LPS_TO_RAS.T  # RAS -> LPS is the same flip


def _read_csv(path: Path, space: str | None) -> Fixations:
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    declared = None
    body = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("#").partition(":")
            if key.strip().lower() == "space":
                declared = value.strip().upper()
            continue
        if stripped:
            body.append(line)
    if not body:
        raise InputError(f"{path}: the fixation file is empty; it needs a header 'x,y,z[,duration][,reader]' "
                         "and one row per fixation")
    rows = list(csv.DictReader(body))
    header = [h.strip().lower() for h in (csv.DictReader(body).fieldnames or [])]
    if not {"x", "y", "z"} <= set(header):
        raise InputError(f"{path}: the header must name columns x, y, z (mm), optionally duration and reader; "
                         f"got {', '.join(header) or 'nothing'}")
    if not rows:
        raise InputError(f"{path}: the fixation file has a header but no fixations")
    if space and declared and space.upper() != declared:
        raise InputError(f"{path}: the file says '# space: {declared}' but --fixations-space is {space.upper()}; "
                         "remove one of them")
    chosen = (space or declared or "LPS").upper()
    points, duration, reader = [], [], []
    for n, row in enumerate(rows, start=2):
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        try:
            points.append([float(row["x"]), float(row["y"]), float(row["z"])])
            duration.append(float(row["duration"]) if row.get("duration") not in (None, "") else 1.0)
        except (TypeError, ValueError):
            raise InputError(f"{path}: row {n} has a non-numeric x, y, z or duration: {row}") from None
        reader.append(str(row.get("reader") or "reader").strip() or "reader")
    duration = np.asarray(duration, float)
    if np.any(duration < 0) or not np.all(np.isfinite(np.asarray(points))):
        raise InputError(f"{path}: durations must be >= 0 and coordinates finite")
    fx = Fixations(_to_lps(np.asarray(points, float), chosen), duration, np.asarray(reader, dtype=object), str(path))
    return replace(fx, notes=[f"{len(fx)} fixations from {path.name} ({chosen}, {len(fx.readers)} reader(s))"])


def _read_markups(path: Path) -> Fixations:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a valid markups JSON file ({err})") from None
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list):
        raise InputError(f"{path}: not a Slicer markups file (no 'markups' list)")
    points, reader = [], []
    for m, markup in enumerate(markups):
        name = str(markup.get("name") or f"markup{m + 1}")
        units = markup.get("coordinateUnits", "mm")
        units = units[0] if isinstance(units, list) and units else units
        scale = {"mm": 1.0, "um": 1e-3}.get(units)
        if scale is None:
            raise InputError(f"{path}: markup {name!r} has coordinateUnits {units!r}; mm or um expected")
        space = str(markup.get("coordinateSystem", "LPS"))
        own = []
        for point in markup.get("controlPoints") or []:
            if point.get("positionStatus", "defined") == "undefined" or point.get("position") is None:
                continue
            own.append([float(v) * scale for v in point["position"]])
        if own:
            points.extend(_to_lps(np.asarray(own, float), space).tolist())
            reader += [name] * len(own)
    if not points:
        raise InputError(f"{path}: the markups file has no control points with a defined position; "
                         "place the fixations as points first")
    fx = Fixations(np.asarray(points, float), np.ones(len(points)), np.asarray(reader, dtype=object), str(path))
    return replace(fx, notes=[f"{len(fx)} fixations from {path.name} (markups, {len(fx.readers)} reader(s))"])


def read_attention(path: str | Path, space: str | None = None) -> Fixations | Volume:
    """Fixations (CSV / .mrk.json) or a reader heatmap volume, by the file's kind."""
    if is_volume_path(path) and not str(path).lower().endswith(".json"):
        return read_volume(path)
    return read_fixations(path, space)


def sample_fixations(saliency: Volume, n: int, seed: int = 0, body: np.ndarray | None = None,
                     reader: str = "reader") -> Fixations:
    """``n`` fixations drawn ∝ ReLU(map) (inside ``body``), at voxel centres with a uniform jitter
    inside the voxel, in LPS mm: a known-answer reader for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    p = np.maximum(np.asarray(saliency.array, np.float64), 0)
    if body is not None:
        p = p * body
    p = p.ravel() / p.sum()
    flat = rng.choice(p.size, size=n, p=p)
    zyx = np.stack(np.unravel_index(flat, saliency.shape), axis=1).astype(float)
    ijk = zyx[:, ::-1] + rng.uniform(-0.45, 0.45, size=(n, 3))
    return Fixations(saliency.index_to_physical(ijk), np.ones(n), np.asarray([reader] * n, dtype=object),
                     "sampled")


def write_fixations_csv(fixations: Fixations, path: str | Path, space: str = "LPS") -> Path:
    """Write fixations as CSV (x, y, z, duration, reader) in LPS or RAS, with a '# space:' first line."""
    path = Path(path)
    pts = _to_lps(fixations.points, space)  # the flip is its own inverse
    with path.open("w", newline="") as f:
        f.write(f"# space: {space.upper()}\n")
        w = csv.writer(f)
        w.writerow(["x", "y", "z", "duration", "reader"])
        for p, d, r in zip(pts, fixations.duration, fixations.reader):
            w.writerow([f"{p[0]:.4f}", f"{p[1]:.4f}", f"{p[2]:.4f}", f"{d:g}", r])
    return path


# ---- fixations on a CT ---------------------------------------------------------------------------
def fixation_voxels(fixations: Fixations, grid: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(ijk indices (M, 3) as (z, y, x), kept mask (N,)) of the fixations inside ``grid``."""
    ijk = np.rint(grid.physical_to_index(fixations.points)).astype(np.int64)  # (N, 3) i, j, k
    inside = np.all((ijk >= 0) & (ijk < np.asarray(grid.size_xyz)), axis=1)
    return ijk[inside][:, ::-1], inside


def drop_outside(fixations: Fixations, reference: Volume, body: np.ndarray | None = None) -> Fixations:
    """The fixations inside the CT (and its body when given), with a note counting the dropped ones.
    InputError when none is left."""
    zyx, inside = fixation_voxels(fixations, reference)
    keep = inside.copy()
    if body is not None:
        keep[np.flatnonzero(inside)] = body[tuple(zyx.T)]
    dropped_ct, dropped_body = int((~inside).sum()), int(inside.sum() - keep.sum())
    notes = list(fixations.notes)
    if dropped_ct:
        notes.append(f"{dropped_ct} of {len(fixations)} fixations lie outside the CT and were dropped")
    if dropped_body:
        notes.append(f"{dropped_body} fixations lie outside the body and were dropped")
    kept = replace(fixations.subset(keep), notes=notes)
    if len(kept) == 0:
        raise InputError(f"{fixations.source}: none of the {len(fixations)} fixations lies inside the CT"
                         f"{' body' if body is not None else ''} ({reference.describe_grid()}); check the "
                         "coordinate system (--fixations-space LPS|RAS) and that they belong to this CT")
    return kept

