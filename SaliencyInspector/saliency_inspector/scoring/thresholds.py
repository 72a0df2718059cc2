"""Threshold rules that turn a saliency map into a set of kept voxels (for Dice, IoA, …).

``topk`` keeps as many voxels as the mask has (so it depends on the mask), ``max`` is the best Dice
over all thresholds (an oracle, also per mask); ``otsu``, ``fixed:T`` and ``percentile:P`` give one
map-wide :class:`Cut`. Voxels with S⁺ > cut are kept (strictly above; ties at the cut are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .ranking import Ranking

THRESHOLD_RULES = ("topk", "otsu", "fixed:T", "percentile:P", "max")
TOPK_NOTE = ("under the topk threshold the map keeps |M| voxels, so Dice, IoA and rank accuracy are the same "
             "number by construction; use --threshold otsu (or fixed:T) to see them differ")


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


def map_cut(kind: str, arg, scores: np.ndarray, ranking: Ranking):
    """The map-wide cut of a parsed rule (:func:`parse_threshold`) on the region's S⁺ ``scores``,
    ranked in ``ranking``: the cut for otsu/fixed/percentile; None for topk/max (they depend on the mask) and
    for a constant map (where every thresholded metric is undefined anyway)."""
    if kind in ("topk", "max") or ranking.n_groups == 1:
        return None
    if kind == "fixed":
        return Cut(arg * float(ranking.values[0]))
    if kind == "percentile":
        return Cut(float(np.percentile(scores, arg)))
    from skimage.filters import threshold_otsu
    return Cut(float(threshold_otsu(scores)))

