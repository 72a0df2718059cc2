"""Agreement of a saliency map with organ masks: Dice, ROC AUC, AUPRC, IoA, mass, pointing game.

Definitions (``/work/shared/notes/saliency.md``): S is the display map S⁺ = ReLU(raw map), M a
mask, V the evaluation region (default: the body, not the whole field of view); every metric is
computed over V only (M means M ∩ V). The scores of V are ranked once (:mod:`.ranking`) and that
ranking is shared by every mask, so many organs cost little more than one.

Each metric is a pure function of one :class:`MaskScores` (the map's ranking and one mask's counts)
plus its description in :data:`METRICS` (key, name, one-line meaning, range, higher-is-better); the
terminal table, the JSON/CSV keys, the HTML report and the Slicer table all come from that registry.
An undefined value (empty mask, mask covering the whole region, constant map) is NaN with its reason
in the row's ``note``, never a crash and never a silent 0.5.

Tie rules (stated, since ReLU makes many equal zeros): ROC AUC gives ties their average rank; the
``topk`` threshold, relevance rank accuracy and the pointing game share a tie group at the cut as a
uniformly random tie-break would on average (so no voxel order is favoured and a constant map does
not score by accident).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import InputError
from .ranking import MaskCounts, Ranking
from ..io.volume import Volume, overlap_fraction, resample_to

POINTING_TOLERANCE_MM = 5.0
BODY_HU = -500.0
THRESHOLD_RULES = ("topk", "otsu", "fixed:T", "percentile:P", "max")


# ---- registry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: key (JSON/CSV column), name, one-line meaning, range, direction, function."""

    key: str
    name: str
    meaning: str
    range: str
    higher_is_better: bool
    function: Callable = field(repr=False, compare=False, default=None)
    baseline_key: str | None = None  # the column holding its chance level, if any


# ---- per-mask context -----------------------------------------------------------------------------
@dataclass
class MaskScores:
    """Everything a metric needs about one mask: shared ranking + this mask's counts and geometry."""

    ranking: Ranking
    counts: MaskCounts
    cut: "Cut"                       # the map-wide threshold (None for topk/max: they depend on |M|)
    rule: str
    mass_in: float                   # Σ_{M∩V} S⁺
    mass_total: float                # Σ_V S⁺
    pointing_hits: float | None      # fraction of argmax voxels within tolerance of M (None: undefined)
    reasons: list = field(default_factory=list)
    peak_distance: float | None = None  # mm from the argmax voxel(s) to the nearest voxel of M (mean over ties)

    @property
    def positives(self) -> int:
        return self.counts.positives

    @property
    def n(self) -> int:
        return self.ranking.n

    def undefined(self, reason: str) -> float:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return float("nan")

    def ranks_defined(self) -> bool:
        """Rank metrics need positives, negatives and a non-constant map."""
        if self.positives == 0:
            self.undefined("empty mask in the region")
            return False
        if self.positives == self.n:
            self.undefined("mask covers the whole region")
            return False
        if self.ranking.n_groups == 1:
            self.undefined("constant map in the region")
            return False
        return True

    def thresholded(self):
        """(kept voxels, kept voxels in M, lowest kept score) under this row's threshold rule."""
        if not hasattr(self, "_thresholded"):
            r, mc = self.ranking, self.counts
            if self.rule == "topk":
                hits, lowest = r.top_k_hits(mc, self.positives)
                self._thresholded = (float(self.positives), hits, lowest)
            elif self.rule == "max":
                _, kept, hits, lowest = r.best_dice(mc)
                self._thresholded = (float(kept), float(hits), lowest)
            else:
                groups = r.kept_groups(self.cut.value)
                lowest = float(r.values[groups - 1]) if groups > 0 else float("nan")
                self._thresholded = (float(r.voxels_in_top_groups(groups)),
                                     float(r.hits_in_top_groups(mc, groups)), lowest)
        return self._thresholded


# ---- the metrics (pure functions of MaskScores) ---------------------------------------------------
def dice(ms: MaskScores) -> float:
    """2|S_t ∩ M| / (|S_t| + |M|) for the thresholded map S_t."""
    if not ms.ranks_defined():
        return float("nan")
    kept, hits, _ = ms.thresholded()
    return 2.0 * hits / (kept + ms.positives)


def roc_auc(ms: MaskScores) -> float:
    """Voxel-wise ROC AUC over the region (ties at average rank)."""
    return ms.ranking.roc_auc(ms.counts) if ms.ranks_defined() else float("nan")


