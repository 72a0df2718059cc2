"""Quantus's localisation metrics for one mask, in 3D, from the shared ranking of ``evaluate``.

Definitions from Quantus 0.6 (``quantus/metrics/localisation/``), over the region V, with the map's
S⁺ = ReLU(map) ranked once (:mod:`.ranking`; ties shared as a uniformly random tie-break would, where
Quantus's ``np.argsort`` breaks them by memory order):

* top-k intersection (``top_k_intersection.py``, Theiner et al. 2021): share of the k highest voxels
  inside M (k = 1000 as Quantus; ``concept_influence`` off);
* relevance rank accuracy (``relevance_rank_accuracy.py``, Arras et al. 2021): share of the |M|
  highest voxels inside M (our ``rank_accuracy``);
* relevance mass accuracy (``relevance_mass_accuracy.py``, Arras et al. 2021): Σ_M a / Σ_V a on the
  map Quantus would use (``abs=False``: the signed map; our ``mass_in_mask`` is the same on S⁺, so for
  a non-negative map, as every CAM, they agree).

Focus (``focus.py``, Arias-Duart et al. 2022) scores a mosaic of four images of which some hold the
class; one 3-D CT is not a mosaic, so it is not computed per case (a cohort could build mosaics of
cases: not done here).
"""

from __future__ import annotations

from .mask_scores import MaskScores

TOP_K = 1000


def top_k_intersection(ms: MaskScores, k: int = TOP_K) -> float:
    """Share of the ``k`` highest-scoring voxels of V that lie in M (NaN for an empty mask)."""
    if ms.positives == 0:
        return ms.undefined("empty mask in the region")
    k = min(int(k), ms.n)
    hits, _ = ms.ranking.top_k_hits(ms.counts, k)
    return hits / k


def relevance_rank_accuracy(ms: MaskScores) -> float:
    """Share of the |M| highest-scoring voxels that lie in M."""
    if ms.positives == 0:
        return ms.undefined("empty mask in the region")
    hits, _ = ms.ranking.top_k_hits(ms.counts, ms.positives)
    return hits / ms.positives


def relevance_mass_accuracy(ms: MaskScores) -> float:
    """Σ_M S⁺ / Σ_V S⁺ (Quantus's relevance mass accuracy on a non-negative map): the same quantity
    as our mass in mask, so it is that metric under Quantus's name (one definition, two keys)."""
    from .overlap import mass_in_mask

    return mass_in_mask(ms)
