"""Score one saliency map against every segment: :func:`evaluate` -> :class:`EvaluationTable`.

The region's scores are ranked once and every segment reads that ranking (:mod:`.ranking`,
:mod:`.masks`); each row holds every metric of :data:`.metrics.METRICS` plus the context (threshold,
region, mask size, note). :func:`score_masks` is the same for plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import InputError
from ..io import records
from ..io.volume import Volume
from .importance import check_importance, describe as describe_importance, importance_transform
from .localisation import POINTING_TOLERANCE_MM, argmax_voxels, mean_distance_to_mask_mm, pointing_hits
from .mask_scores import MaskScores
from .masks import choose_region, mask_source
from .metrics import METRICS, ROW_KEYS, TABLE_KEYS, column_head
from . import complexity as map_complexity
from . import localisation_quantus
from .quality import MAP_KEYS, QUALITY_METRICS, SEGMENT_KEYS
from .ranking import Ranking
from .thresholds import TOPK_NOTE, map_cut, parse_threshold


@dataclass
class EvaluationTable:
    """One row per segment (dicts keyed by :data:`ROW_KEYS`), plus what the rows were computed over."""

    rows: list
    region: str
    threshold: str
    notes: list = field(default_factory=list)
    importance: str = "relu"  # the transform voxels were ranked by (scoring.importance)

    @property
    def columns(self) -> list:
        """The keys of every row, in order: :data:`.metrics.ROW_KEYS`, then the mask-only metrics of
        :data:`.quality.QUALITY_METRICS` (per segment, then per map: the same in every row)."""
        return list(ROW_KEYS) + list(SEGMENT_KEYS) + list(MAP_KEYS)

    def row(self, segment: str) -> dict:
        """The row of one segment (KeyError if it has none)."""
        for row in self.rows:
            if row["segment"] == segment:
                return row
        raise KeyError(segment)

    def to_records(self) -> list:
        """Rows with NaN turned into None (JSON has no NaN)."""
        return [records.finite(row) for row in self.rows]

    def write_json(self, path) -> Path:
        """Write the rows as a JSON list of objects (NaN as null)."""
        return records.write_json(path, self.rows)

    def write_csv(self, path) -> Path:
        """Write the rows as CSV with a header (NaN as an empty cell)."""
        return records.write_csv(path, self.rows, self.columns)

    def format(self, legend: bool = True) -> str:
        """A readable fixed-width table for the terminal, with a legend from :data:`METRICS`
        (``legend=False`` leaves it out, for a caller printing several tables)."""
        heads = {k: column_head(k) for k in TABLE_KEYS}
        width = max([7] + [len(r["segment"]) for r in self.rows])

        def num(v):
            return records.format_cell(v).rjust(6)

        lines = [f"region: {self.region}   threshold: {self.threshold}   "
                 f"ranked by: {describe_importance(self.importance)}"]
        header = f"{'segment':<{width}}  " + "  ".join(f"{heads[k]:>{max(6, len(heads[k]))}}" for k in TABLE_KEYS)
        lines += [header, "-" * len(header)]
        for r in self.rows:
            cells = []
            for k in TABLE_KEYS:
                text = num(r[k])
                base = METRICS[k].baseline_key
                if base:
                    text += f" ({num(r[base]).strip()})"
                cells.append(f"{text:>{max(6, len(heads[k]))}}")
            line = f"{r['segment']:<{width}}  " + "  ".join(cells)
            if r["note"]:
                line += f"  [{r['note']}]"
            lines.append(line)
        if self.rows:
            lines.append("map: " + ", ".join(f"{QUALITY_METRICS[k].label} {records.format_cell(self.rows[0][k])}"
                                             for k in MAP_KEYS) + " (S⁺ in the region)")
        lines += [f"note: {n}" for n in self.notes]
        if legend:
            lines += [f"  {METRICS[k].name}: {METRICS[k].meaning}" for k in TABLE_KEYS]
            lines += ["  (in brackets: the reference level of an uninformative map, not a score)"]
        return "\n".join(lines)


def evaluate(saliency: Volume, segments, region="auto", threshold: str = "topk", ct: Volume | None = None,
             tolerance_mm: float = POINTING_TOLERANCE_MM, note=None, device: str = "auto",
             importance: str = "relu") -> EvaluationTable:
    """Score one saliency map against every segment: one row per segment with all of :data:`METRICS`.

    ``saliency`` is the raw (signed) map; voxels are ranked by ``importance``
    (:func:`.importance.importance_transform`: ``relu`` for CAMs, ``abs`` for gradient-type maps,
    ``signed`` for IG / input × gradient / occlusion — the method's ``Method.importance``); masses
    use the transformed map (its positive part when signed). ``segments`` is a
    :class:`~saliency_inspector.segments.Segments` (resampled onto the map's grid, nearest neighbour,
    when its geometry differs; ``note(msg)`` is told) or a dict name -> boolean array on the map's grid.
    ``region``: ``"auto"`` (the body when it can be had, else ``"all"``), ``"body"`` (a segment named
    body, else CT > -500 HU: largest connected component, holes filled; needs ``ct``), ``"all"`` (the
    whole field of view), a segment name, or a boolean array. ``threshold``: one of
    :data:`.thresholds.THRESHOLD_RULES`. The segment used as the region is not scored against itself.
    """
    note = note or (lambda message: None)
    check_importance(importance)
    raw = np.asarray(saliency.array)
    if not np.issubdtype(raw.dtype, np.number) and raw.dtype != bool:
        raise InputError(f"the saliency map has non-numeric voxels ({raw.dtype}); give a scalar image")
    if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw)):
        raise InputError("the saliency map has NaN or infinite voxels; fix or re-export the map")
    masks = mask_source(segments, saliency, note)
    kind, arg = parse_threshold(threshold)
    region_mask, region_name, region_segment = choose_region(region, masks, saliency, ct, note)
    ct = None  # only the region needed it: freed here when the caller handed over its only reference

    # Only the region's scores are copied (none for "all"). ReLU (CAMs): the ranking applies S⁺ itself
    # (packed keys, no ReLU'd copy; one is made only for a threshold rule that needs the scores).
    # |map| and signed maps are ranked by their transformed copy (scoring.importance).
    flat_raw = raw.ravel()
    in_region = None if region_name == "all" else region_mask.ravel()
    scores = flat_raw[in_region] if in_region is not None else flat_raw
    if importance == "relu":
        ranking = Ranking(scores, device=device, relu=True)
        cut_scores = np.maximum(scores, 0) if kind in ("otsu", "percentile") else None
    else:
        scores = importance_transform(scores, importance) if scores.dtype != bool else scores.copy()
        ranking = Ranking(scores, device=device)
        cut_scores = scores
    # chunked: a voxel-wise map has a group per voxel; a signed map's mass is its positive part
    mass_total = map_complexity.total_mass(ranking) if importance != "signed" else \
        float(np.sum(scores[scores > 0], dtype=np.float64))
    cut = map_cut(kind, arg, cut_scores, ranking)
    del scores
    argmax_ijk = argmax_voxels(flat_raw, in_region, ranking, raw.shape, importance)
    rule_text = {"max": "max (oracle: best Dice over thresholds)"}.get(kind, str(threshold).strip().lower())

    per_map = map_complexity.from_ranking(ranking)  # sparseness, complexity of S⁺ in the region
    rows = []
    for name, groups, total, mask_box in masks.tie_groups(ranking, in_region, skip=region_segment):
        counts = ranking.counts_from_groups(groups)
        del groups
        reasons = []
        outside = int(total - counts.positives)
        if outside and counts.positives:
            reasons.append(f"{outside} of its {total} voxels lie outside the region and are ignored")
        # Σ_{M∩V} S⁺ from the counts: every voxel of a tie group has the group's score
        group_values = ranking.values[counts.groups].astype(np.float64)
        mass_in = float(np.sum(counts.counts * np.maximum(group_values, 0)))  # positive part (signed maps)
        ms = MaskScores(ranking, counts, cut, kind, mass_in=mass_in, mass_total=mass_total,
                        pointing_hits=pointing_hits(argmax_ijk, mask_box, region_mask, raw.shape,
                                                     saliency.spacing, tolerance_mm)
                        if counts.positives and ranking.n_groups > 1 else None,
                        reasons=reasons,
                        peak_distance=mean_distance_to_mask_mm(argmax_ijk, mask_box, region_mask, raw.shape,
                                                               saliency.spacing)
                        if counts.positives and ranking.n_groups > 1 else None)
        row = {"segment": name}
        for key, info in METRICS.items():
            row[key] = float(info.function(ms))
        _, _, lowest = ms.thresholded() if ms.positives and ranking.n_groups > 1 else (0, 0, float("nan"))
        row.update(threshold=rule_text, threshold_value=float(lowest), region=region_name, importance=importance,
                   mask_voxels=int(counts.positives), pointing_tolerance_mm=float(tolerance_mm),
                   note="; ".join(ms.reasons))
        for key in SEGMENT_KEYS:
            row[key] = float(getattr(localisation_quantus, key)(ms))
        row.update({key: per_map[key] for key in MAP_KEYS})
        rows.append(row)
    notes = []
    if region_segment is not None:
        notes.append(f"segment {region_segment!r} is the region, so it is not scored against itself")
    if kind == "topk":
        notes.append(TOPK_NOTE)
    if kind == "max":
        notes.append("threshold 'max' picks the best threshold per segment using the mask: an oracle, not a fair score")
    return EvaluationTable(rows=rows, region=region_name, threshold=rule_text, notes=notes, importance=importance)


def score_masks(saliency, masks: Mapping, region=None, threshold: str = "topk", spacing=(1.0, 1.0, 1.0),
                tolerance_mm: float = POINTING_TOLERANCE_MM, importance: str = "relu") -> EvaluationTable:
    """:func:`evaluate` for plain arrays: ``saliency`` (z, y, x), ``masks`` name -> bool array,
    ``region`` a bool array or None (all), ``spacing`` (x, y, z) mm, ``importance`` the ranking transform."""
    volume = Volume(np.asarray(saliency), spacing=spacing)
    region_arg = "all" if region is None else np.asarray(region, dtype=bool)
    return evaluate(volume, dict(masks), region=region_arg, threshold=threshold, tolerance_mm=tolerance_mm,
                    importance=importance)