def auprc(ms: MaskScores) -> float:
    """Average precision (area under the step-wise precision-recall curve)."""
    return ms.ranking.average_precision(ms.counts) if ms.ranks_defined() else float("nan")


def auprc_chance(ms: MaskScores) -> float:
    """AUPRC of an uninformative map: |M| / |V|."""
    return ms.positives / ms.n if ms.positives else float("nan")


def ioa(ms: MaskScores) -> float:
    """Intersection over the thresholded area, |S_t ∩ M| / |S_t| (Draelos's OrganIOU): a precision."""
    if not ms.ranks_defined():
        return float("nan")
    kept, hits, _ = ms.thresholded()
    return hits / kept if kept > 0 else ms.undefined("the threshold keeps no voxel")


def mass_in_mask(ms: MaskScores) -> float:
    """Share of the map's positive mass inside the mask: Σ_M S⁺ / Σ_V S⁺."""
    if ms.positives == 0:
        return ms.undefined("empty mask in the region")
    if ms.mass_total <= 0:
        return ms.undefined("map is zero everywhere in the region")
    return ms.mass_in / ms.mass_total


def mass_baseline(ms: MaskScores) -> float:
    """Mass in mask of a uniform map: |M| / |V|."""
    return ms.positives / ms.n if ms.positives else float("nan")


def pointing_game(ms: MaskScores) -> float:
    """1 if the map's maximum lies within the tolerance of the mask, else 0 (fraction when tied)."""
    if not ms.ranks_defined():
        return float("nan")
    return float(ms.pointing_hits)


def peak_distance_mm(ms: MaskScores) -> float:
    """Distance (mm) from the map's maximum to the nearest mask voxel; 0 inside (mean over ties)."""
    if not ms.ranks_defined() or ms.peak_distance is None:
        return float("nan")
    return float(ms.peak_distance)


def rank_accuracy(ms: MaskScores) -> float:
    """Fraction of the |M| highest-scoring voxels that lie in M."""
    if not ms.ranks_defined():
        return float("nan")
    hits, _ = ms.ranking.top_k_hits(ms.counts, ms.positives)
    return hits / ms.positives


METRICS: dict = {info.key: info for info in [
    MetricInfo("dice", "Dice", "overlap of the thresholded map with the mask (threshold rule in the row)",
               "0..1", True, dice),
    MetricInfo("roc_auc", "ROC AUC", "probability that a mask voxel outranks a non-mask voxel (0.5 = chance)",
               "0..1", True, roc_auc),
    MetricInfo("auprc", "AUPRC", "average precision of ranking mask voxels first; compare with its chance level",
               "0..1", True, auprc, baseline_key="auprc_chance"),
    MetricInfo("auprc_chance", "AUPRC chance", "AUPRC of an uninformative map: mask share of the region |M|/|V|",
               "0..1", True, auprc_chance),
    MetricInfo("ioa", "IoA", "share of the thresholded map inside the mask (Draelos's OrganIOU; a precision)",
               "0..1", True, ioa),
    MetricInfo("mass_in_mask", "Mass in mask", "share of the map's positive mass inside the mask (energy pointing game)",
               "0..1", True, mass_in_mask, baseline_key="mass_baseline"),
    MetricInfo("mass_baseline", "Mass baseline", "mass in mask of a uniform map: |M|/|V|",
               "0..1", True, mass_baseline),
    MetricInfo("pointing_game", "Pointing game",
               f"1 if the map's maximum lies within {POINTING_TOLERANCE_MM:g} mm of the mask "
               "(ties for the maximum: the fraction that hit)", "0..1", True, pointing_game),
    MetricInfo("peak_distance_mm", "Peak distance", "distance from the map's maximum to the nearest mask "
               "voxel in mm (0 inside): how far a pointing-game miss is", "0.. mm", False, peak_distance_mm),
    MetricInfo("rank_accuracy", "Rank accuracy", "fraction of the |M| highest voxels inside the mask",
               "0..1", True, rank_accuracy),
]}

# Columns that are reference levels for another metric (what an uninformative map scores), not scores.
REFERENCE_KEYS = {info.baseline_key for info in METRICS.values() if info.baseline_key}
TOPK_NOTE = ("under the topk threshold the map keeps |M| voxels, so Dice, IoA and rank accuracy are the same "
             "number by construction; use --threshold otsu (or fixed:T) to see them differ")

