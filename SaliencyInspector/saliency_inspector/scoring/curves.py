"""ROC and precision-recall curves of a map against one mask, for plots (the AUCs in tables come
from :func:`.evaluation.evaluate`'s exact rankings, never from a plotted curve)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .importance import importance_transform
from .ranking import Ranking


def _curve_inputs(saliency, mask, region, importance="relu"):
    """(ranking of the transformed map over ``region``, ``mask``'s counts in it)."""
    s = np.asarray(saliency.array if isinstance(saliency, Volume) else saliency)
    m = np.asarray(mask, dtype=bool)
    if s.shape != m.shape:
        raise InputError(f"map shape {s.shape} and mask shape {m.shape} differ; put them on one grid first")
    s = importance_transform(s, importance)
    if region is not None:
        v = np.asarray(region, dtype=bool)
        s, m = s[v], m[v]
    ranking = Ranking(s.ravel())
    return ranking, ranking.counts_for(np.flatnonzero(m.ravel()))


def roc_curve(saliency, mask, region=None, importance: str = "relu"):
    """(fpr, tpr, thresholds) of the map ranked by ``importance`` (ReLU(map) by default) against
    ``mask`` over ``region`` (scikit-learn's convention, every distinct score a point)."""
    ranking, counts = _curve_inputs(saliency, mask, region, importance)
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


def pr_curve(saliency, mask, region=None, importance: str = "relu"):
    """(precision, recall, thresholds) of the map ranked by ``importance`` against ``mask`` over
    ``region`` (scikit-learn's ``precision_recall_curve`` convention)."""
    ranking, counts = _curve_inputs(saliency, mask, region, importance)
    return ranking.pr_curve(counts)
