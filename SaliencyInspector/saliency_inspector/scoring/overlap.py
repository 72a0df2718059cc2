"""Overlap and ranking agreement of the map with one mask: Dice, IoA, mass in mask, ROC AUC, AUPRC,
rank accuracy, and the reference levels of an uninformative map (AUPRC chance, uniform mass).

Each is a pure function of one :class:`~.mask_scores.MaskScores`, registered in :data:`.metrics.METRICS`.
"""

from __future__ import annotations

from .mask_scores import MaskScores


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


def rank_accuracy(ms: MaskScores) -> float:
    """Fraction of the |M| highest-scoring voxels that lie in M."""
    if not ms.ranks_defined():
        return float("nan")
    hits, _ = ms.ranking.top_k_hits(ms.counts, ms.positives)
    return hits / ms.positives