# Columns of every row, in order (metrics from the registry, then context).
ROW_KEYS = (["segment"] + list(METRICS) +
            ["threshold", "threshold_value", "region", "mask_voxels", "pointing_tolerance_mm", "note"])


# ---- thresholds -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cut:
    """A map-wide threshold: voxels with S⁺ > value are kept."""

    value: float


def parse_threshold(rule: str) -> tuple:
    """``topk``, ``otsu``, ``fixed:T`` (0 <= T < 1, on the map divided by its maximum), ``percentile:P``
    (0 <= P < 100) or ``max`` (best Dice over thresholds: an oracle) -> (kind, parameter)."""
    text = str(rule).strip().lower()
    if text in ("topk", "otsu", "max"):
        return text, None
    kind, _, arg = text.partition(":")
    if kind in ("fixed", "percentile") and arg:
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        upper = 1.0 if kind == "fixed" else 100.0
        if 0 <= value < upper:
            return kind, value
        raise InputError(f"threshold {rule!r}: {kind} needs a number in [0, {upper:g}), e.g. "
                         f"{'fixed:0.5' if kind == 'fixed' else 'percentile:95'}")
    raise InputError(f"threshold {rule!r} is not a known rule; use one of {', '.join(THRESHOLD_RULES)}")


def _map_cut(kind: str, arg, scores: np.ndarray, ranking: Ranking):
    """The map-wide cut for otsu/fixed/percentile; None for topk/max (they depend on the mask) and
    for a constant map (where every thresholded metric is undefined anyway)."""
    if kind in ("topk", "max") or ranking.n_groups == 1:
        return None
    if kind == "fixed":
        return Cut(arg * float(ranking.values[0]))
    if kind == "percentile":
        return Cut(float(np.percentile(scores, arg)))
    from skimage.filters import threshold_otsu
    return Cut(float(threshold_otsu(scores)))


# ---- the evaluation -------------------------------------------------------------------------------
@dataclass
class EvaluationTable:
    """One row per segment (dicts keyed by :data:`ROW_KEYS`), plus what the rows were computed over."""

    rows: list
    region: str
    threshold: str
    notes: list = field(default_factory=list)

    @property
    def columns(self) -> list:
        return list(ROW_KEYS)

    def row(self, segment: str) -> dict:
        for row in self.rows:
            if row["segment"] == segment:
                return row
        raise KeyError(segment)

    def to_records(self) -> list:
        """Rows with NaN turned into None (JSON has no NaN)."""
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in self.rows]

    def write_json(self, path) -> Path:
        """Write the rows as a JSON list of objects (NaN as null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_records(), indent=2) + "\n")
        return path

    def write_csv(self, path) -> Path:
        """Write the rows as CSV with a header (NaN as an empty cell)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            for record in self.to_records():
                writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return path

    def format(self, legend: bool = True) -> str:
        """A readable fixed-width table for the terminal, with a legend from :data:`METRICS`
        (``legend=False`` leaves it out, for a caller printing several tables)."""
        shown = ["dice", "roc_auc", "auprc", "ioa", "mass_in_mask", "pointing_game", "peak_distance_mm",
                 "rank_accuracy"]
        heads = {"dice": "Dice", "roc_auc": "ROC AUC", "auprc": "AUPRC (chance)", "ioa": "IoA",
                 "mass_in_mask": "Mass (uniform)", "pointing_game": "Pointing", "peak_distance_mm": "Peak mm",
                 "rank_accuracy": "RankAcc"}
        width = max([7] + [len(r["segment"]) for r in self.rows])

        def num(v):
            return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"

        lines = [f"region: {self.region}   threshold: {self.threshold}"]
        header = f"{'segment':<{width}}  " + "  ".join(f"{heads[k]:>{max(6, len(heads[k]))}}" for k in shown)
        lines += [header, "-" * len(header)]
        for r in self.rows:
            cells = []
            for k in shown:
                text = num(r[k])
                base = METRICS[k].baseline_key
                if base:
                    text += f" ({num(r[base]).strip()})"
                cells.append(f"{text:>{max(6, len(heads[k]))}}")
            line = f"{r['segment']:<{width}}  " + "  ".join(cells)
            if r["note"]:
                line += f"  [{r['note']}]"
            lines.append(line)
        lines += [f"note: {n}" for n in self.notes]
        if legend:
            lines += [f"  {METRICS[k].name}: {METRICS[k].meaning}" for k in shown]
            lines += ["  (in brackets: the reference level of an uninformative map, not a score)"]
        return "\n".join(lines)


