"""Quantus's faithfulness metrics in 3D: does removing what the map ranks high change the prediction?

Each is read from Quantus 0.6 (``quantus/metrics/faithfulness/<file>``, named per function) and
runs on one sample on the model-input grid: ``x`` (C, *spatial), the map ``a`` (*spatial, one value
per voxel, every channel perturbed together), a ``domain`` (bool, *spatial: the body, so the air
around the patient is never "removed"; None = every voxel, Quantus's setting) and ``predict``: a
function from a batch (B, C, *spatial) of numpy inputs to the target's B scores, which batches
under the memory cap and falls back to batches of 1 for a static-batch model
(:func:`.model_calls.target_scores`). Perturbed inputs are made ``batch`` at a time, never all at once.

Where Quantus uses 2-D square patches we use cubes (``patch`` voxels a side), and SLIC supervoxels
(:func:`explainers.xrai.supervoxels`, passed in as a label array) where it uses SLIC superpixels.
Baselines as Quantus names them: "black" = the input's minimum (air on a CT), "mean" = the mean of
the current input over the domain. The map is used signed (Quantus ``abs=False``); Quantus's
normalisation by the maximum changes none of these scores (ratios, orders and correlations).
"""

from __future__ import annotations

import numpy as np


def _baseline(x: np.ndarray, kind: str, domain_flat) -> float:
    if kind == "black":
        return float(x.min())
    if kind == "mean":
        flat = x.reshape(x.shape[0], -1)
        return float(flat[:, domain_flat].mean()) if domain_flat is not None else float(x.mean())
    return float(kind)


def _domain_index(domain, n: int) -> np.ndarray:
    return np.flatnonzero(np.asarray(domain, dtype=bool).ravel()) if domain is not None else np.arange(n)


def _scores(predict, xs: list) -> np.ndarray:
    return np.asarray(predict(np.stack(xs)), dtype=np.float64).ravel()


def faithfulness_correlation(predict, x, a, domain=None, subset_size: int = 224, runs: int = 100,
                             baseline: str = "black", rng=None, batch: int = 8) -> float:
    """Pearson correlation over ``runs`` random voxel subsets S (``subset_size`` voxels of the domain)
    between Σ_S a and f(x) − f(x with S set to the baseline) (``faithfulness_correlation.py``, Bhatt et al.
    2020). Higher is better; 0 = the map's mass says nothing about the effect of removal.
    ``rng``: a ``np.random.RandomState`` (its ``choice`` draws as Quantus's ``np.random.choice`` does)."""
    from scipy.stats import pearsonr

    rng = rng if rng is not None else np.random.RandomState(0)
    x = np.asarray(x, dtype=np.float32)
    flat_a = np.asarray(a, dtype=np.float64).ravel()
    index = _domain_index(domain, flat_a.size)
    value = _baseline(x, baseline, None)
    y0 = _scores(predict, [x])[0]
    deltas, sums, pending = [], [], []
    for run in range(runs):
        subset = index[rng.choice(index.size, subset_size, replace=False)]
        sums.append(flat_a[subset].sum())
        xp = x.reshape(x.shape[0], -1).copy()
        xp[:, subset] = value
        pending.append(xp.reshape(x.shape))
        if len(pending) == batch or run == runs - 1:
            deltas.extend(y0 - _scores(predict, pending))
            pending = []
    return float(pearsonr(np.asarray(sums), np.asarray(deltas))[0])


