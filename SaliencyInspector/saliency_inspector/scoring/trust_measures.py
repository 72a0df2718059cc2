"""What the trust criteria measure: the randomization curve, the baseline of maps of different
cases and the localization AUPRCs with their baselines. :mod:`.trust` judges these (verdicts, card).

Geometry: maps of ONE case (randomization, two models on one CT) may be compared through physical
space (:func:`.similarity.compare_maps` resamples); maps of DIFFERENT cases never are: the baseline
compares them as arrays on the model-input grid, as the reference code compares pixel arrays (the
same voxel index is the same place in the network's view), so scanner origins and storage order
cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .importance import importance_transform
from .similarity import compare_maps
from .statistics import Interval, pair_mean_samples, _percentiles, LEVEL, RESAMPLES


# ---- randomization ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomizationCurve:
    """Similarity to the original map after each randomization step (``blocks[0]`` = "original")."""

    method: str
    mode: str
    blocks: list[str]
    ssim: list[float]
    spearman: list[float]
    maps: list[Volume] = field(default_factory=list, repr=False)  # kept for the slice grid
    normalisation: str = "relu"
    blank: list[bool] = field(default_factory=list)  # per step: the map is all zero after normalisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: method, mode, normalisation and one entry per step."""
        return {"method": self.method, "mode": self.mode, "normalisation": self.normalisation,
                "steps": [{"block": b, "ssim": s, "spearman": r, "blank": z}
                          for b, s, r, z in zip(self.blocks, self.ssim, self.spearman, self.blank)]}


def randomization_curve(maps: Iterable[tuple[str, Any]], method: str, mode: str = "cascading",
                        normalisation: str = "relu", region: np.ndarray | None = None, keep_maps: bool = True,
                        progress: Callable[[str], None] | None = None) -> RandomizationCurve:
    """SSIM and Spearman of each randomized map to the first one. ``maps``: iterable of (block name,
    Volume or object with ``.volume``), the first the trained model's map (as
    :func:`explainers.randomization.randomized_maps` yields them)."""
    blocks: list[str] = []
    ssims: list[float] = []
    spearmans: list[float] = []
    blank: list[bool] = []
    kept: list[Volume] = []
    original = None
    for block, item in maps:
        volume = getattr(item, "volume", item)
        if original is None:
            original = volume
        s = compare_maps(original, volume, normalisation, region)
        blocks.append(block)
        ssims.append(s.ssim)
        spearmans.append(s.spearman)
        raw = np.asarray(volume.array)
        blank.append(not bool(importance_transform(raw, normalisation).any()))
        if keep_maps:
            kept.append(volume)
        if progress and block != "original":
            progress(f"  {method}: randomized {block}: SSIM {s.ssim:.3f}, Spearman {s.spearman:.3f}")
    if original is None:
        raise InputError("no maps to compare")
    return RandomizationCurve(method, mode, blocks, ssims, spearmans, kept, normalisation, blank)


# ---- the baseline: how similar are maps of different cases anyway -------------------------------------
PAIRS_PER_CASE = 50  # the reference code's baseline: 50 random partners per image (fewer: every pair)


@dataclass(frozen=True)
class Baseline:
    """SSIM and Spearman over pairs of maps of different cases (means, and one value per pair), the
    pairs as case indices, how many cases, the 95 % interval of the mean SSIM (bootstrap over the
    cases behind the pairs), the comparison region rule and where the cases came from."""

    ssim: float
    spearman: float
    n_pairs: int
    ssim_values: list[float]
    source: str = ""
    spearman_values: list[float] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    n_cases: int = 0
    interval: Interval | None = None
    region: str = ""
    ssim_box: float = float("nan")
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, fields in order (pairs as lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["pairs"] = [list(p) for p in self.pairs]
        out["interval"] = self.interval.to_dict() if self.interval else None
        return out

    def difference(self, values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL) -> Interval:
        """mean(``values``) − the baseline's mean SSIM, with a bootstrap interval: ``values`` (one per
        case; one value = this CT, taken as measured) resampled over cases, the baseline over the
        cases behind its pairs, independently. ``n``: the baseline's number of pairs."""
        v = np.asarray(values, np.float64).ravel()
        rng = np.random.default_rng(self.seed + 1)
        own = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1) if v.size > 1 else np.full(resamples, v.mean())
        base = pair_mean_samples(self.ssim_values, self.pairs, self.n_cases, resamples, self.seed)
        lo, hi = _percentiles(own - base, level)
        return Interval(float(v.mean() - self.ssim), lo, hi, self.n_pairs)