def evaluate(saliency: Volume, segments, region="auto", threshold: str = "topk", ct: Volume | None = None,
             tolerance_mm: float = POINTING_TOLERANCE_MM, note=None, device: str = "auto") -> EvaluationTable:
    """Score one saliency map against every segment: one row per segment with all of :data:`METRICS`.

    ``saliency`` is the raw (signed) map; metrics use S⁺ = ReLU(map). ``segments`` is a
    :class:`~saliency_inspector.segments.Segments` (resampled onto the map's grid, nearest neighbour,
    when its geometry differs; ``note(msg)`` is told) or a dict name -> boolean array on the map's grid.
    ``region``: ``"auto"`` (the body when it can be had, else ``"all"``), ``"body"`` (a segment named
    body, else CT > -500 HU: largest connected component, holes filled; needs ``ct``), ``"all"`` (the
    whole field of view), a segment name, or a boolean array. ``threshold``: one of
    :data:`THRESHOLD_RULES`. The segment used as the region is not scored against itself.
    """
    note = note or (lambda message: None)
    raw = np.asarray(saliency.array)
    if not np.issubdtype(raw.dtype, np.number) and raw.dtype != bool:
        raise InputError(f"the saliency map has non-numeric voxels ({raw.dtype}); give a scalar image")
    if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw)):
        raise InputError("the saliency map has NaN or infinite voxels; fix or re-export the map")
    masks = _mask_source(segments, saliency, note)
    kind, arg = parse_threshold(threshold)
    region_mask, region_name, region_segment = _region(region, masks, saliency, ct, note)
    ct = None  # only the region needed it: freed here when the caller handed over its only reference

    # Only the region's scores are copied (S⁺ = ReLU, in place); no full-grid index or score arrays.
    flat_raw = raw.ravel()
    in_region = None if region_name == "all" else region_mask.ravel()
    scores = flat_raw[in_region] if in_region is not None else flat_raw.copy()
    if scores.dtype != bool:
        np.maximum(scores, 0, out=scores)
    ranking = Ranking(scores, device=device)
    mass_total = float(np.sum(scores, dtype=np.float64))
    cut = _map_cut(kind, arg, scores, ranking)
    del scores
    argmax_ijk = _argmax_voxels(flat_raw, in_region, ranking, raw.shape)
    rule_text = {"max": "max (oracle: best Dice over thresholds)"}.get(kind, str(threshold).strip().lower())

    rows = []
    for name, groups, total, mask_box in masks.tie_groups(ranking, in_region, skip=region_segment):
        counts = ranking.counts_from_groups(groups)
        del groups
        reasons = []
        outside = int(total - counts.positives)
        if outside and counts.positives:
            reasons.append(f"{outside} of its {total} voxels lie outside the region and are ignored")
        # Σ_{M∩V} S⁺ from the counts: every voxel of a tie group has the group's score
        mass_in = float(np.sum(counts.counts * ranking.values[counts.groups].astype(np.float64)))
        ms = MaskScores(ranking, counts, cut, kind, mass_in=mass_in, mass_total=mass_total,
                        pointing_hits=_pointing_hits(argmax_ijk, mask_box, region_mask, raw.shape,
                                                     saliency.spacing, tolerance_mm)
                        if counts.positives and ranking.n_groups > 1 else None,
                        reasons=reasons,
                        peak_distance=_peak_distance(argmax_ijk, mask_box, region_mask, raw.shape, saliency.spacing)
                        if counts.positives and ranking.n_groups > 1 else None)
        row = {"segment": name}
        for key, info in METRICS.items():
            row[key] = float(info.function(ms))
        _, _, lowest = ms.thresholded() if ms.positives and ranking.n_groups > 1 else (0, 0, float("nan"))
        row.update(threshold=rule_text, threshold_value=float(lowest), region=region_name,
                   mask_voxels=int(counts.positives), pointing_tolerance_mm=float(tolerance_mm),
                   note="; ".join(ms.reasons))
        rows.append(row)
    notes = []
    if region_segment is not None:
        notes.append(f"segment {region_segment!r} is the region, so it is not scored against itself")
    if kind == "topk":
        notes.append(TOPK_NOTE)
    if kind == "max":
        notes.append("threshold 'max' picks the best threshold per segment using the mask: an oracle, not a fair score")
    return EvaluationTable(rows=rows, region=region_name, threshold=rule_text, notes=notes)