def patch_order(a, patch: int, domain=None) -> list:
    """Non-overlapping cubes of ``patch`` voxels (raster order, the grid padded to a multiple), sorted by
    their summed attribution, highest first (stable for ties): a list of flat voxel-index arrays, each
    restricted to the domain (cubes with no domain voxel dropped)."""
    a = np.asarray(a, dtype=np.float64)
    shape = a.shape
    counts = [-(-n // patch) for n in shape]
    ids = np.zeros(shape, dtype=np.int64)  # the cube of every voxel, raster order of the cubes
    for axis, n in enumerate(shape):
        along = (np.arange(n) // patch).reshape([-1 if i == axis else 1 for i in range(len(shape))])
        ids = ids * counts[axis] + along
    keep = np.asarray(domain, dtype=bool).ravel() if domain is not None else np.ones(a.size, bool)
    flat_ids = ids.ravel()
    sums = np.bincount(flat_ids, weights=a.ravel(), minlength=int(np.prod(counts)))
    members = np.argsort(flat_ids, kind="stable")
    bounds = np.searchsorted(flat_ids[members], np.arange(sums.size + 1))
    order = np.argsort(-sums, kind="stable")
    out = []
    for c in order:
        voxels = members[bounds[c]:bounds[c + 1]]
        voxels = voxels[keep[voxels]]
        if voxels.size:
            out.append(voxels)
    return out


def _cumulative_removal(predict, x, regions, baseline: str, batch: int, domain_flat=None) -> np.ndarray:
    """f after removing regions[0], then regions[0..1], … (each set to the baseline)."""
    x = np.asarray(x, dtype=np.float32)
    current = x.reshape(x.shape[0], -1).copy()
    scores, pending = [], []
    for k, voxels in enumerate(regions):
        current[:, voxels] = _baseline(current.reshape(x.shape), baseline, domain_flat)
        pending.append(current.reshape(x.shape).copy())
        if len(pending) == batch or k == len(regions) - 1:
            scores.extend(_scores(predict, pending))
            pending = []
    return np.asarray(scores)


def region_perturbation(predict, x, a, domain=None, patch: int = 8, regions: int = 100, baseline: str = "black",
                        batch: int = 8) -> dict:
    """MoRF region perturbation (``region_perturbation.py``, Samek et al. 2015): cubes removed in the
    map's order; ``curve`` = f(x) − f(x after k cubes), k = 1 … ``regions``; ``aopc`` = the mean of
    the curve with its k = 0 point (0), Samek's AOPC. Higher is better."""
    y0 = _scores(predict, [np.asarray(x, dtype=np.float32)])[0]
    cubes = patch_order(a, patch, domain)[:regions]
    curve = y0 - _cumulative_removal(predict, x, cubes, baseline, batch)
    return {"curve": curve, "aopc": float(np.sum(curve) / (curve.size + 1))}


def selectivity(predict, x, a, domain=None, patch: int = 8, baseline: str = "black", batch: int = 8) -> dict:
    """Selectivity (``selectivity.py``, Montavon et al. 2018): every cube removed in the map's order;
    ``curve`` = f after k cubes; ``auc`` = its trapezoid area (step 1), as Quantus's
    ``calculate_auc``. Lower is better (the score falls fast)."""
    cubes = patch_order(a, patch, domain)
    curve = _cumulative_removal(predict, x, cubes, baseline, batch)
    return {"curve": curve, "auc": float(_trapezoid(curve))}


def irof(predict, x, a, segments, domain=None, baseline: str = "mean", batch: int = 8) -> dict:
    """Iterative removal of features (``irof.py``, Rieger & Hansen 2020): ``segments`` (int labels,
    *spatial; 0 … S−1, or negative = not a segment) removed in order of their mean attribution,
    highest first, each set to the baseline of the input as it is then; ``curve`` = f(x_k) / f(x);
    ``aoc`` = S − its trapezoid area. Higher is better."""
    x = np.asarray(x, dtype=np.float32)
    seg = np.asarray(segments).ravel()
    flat_a = np.asarray(a, dtype=np.float64).ravel()
    labels = np.unique(seg[seg >= 0])
    means = np.array([flat_a[seg == s].mean() for s in labels])
    regions = [np.flatnonzero(seg == labels[i]) for i in np.argsort(-means, kind="stable")]
    y0 = _scores(predict, [x])[0]
    domain_flat = np.asarray(domain, dtype=bool).ravel() if domain is not None else None
    curve = _cumulative_removal(predict, x, regions, baseline, batch, domain_flat) / y0
    return {"curve": curve, "aoc": float(len(regions) - _trapezoid(curve))}


def monotonicity(predict, x, a, domain=None, steps: int = 20, baseline: str = "black", batch: int = 8) -> dict:
    """Monotonicity (Arya et al. 2019; ``monotonicity.py``): start from the baseline everywhere in the
    domain and put the input's voxels back in order of increasing attribution, ``steps`` equal shares
    at a time; the map is monotonic when f never decreases. ``fraction`` = share of steps where f did
    not decrease (1 = monotonic). Quantus 0.6 replaces baseline voxels with the baseline value (the
    "black" of an all-baseline input), so its prediction never changes and every map scores True:
    we insert the real voxels, as the paper does."""
    x = np.asarray(x, dtype=np.float32)
    flat_a = np.asarray(a, dtype=np.float64).ravel()
    index = _domain_index(domain, flat_a.size)
    ascending = index[np.argsort(flat_a[index], kind="stable")]
    current = x.reshape(x.shape[0], -1).copy()
    current[:, index] = _baseline(x, baseline, None)
    original = x.reshape(x.shape[0], -1)
    scores, pending = [], [current.reshape(x.shape).copy()]
    for k, part in enumerate(np.array_split(ascending, steps)):
        current[:, part] = original[:, part]
        pending.append(current.reshape(x.shape).copy())
        if len(pending) >= batch or k == steps - 1:
            scores.extend(_scores(predict, pending))
            pending = []
    diffs = np.diff(np.asarray(scores))
    return {"curve": np.asarray(scores), "monotonic": bool(np.all(diffs >= 0)),
            "fraction": float(np.mean(diffs >= 0))}


def completeness(predict, x, a, baseline: str = "black") -> dict:
    """Completeness (Sundararajan et al. 2017; ``axiomatic/completeness.py``): Σ a against
    f(x) − f(baseline input). Quantus returns exact equality (a bool, on a map normalised by its
    maximum, so nearly always False); we report the raw map's ``gap`` = Σa − Δf and ``relative`` =
    |gap| / |Δf| (0 = complete; IG approaches it as its steps grow)."""
    x = np.asarray(x, dtype=np.float32)
    y = _scores(predict, [x, np.full_like(x, _baseline(x, baseline, None))])
    delta = y[0] - y[1]
    gap = float(np.sum(np.asarray(a, dtype=np.float64)) - delta)
    return {"gap": gap, "relative": abs(gap) / abs(delta) if delta else float("nan"), "delta": float(delta)}


def _trapezoid(curve) -> float:
    """Trapezoid area at unit spacing (np.trapezoid is numpy >= 2 only; Slicer 5.8 ships numpy 1.26)."""
    curve = np.asarray(curve, np.float64)
    return float((curve[1:] + curve[:-1]).sum() / 2.0) if curve.size > 1 else 0.0