def choose_pairs(n_cases: int, per_case: int = PAIRS_PER_CASE, seed: int = 0) -> list[tuple[int, int]]:
    """Pairs (i < j) of different cases: each case with ``per_case`` random partners (every other
    case when there are fewer), without repeats; seeded."""
    if n_cases < 2:
        raise InputError(f"a baseline needs maps of at least 2 different cases (got {n_cases})")
    rng = np.random.default_rng(seed)
    chosen: set[tuple[int, int]] = set()
    for i in range(n_cases):
        others = np.array([j for j in range(n_cases) if j != i])
        if others.size > per_case:
            others = rng.choice(others, per_case, replace=False)
        chosen.update((min(i, int(j)), max(i, int(j))) for j in others)
    return sorted(chosen)


def _as_input_array(item: Any) -> np.ndarray:
    item = getattr(item, "volume", item)  # an InputMap, a Volume or an array
    return np.asarray(item.array if isinstance(item, Volume) else item, np.float64)


def _on_shape(a: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``a`` resized by index onto ``shape`` (only for models whose input size varies per case)."""
    if a.shape == tuple(shape):
        return a
    from scipy.ndimage import zoom

    return zoom(a, [t / s for t, s in zip(shape, a.shape)], order=order)


def cohort_baseline(maps: Sequence[Any], bodies: Sequence[np.ndarray] | None = None, normalisation: str = "relu",
                    source: str = "", pairs: Sequence[tuple[int, int]] | None = None,
                    per_case: int = PAIRS_PER_CASE, seed: int = 0) -> Baseline:
    """The baseline over maps of different cases, compared as ARRAYS on the model-input grid.

    ``maps``: one per case (Volumes on each case's model-input grid, or arrays; their origins,
    spacings and directions are ignored on purpose: the network sees the same array whatever the
    scanner coordinates). ``bodies``: each case's body on that grid; a pair is compared inside the
    union of its two bodies (else inside the union of the maps' support). ``pairs``: case index pairs
    (default :func:`choose_pairs`). Maps of another shape are resized by index to the first's shape."""
    arrays = [_as_input_array(m) for m in maps]
    shape = arrays[0].shape
    arrays = [_on_shape(a, shape, 1) for a in arrays]
    masks = None if bodies is None else [_on_shape(np.asarray(b, float), shape, 0) > 0.5 for b in bodies]
    pairs = list(pairs) if pairs is not None else choose_pairs(len(arrays), per_case, seed)
    if not pairs:
        raise InputError("no pairs of maps for the baseline")
    ssims, rhos, boxes = [], [], []
    for i, j in pairs:
        if i == j:
            raise InputError("a baseline pair must be two different cases")
        region = None if masks is None else (masks[i] | masks[j])
        s = compare_maps(arrays[i], arrays[j], normalisation, region)
        ssims.append(s.ssim)
        rhos.append(s.spearman)
        boxes.append(s.ssim_box)
    lo, hi = _percentiles(pair_mean_samples(ssims, pairs, len(arrays), RESAMPLES, seed), LEVEL)
    rule = "union of the two cases' bodies" if masks is not None else "union of the two maps' support"
    return Baseline(float(np.mean(ssims)), float(np.mean(rhos)), len(ssims), [float(v) for v in ssims], source,
                    [float(v) for v in rhos], [(int(i), int(j)) for i, j in pairs], len(arrays),
                    Interval(float(np.mean(ssims)), lo, hi, len(ssims)), rule, float(np.mean(boxes)), seed)


def baseline_similarity(pairs: Iterable[tuple[Any, Any]], normalisation: str = "relu", source: str = "",
                        seed: int = 0) -> Baseline:
    """The baseline from explicit pairs of maps of *different* cases (Volumes or arrays, compared as
    arrays on the model-input grid). The same object in several pairs counts as one case (for the
    bootstrap over cases)."""
    index: dict[int, int] = {}
    maps: list[Any] = []
    idx_pairs = []
    for a, b in pairs:
        for m in (a, b):
            if id(m) not in index:
                index[id(m)] = len(maps)
                maps.append(m)
        idx_pairs.append((index[id(a)], index[id(b)]))
    if not idx_pairs:
        raise InputError("no pairs of maps for the baseline")
    return cohort_baseline(maps, None, normalisation, source, idx_pairs, seed=seed)


# ---- localization ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Auprc:
    """Area under the precision-recall curve two ways (see :func:`auprc_pair`)."""

    average_precision: float
    trapezoid: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"average_precision": self.average_precision, "trapezoid": self.trapezoid}


LOCALIZATION_BASELINES = ("uniform", "ct_intensity", "location_prior")


@dataclass(frozen=True)
class Localization:
    """AUPRC of the map against the finding's mask and of the baselines (None: not computed), and the
    mask's share of the region (``prevalence``)."""

    map: Auprc
    uniform: Auprc
    prevalence: float
    ct_intensity: Auprc | None = None
    location_prior: Auprc | None = None

    @property
    def baselines(self) -> dict[str, Auprc]:
        """The baselines that were computed, in :data:`LOCALIZATION_BASELINES` order."""
        found = {name: getattr(self, name) for name in LOCALIZATION_BASELINES}
        return {name: value for name, value in found.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``map``, each computed baseline, then ``prevalence``."""
        out: dict[str, Any] = {"map": self.map.to_dict()}
        out.update({name: value.to_dict() for name, value in self.baselines.items()})
        out["prevalence"] = self.prevalence
        return out


def auprc_pair(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(average precision, trapezoid area under the PR curve) of ``scores`` for boolean ``labels``.

    Average precision is scikit-learn's ``average_precision_score``; the trapezoid is
    ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve`` as the reference code of
    Arun et al. computes it (it interpolates linearly, so a constant map scores (1 + prevalence) / 2:
    the reason average precision is given beside it). Both from one exact sort (:mod:`.ranking`).
    """
    from .ranking import Ranking

    ranking = Ranking(np.asarray(scores, np.float64).ravel())
    counts = ranking.counts_for(np.flatnonzero(np.asarray(labels, bool).ravel()))
    precision, recall, _ = ranking.pr_curve(counts)
    # the trapezoid rule written out: np.trapezoid is numpy >= 2 only (Slicer 5.8 ships numpy 1.26.4)
    # and np.trapz is deprecated there
    area = np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0)
    return float(ranking.average_precision(counts)), float(abs(area))


def location_prior(target_body: np.ndarray, others: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean of other cases' masks moved onto this case by their body boxes. ``others``: iterable of
    (mask, body) boolean arrays on each case's own grid."""
    from .gaze import align_by_body_box

    acc, n = None, 0
    for mask, body in others:
        moved = align_by_body_box(np.asarray(mask, np.float64), body, target_body, order=1)
        acc = moved if acc is None else acc + moved
        n += 1
    if not n:
        raise InputError("a location prior needs at least one other case with masks")
    return acc / n


def localization(saliency: Volume, mask: np.ndarray, region: np.ndarray, ct: Volume | None = None,
                 prior: np.ndarray | None = None, normalisation: str = "relu") -> Localization:
    """AUPRC (average precision and trapezoid) of the map against ``mask`` over ``region``, next to
    the baselines: a uniform map, the CT intensity itself (a map that ignores the model) and a
    location prior (when given). All arrays on the map's grid."""
    mask, region = np.asarray(mask, bool), np.asarray(region, bool)
    if mask.shape != saliency.shape or region.shape != saliency.shape:
        raise InputError("the mask and region must be on the map's grid")
    labels = mask[region]
    if not labels.any() or labels.all():
        raise InputError("the mask is empty or covers the whole region: AUPRC is undefined")
    raw = np.asarray(saliency.array, np.float64)
    score = importance_transform(raw, normalisation)  # voxels ranked by the method's declared importance
    ct_auprc = prior_auprc = None
    if ct is not None:
        if not ct.same_grid(saliency):
            raise InputError("the CT must be on the map's grid for the CT-intensity baseline")
        ct_auprc = Auprc(*auprc_pair(np.asarray(ct.array, np.float64)[region], labels))
    if prior is not None:
        prior_auprc = Auprc(*auprc_pair(np.asarray(prior, np.float64)[region], labels))
    return Localization(map=Auprc(*auprc_pair(score[region], labels)),
                        uniform=Auprc(*auprc_pair(np.zeros(labels.size), labels)), prevalence=float(labels.mean()),
                        ct_intensity=ct_auprc, location_prior=prior_auprc)