def score_masks(saliency, masks: Mapping, region=None, threshold: str = "topk", spacing=(1.0, 1.0, 1.0),
                tolerance_mm: float = POINTING_TOLERANCE_MM) -> EvaluationTable:
    """:func:`evaluate` for plain arrays: ``saliency`` (z, y, x), ``masks`` name -> bool array,
    ``region`` a bool array or None (all), ``spacing`` (x, y, z) mm."""
    volume = Volume(np.asarray(saliency), spacing=spacing)
    region_arg = "all" if region is None else np.asarray(region, dtype=bool)
    return evaluate(volume, dict(masks), region=region_arg, threshold=threshold, tolerance_mm=tolerance_mm)


# ---- curves for plots -----------------------------------------------------------------------------
def _curve_inputs(saliency, mask, region):
    s = np.asarray(saliency.array if isinstance(saliency, Volume) else saliency)
    m = np.asarray(mask, dtype=bool)
    if s.shape != m.shape:
        raise InputError(f"map shape {s.shape} and mask shape {m.shape} differ; put them on one grid first")
    s = np.maximum(s, 0) if s.dtype != bool else s
    if region is not None:
        v = np.asarray(region, dtype=bool)
        s, m = s[v], m[v]
    ranking = Ranking(s.ravel())
    return ranking, ranking.counts_for(np.flatnonzero(m.ravel()))


def roc_curve(saliency, mask, region=None):
    """(fpr, tpr, thresholds) of S⁺ against ``mask`` over ``region`` (scikit-learn's convention,
    every distinct score a point)."""
    ranking, counts = _curve_inputs(saliency, mask, region)
    return ranking.roc_curve(counts)


