"""Randomization tests beside the cascading/independent SSIM curve: eMPRT and data randomization.

**eMPRT** (efficient model parameter randomisation test; Hedström et al. 2023, "Sanity checks
revisited"; Quantus ``quantus/metrics/randomisation/efficient_mprt.py``): the relative rise in the
map's complexity from the trained to the fully randomized model,
``(H(map of the randomized model) − H(map of the trained model)) / H(map of the trained model)``,
H the discrete entropy of the map's values in ``n_bins`` equal-width bins over their own range
(Quantus ``functions/complexity_func.py::discrete_entropy``: ``np.histogram(a, bins=n_bins)`` then
``scipy.stats.entropy``; n_bins 100, no abs, no normalisation — Quantus' defaults). Above 0: the
map of the randomized model is more disordered, as it should be. Here in 3D on the model-input
grid, one score per randomization seed (the fully randomized model is the last step of a cascade),
the verdict from a t interval over seeds (seeds are independent draws of the initialiser).

**Data randomization** (Adebayo et al. 2018): the map of a model trained on shuffled labels
(``train-demo --shuffle-labels``) must not look like the trained model's. Per case: SSIM(real map,
shuffled-label map) minus the case's cross-case baseline (mean SSIM of its real map with the real
maps of the other cases, as arrays on the model-input grid); mean over cases with a bootstrap
interval over cases. PASS when the interval lies below 0 (less alike than maps of different
patients), FAIL when above, INCONCLUSIVE otherwise or with fewer than :data:`MIN_CASES` cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable

import numpy as np

from ..errors import InputError

N_BINS = 100  # Quantus' n_bins_default
MIN_SEEDS = 3
MIN_CASES = 5
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def discrete_entropy(a: np.ndarray, n_bins: int = N_BINS) -> float:
    """Shannon entropy (nats) of the histogram of ``a``'s values in ``n_bins`` equal-width bins over
    their range (Quantus ``discrete_entropy``); 0 for a constant map."""
    from scipy.stats import entropy

    histogram, _ = np.histogram(np.asarray(a, np.float64).ravel(), bins=int(n_bins))
    return float(entropy(histogram))


def emprt_score(original: np.ndarray, randomized: np.ndarray, n_bins: int = N_BINS) -> float:
    """Quantus' eMPRT score: (H(randomized) − H(original)) / H(original) (NaN when H(original) is 0)."""
    h0 = discrete_entropy(original, n_bins)
    h1 = discrete_entropy(randomized, n_bins)
    return (h1 - h0) / h0 if h0 > 0 else float("nan")


def _t_interval(values: np.ndarray) -> list[float]:
    from scipy import stats

    if values.size < 2:
        return [float("nan"), float("nan")]
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return [float(values.mean() - half), float(values.mean() + half)]


def _verdict(interval: list[float], n: int, minimum: int, unit: str, line: float, above_passes: bool):
    lo, hi = interval
    if n < minimum:
        return INCONCLUSIVE, f"{n} {unit}(s): a verdict needs at least {minimum}"
    if not np.isfinite([lo, hi]).all():
        return INCONCLUSIVE, "no interval"
    good, bad = (lo > line, hi < line) if above_passes else (hi < line, lo > line)
    where = f"95 % interval [{lo:.3f}, {hi:.3f}] vs {line:g} (n = {n} {unit}s)"
    return (PASS if good else FAIL if bad else INCONCLUSIVE), where


@dataclass(frozen=True)
class Emprt:
    """eMPRT per seed, their mean, a t 95 % interval over seeds, the verdict (PASS when above 0)."""

    scores: list[float]
    seeds: list[int]
    mean: float
    interval: list[float]
    entropy_original: float
    entropy_randomized: list[float]
    n_bins: int = N_BINS
    verdict: str = INCONCLUSIVE
    why: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, fields in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def emprt(pairs: Iterable[tuple[int, Any, Any]], n_bins: int = N_BINS) -> Emprt:
    """eMPRT from ``(seed, trained map, fully randomized map)`` triples (arrays or Volumes)."""
    seeds, scores, h1 = [], [], []
    h0 = float("nan")
    for seed, original, randomized in pairs:
        a0 = np.asarray(getattr(original, "array", original), np.float64)
        a1 = np.asarray(getattr(randomized, "array", randomized), np.float64)
        h0 = discrete_entropy(a0, n_bins)
        seeds.append(int(seed))
        scores.append(emprt_score(a0, a1, n_bins))
        h1.append(discrete_entropy(a1, n_bins))
    if not scores:
        raise InputError("eMPRT needs at least one randomized map")
    values = np.asarray(scores, np.float64)
    interval = _t_interval(values)
    verdict, why = _verdict(interval, len(values), MIN_SEEDS, "seed", 0.0, above_passes=True)
    notes = [] if h0 > 0 else ["the trained model's map is constant (entropy 0): eMPRT is undefined"]
    return Emprt([float(v) for v in values], seeds, float(np.mean(values)), interval, h0, h1, int(n_bins),
                 verdict, why, notes)


@dataclass(frozen=True)
class DataRandomization:
    """Per case: SSIM(real, shuffled-label map) and the cross-case baseline; the mean paired
    difference with a bootstrap 95 % interval over cases and the verdict (PASS when below 0)."""

    ssim: list[float]
    baseline: list[float]
    difference: float
    interval: list[float]
    n: int
    verdict: str
    why: str
    normalisation: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, fields in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def data_randomization(real_maps: list, shuffled_maps: list, regions: list | None = None,
                       normalisation: str = "relu", seed: int = 0, resamples: int = 2000) -> DataRandomization:
    """The data-randomization check from maps of the same cases under the real and the shuffled-label
    model (Volumes on the model-input grid, case i in position i; ``regions``: each case's body there).
    Different cases are compared as arrays (the same voxel index = the same place in the network's view)."""
    from .similarity import compare_maps

    n = len(real_maps)
    if n < 2 or len(shuffled_maps) != n:
        raise InputError("the data-randomization check needs the same two or more cases under both models")
    body = [None] * n if regions is None else [np.asarray(r, bool) for r in regions]
    ssim, base = [], []
    for i in range(n):
        a = np.asarray(getattr(real_maps[i], "array", real_maps[i]), np.float64)
        ssim.append(compare_maps(a, _array(shuffled_maps[i], a.shape), normalisation, body[i]).ssim)
        others = []
        for j in range(n):
            if j != i:
                region = None if body[i] is None else body[i] | body[j]
                others.append(compare_maps(a, _array(real_maps[j], a.shape), normalisation, region).ssim)
        base.append(float(np.mean(others)))
    diff = np.asarray(ssim) - np.asarray(base)
    means = diff[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(1)  # resample cases
    interval = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    verdict, why = _verdict(interval, n, MIN_CASES, "case", 0.0, above_passes=False)
    return DataRandomization([float(v) for v in ssim], base, float(diff.mean()), interval, n, verdict, why,
                             normalisation)


def _array(item, shape) -> np.ndarray:
    """A map as an array of ``shape`` (maps of different cases meet as arrays on the model-input grid)."""
    array = np.asarray(getattr(item, "array", item), np.float64)
    if array.shape != shape:
        raise InputError(f"maps of shape {array.shape} and {shape}: the cases must share the model-input grid")
    return array