def thin_curve(x, y, points: int = 2000):
    """At most ``points`` points of a curve, both ends kept, picked from the curve (not interpolated).

    For plotting only: a CT has millions of distinct scores, so :func:`roc_curve` has millions of
    points; AUCs come from the exact tables, never from a thinned curve.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.size <= points:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, points).round().astype(int))
    return x[keep], y[keep]


def pr_curve(saliency, mask, region=None):
    """(precision, recall, thresholds) of S⁺ against ``mask`` over ``region`` (scikit-learn's
    ``precision_recall_curve`` convention)."""
    ranking, counts = _curve_inputs(saliency, mask, region)
    return ranking.pr_curve(counts)


# ---- helpers --------------------------------------------------------------------------------------
class _MaskSource:
    """The segments to score, on the map's grid: bool masks by name, or labelmap layers.

    :meth:`tie_groups` yields, per segment, the tie groups of its voxels inside the region. For
    labelmap layers (:class:`Segments`, e.g. 117 TotalSegmentator labels in one uint8 volume) the
    region's voxels are split by label in one pass (:func:`_split_by_label`) and each label's voxels
    gather their tie-group ids from the shared ranking — never one full-size boolean volume per
    segment; the map is sorted only once.
    """

    def __init__(self, masks: dict | None = None, segments=None):
        self._masks, self._segments = masks, segments
        self.names = list(masks) if masks is not None else segments.names

    def mask(self, name: str) -> np.ndarray:
        return self._masks[name] if self._masks is not None else self._segments.mask(name)

    def tie_groups(self, ranking, in_region, skip=None):
        """(name, tie-group ids of its voxels in the region, its voxel count, crop -> bool box)."""
        def gather(selected_in_grid_order):
            return ranking.group_of[selected_in_grid_order]

        if self._masks is not None:
            for name, mask in self._masks.items():
                if name == skip:
                    continue
                flat = mask.ravel()
                selected = flat[in_region] if in_region is not None else flat
                yield name, gather(selected), int(np.count_nonzero(flat)), (lambda crop, m=mask: m[crop])
            return
        by_layer = {}
        for entry in self._segments.entries:
            by_layer.setdefault(entry.layer, []).append(entry)
        layers = self._segments.layers
        for index, entries in by_layer.items():
            layer = layers[index]
            flat = layer.ravel()
            labels = flat[in_region] if in_region is not None else flat
            small = flat.dtype.itemsize <= 2 and np.issubdtype(flat.dtype, np.unsignedinteger)
            totals = _label_counts(flat, max(e.label for e in entries) + 1) if small else None
            wanted = [e.label for e in entries if e.name != skip]
            split = _split_by_label(labels, ranking.group_of, wanted) if small else None
            del labels
            for e in entries:
                if e.name == skip:
                    continue
                total = int(totals[e.label]) if totals is not None else int(np.count_nonzero(flat == e.label))
                if split is not None:
                    groups = split[e.label]
                else:
                    region_labels = flat[in_region] if in_region is not None else flat
                    groups = gather(region_labels == e.label)
                yield e.name, groups, total, (lambda crop, lay=layer, label=e.label: lay[crop] == label)


def _label_counts(flat: np.ndarray, minlength: int, chunk: int = 1 << 23) -> np.ndarray:
    """np.bincount of small-integer labels in chunks (bincount casts its input to int64: on a whole
    512x512x400 layer that is a 0.8 GB temporary)."""
    counts = np.zeros(max(minlength, int(flat.max()) + 1 if flat.size else 0), dtype=np.int64)
    for start in range(0, flat.size, chunk):
        part = np.bincount(flat[start:start + chunk])
        counts[:part.size] += part
    return counts


def _split_by_label(labels: np.ndarray, group_of: np.ndarray, wanted, chunk: int = 1 << 23) -> dict:
    """label -> int32 tie-group ids of the region voxels carrying it, for every ``wanted`` label.

    One pass over the region in chunks: a stable counting sort of the chunk's small-integer labels
    (numpy's radix sort for 8/16-bit keys: linear time), one gather of the chunk's tie groups in
    that order, cut at the label boundaries. So 117 labels cost about one pass, not 117 (measured
    in benchmarks/bench_fullsize.py); memory: the chunk's index array plus the labels' own voxels.
    """
    wanted = np.asarray(sorted(set(int(v) for v in wanted)), dtype=np.int64)
    parts = {int(v): [] for v in wanted}
    for start in range(0, labels.size, chunk):
        chunk_labels = labels[start:start + chunk]
        order = np.argsort(chunk_labels, kind="stable")
        sorted_labels = chunk_labels[order]
        groups = group_of[start:start + chunk][order]
        del order
        lo = np.searchsorted(sorted_labels, wanted, side="left")
        hi = np.searchsorted(sorted_labels, wanted, side="right")
        for label, a, b in zip(wanted.tolist(), lo, hi):
            if b > a:
                parts[label].append(groups[a:b].copy())
    empty = np.zeros(0, dtype=group_of.dtype)
    return {label: (np.concatenate(p) if p else empty) for label, p in parts.items()}


def _mask_source(segments, saliency: Volume, note) -> _MaskSource:
    """The segments on the map's grid (resampling Segments that live on another grid)."""
    if isinstance(segments, Mapping):
        masks = {str(k): np.asarray(v, dtype=bool) for k, v in segments.items()}
        for name, m in masks.items():
            if m.shape != saliency.shape:
                raise InputError(f"mask {name!r} has shape {m.shape}, the map {saliency.shape}; "
                                 "put them on one grid (or pass Segments, which are resampled)")
        source = _MaskSource(masks=masks)
    else:
        grid = segments.grid
        if not grid.same_grid(saliency):
            if overlap_fraction(grid, saliency) == 0.0:
                raise InputError(f"the masks ({grid.describe_grid()}) do not overlap the saliency map "
                                 f"({saliency.describe_grid()}); check that they belong to the same CT")
            note(f"masks are on another grid ({grid.describe_grid()}); resampled onto the map's grid "
                 "(nearest neighbour)")
            segments = segments.resampled_to(saliency)
        source = _MaskSource(segments=segments)
    if not source.names:
        raise InputError("there are no segments to score the map against; give a segmentation with at least one segment")
    if isinstance(segments, Mapping):
        empty = not any(np.any(mk) for mk in source._masks.values())
    else:
        empty = not any(np.any(layer) for layer in segments.layers)
    if empty:
        raise InputError(f"every segment ({', '.join(source.names)}) is empty on the map's grid, so there is "
                         "nothing to score against; give masks that hold the organs of this CT")
    return source


def _region(region, masks: _MaskSource, saliency: Volume, ct, note) -> tuple:
    """(bool mask, description, name of the segment used or None); the mask is None for "all"."""
    if isinstance(region, tuple) and len(region) == 2:  # (description, mask), e.g. from --region-masks
        name, mask = region
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != saliency.shape:
            raise InputError(f"region mask shape {mask.shape} differs from the map's {saliency.shape}")
        segment = None
    elif isinstance(region, np.ndarray):
        if region.shape != saliency.shape:
            raise InputError(f"region mask shape {region.shape} differs from the map's {saliency.shape}")
        mask, name, segment = region.astype(bool), "custom region", None
    else:
        key = str(region).strip()
        body_segment = next((n for n in masks.names if n.lower() == "body"), None)
        if key.lower() == "auto":
            key = "body" if body_segment or ct is not None else "all"
        if key.lower() == "all":
            return None, "all", None
        if key.lower() == "body":
            if body_segment:
                mask, name, segment = masks.mask(body_segment), f"body (segment {body_segment!r})", body_segment
            elif ct is not None:
                mask, name, segment = body_mask(ct, saliency), f"body (CT > {BODY_HU:g} HU)", None
            else:
                raise InputError("region 'body' needs the CT (--ct CT) or a segment named body; "
                                 "or use --region all")
        elif key in masks.names:
            mask, name, segment = masks.mask(key), key, key
        else:
            raise InputError(f"region {key!r} is not body, all or a segment name; the segments are: "
                             f"{', '.join(masks.names)}")
    if not mask.any():
        raise InputError(f"the evaluation region ({name}) is empty; choose another --region (e.g. all)")
    return mask, name, segment


def body_mask(ct: Volume, reference: Volume | None = None) -> np.ndarray:
    """The body: CT > -500 HU, largest connected component, holes filled (in 3D and per axial slice,
    so the lungs are inside). On ``reference``'s grid when given (CT resampled linearly)."""
    from scipy import ndimage

    if reference is not None and not ct.same_grid(reference):
        if overlap_fraction(ct, reference) == 0.0:
            raise InputError(f"the CT ({ct.describe_grid()}) does not overlap the saliency map "
                             f"({reference.describe_grid()}); give the CT the map was computed on")
        ct = resample_to(ct.with_array(ct.array.astype(np.float32)), reference, "linear", default_value=-1024.0)
    tissue = ct.array > BODY_HU
    planes = [np.flatnonzero(tissue.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
    if planes[0].size == 0:
        raise InputError(f"the CT has no voxel above {BODY_HU:g} HU, so there is no body; is it in HU? "
                         "use --region all")
    # Everything is done inside the tissue's bounding box: outside it there is no component, and every
    # background voxel outside it reaches the array's edge, so hole filling in the box (whose edge
    # counts as outside) gives the same voxels as on the whole array, in 3D and per slice.
    box = tuple(slice(int(p[0]), int(p[-1]) + 1) for p in planes)
    labels, count = _label_components(tissue[box])
    del tissue
    body = labels == int(np.argmax(_component_sizes(labels, count)))
    del labels
    body = ndimage.binary_fill_holes(body)
    for k in range(body.shape[0]):  # axial slices: lungs and bowel gas open to the airway still count
        body[k] = ndimage.binary_fill_holes(body[k])
    whole = np.zeros(ct.shape, dtype=bool)
    whole[box] = body
    return whole


def _label_components(mask: np.ndarray) -> tuple:
    """``ndimage.label`` (6-connectivity) into uint16 labels where the count allows: half the memory of
    its default int32 on a full-size CT. scipy raises RuntimeError when uint16 cannot hold the labels
    (scipy/ndimage/_measurements.py, ``label``: NeedMoreBits → int32 attempt → "insufficient
    bit-depth"); then the labelling is redone in int32 (a noisy CT with > 65535 specks)."""
    from scipy import ndimage

    try:
        return ndimage.label(mask, output=np.uint16)
    except RuntimeError:
        return ndimage.label(mask)


def _component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels per label (background's count set to 0), counted slab by slab: ``np.bincount`` copies
    its input to int64 (8 bytes a voxel: 800 MB on a 512×512×400 CT), so it only sees one slab."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    step = max(1, (1 << 22) // max(1, labels[0].size))  # about 4 M voxels (32 MB of int64) a slab
    for k in range(0, labels.shape[0], step):
        sizes += np.bincount(labels[k:k + step].ravel(), minlength=count + 1)
    sizes[0] = 0
    return sizes


def _argmax_voxels(flat_raw: np.ndarray, in_region, ranking: Ranking, shape) -> np.ndarray:
    """(K, 3) z, y, x indices of the region's voxels that tie for the maximum (tie group 0)."""
    top = flat_raw == ranking.values[0]  # S⁺'s maximum is a raw value (or the map is constant)
    if in_region is not None:
        top &= in_region
    return np.stack(np.unravel_index(np.flatnonzero(top), shape), axis=1)


def _peak_distance(points: np.ndarray, mask_box, region, shape, spacing, most: int = 64) -> float:
    """Mean over (at most ``most``) argmax voxels (z, y, x) of the distance in mm to the nearest voxel
    of the mask ∩ region. Searched in growing boxes around all the points at once (exact: a point's
    distance is only trusted when it is no farther than the box's edge), so a near organ costs a
    small crop and a far one a few whole-array scans, not one per point."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    if points.shape[0] > most:
        points = points[np.linspace(0, points.shape[0] - 1, most).astype(int)]
    sampling = np.asarray(spacing, dtype=float)[::-1]
    shape = np.asarray(shape)
    radius = 8
    while True:
        lo = np.maximum(points.min(axis=0) - radius, 0)
        hi = np.minimum(points.max(axis=0) + radius + 1, shape)
        crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        box = np.asarray(mask_box(crop), dtype=bool)
        if region is not None:
            if box.flags.owndata and box.flags.writeable:  # made for us (a labelmap == label): and in place
                np.logical_and(box, region[crop], out=box)  # once the crop is the whole CT, a second
            else:  # grid-sized array here was evaluate's memory peak; a view of the caller's mask is copied
                box = box & region[crop]
        whole = bool(np.all(lo == 0) and np.all(hi == shape))
        if box.any():
            # the nearest mask voxel to a point outside the mask has a 6-neighbour outside it (a step
            # toward the point is nearer), so the tree holds only the surface: on a large organ a few
            # % of its voxels, where np.argwhere of all of them cost 48 bytes a voxel before the tree.
            # The surface is found inside the mask's own bounding box (a view, no copy): once the
            # crop is the whole CT, a grid-sized erosion output was this function's memory peak.
            tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in
                          (np.flatnonzero(box.any(axis=tuple(a for a in range(3) if a != axis)))
                           for axis in range(3)))
            inner = box[tight]
            surface = ndimage.binary_erosion(inner)  # border_value 0: the bounding box's edge is surface
            np.logical_not(surface, out=surface)
            surface &= inner
            offset = lo + np.array([t.start for t in tight])
            distance, _ = cKDTree((np.argwhere(surface) + offset) * sampling).query(points * sampling)
            del surface, inner
            distance[box[tuple((points - lo).T)]] = 0.0  # points inside the mask
            # no voxel outside the box is nearer than the box's edge (edges of the array are no limit)
            below = np.where(lo > 0, (points - lo + 1) * sampling, np.inf)
            above = np.where(hi < shape, (hi - points) * sampling, np.inf)
            edge = np.minimum(below, above).min(axis=1)
            if whole or np.all(distance <= edge):
                return float(np.mean(distance))
        elif whole:
            return float("nan")
        radius *= 4


def _pointing_hits(points: np.ndarray, mask_box, region, shape, spacing, tolerance_mm: float) -> float:
    """Fraction of ``points`` (z, y, x) within ``tolerance_mm`` of ``mask ∩ region``, distances in mm.
    ``mask_box(crop)`` gives the mask inside a crop of the grid (``region`` None: the whole grid).

    scipy's Euclidean distance transform with ``sampling`` = spacing in (z, y, x) order, computed on
    the box around the points that any voxel within the tolerance must lie in (exact, and cheap on a
    full-size CT).
    """
    from scipy import ndimage

    sampling = np.asarray(spacing, dtype=float)[::-1]  # (x, y, z) -> (z, y, x)
    margin = np.ceil(tolerance_mm / sampling).astype(int) + 1
    lo = np.maximum(points.min(axis=0) - margin, 0)
    hi = np.minimum(points.max(axis=0) + margin + 1, shape)
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    box = np.array(mask_box(crop), dtype=bool)  # a copy: never modify the caller's mask
    if region is not None:
        box &= region[crop]
    if not box.any():
        return 0.0
    distance = ndimage.distance_transform_edt(~box, sampling=sampling)
    local = points - lo
    d = distance[local[:, 0], local[:, 1], local[:, 2]]
    return float(np.mean(d <= tolerance_mm + 1e-9))
