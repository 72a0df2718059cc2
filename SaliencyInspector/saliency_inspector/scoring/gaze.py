"""Agreement of a saliency map with where readers looked (eye-tracking fixations in 3D).

Input: :class:`.fixations.Fixations` (read from CSV or Slicer markups by :mod:`.fixations`) or a
reader heatmap volume.

Fixation density: one Gaussian per fixation (σ in mm, default 10), duration-weighted, kept inside
the body, normalised to sum 1 (Bigolin Lanfredi et al.; ``/work/shared/notes/trust.md``).

Metrics (the map as ReLU(map) or |map|; all over the body):
- NSS, CC, KL (KL(gt ‖ map)), SIM: exactly pysaliency's ``metrics.NSS/CC/image_based_kl_divergence/
  SIM`` on the body's voxels (its n-D array code; the tests compare with pysaliency itself).
- AUC: map values at the fixations against every body voxel (uniform negatives), ties half.
- sAUC: the fixations against points drawn ∝ a centre-bias map (seeded sampler) — the mean
  fixation density of other cases or readers aligned by the body box when given, else a Gaussian
  centred on the body box (σ a quarter of its extent; said in the result's notes).
- sNCC = CC(gt, map) − CC(centre bias, map).
- Inter-observer baseline (two or more readers): each reader against the mean density of the others
  (leave-one-reader-out), averaged, with a bootstrap 95 % interval over readers.

Metrics are computed on a "gaze grid": the map's grid, coarsened by whole factors so that no voxel
is finer than σ/4 (a 10 mm Gaussian is smooth at 2.5 mm; a 512×512×400 CT becomes ~6M voxels),
the map resampled onto it in physical space. NSS and AUC read the map at the fixations on that grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, resample_to
from .fixations import Fixations, drop_outside, fixation_voxels

SIGMA_MM = 10.0
N_NEGATIVES = 1000
N_BOOTSTRAP = 1000


# ---- grid and densities -------------------------------------------------------------------------
def gaze_grid(reference: Volume, sigma_mm: float = SIGMA_MM) -> Volume:
    """``reference``'s field of view with voxels coarsened by whole factors to at least σ/4 mm."""
    factors = np.maximum(1, np.floor((sigma_mm / 4.0) / np.asarray(reference.spacing))).astype(int)  # x, y, z
    if np.all(factors == 1):
        return reference
    size_xyz = np.maximum(1, np.asarray(reference.size_xyz) // factors)
    spacing = np.asarray(reference.spacing) * np.asarray(reference.size_xyz) / size_xyz
    origin = np.asarray(reference.origin) + reference.direction @ ((spacing - np.asarray(reference.spacing)) / 2)
    shape = tuple(int(n) for n in size_xyz[::-1])
    return Volume(np.broadcast_to(np.zeros((), np.uint8), shape), tuple(spacing), tuple(origin), reference.direction)


def density(fixations: Fixations, grid: Volume, body: np.ndarray | None = None,
            sigma_mm: float = SIGMA_MM) -> np.ndarray:
    """Fixation density on ``grid``: a Gaussian of σ mm per fixation weighted by its duration, inside
    ``body`` (bool array on the grid), normalised to sum 1 (float64). Fixations outside the grid are
    ignored (:func:`drop_outside` counts them first)."""
    from scipy import ndimage

    zyx, inside = fixation_voxels(fixations, grid)
    counts = np.zeros(grid.shape, np.float64)
    np.add.at(counts, tuple(zyx.T), fixations.duration[inside])
    sigma_vox = sigma_mm / np.asarray(grid.spacing)[::-1]  # (z, y, x) voxels; separable along the grid axes
    d = ndimage.gaussian_filter(counts, sigma_vox, mode="constant", truncate=3.0)
    if body is not None:
        d *= body
    total = d.sum()
    if total <= 0:
        raise InputError("the fixation density is zero inside the body; are the fixations on this CT?")
    return d / total


def body_box(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) voxel corners (z, y, x) of the body's bounding box (hi exclusive)."""
    idx = np.nonzero(body)
    if not idx[0].size:
        raise InputError("the body mask is empty")
    return np.array([i.min() for i in idx]), np.array([i.max() + 1 for i in idx])


def align_by_body_box(array: np.ndarray, source_body: np.ndarray, target_body: np.ndarray,
                      order: int = 1) -> np.ndarray:
    """``array`` (on the source case's grid) moved onto the target's grid by mapping the source body's
    bounding box onto the target body's (scale + shift per axis, index space), zero outside."""
    from scipy import ndimage

    slo, shi = body_box(np.asarray(source_body, bool))
    tlo, thi = body_box(np.asarray(target_body, bool))
    scale = (shi - slo) / np.maximum(thi - tlo, 1)
    offset = slo + (scale - 1) / 2 - tlo * scale  # voxel centres: t -> s = slo + (t - tlo + 0.5) * scale - 0.5
    return ndimage.affine_transform(np.asarray(array, np.float64), scale, offset=offset,
                                    output_shape=np.asarray(target_body).shape, order=order, mode="constant")


def centre_bias_model(body: np.ndarray) -> np.ndarray:
    """A Gaussian centred on the body's bounding box, σ a quarter of its extent per axis, inside the
    body, sum 1: the centre bias when no other case or reader is given."""
    lo, hi = body_box(body)
    centre, sigma = (lo + hi - 1) / 2.0, np.maximum((hi - lo) / 4.0, 1.0)
    axes = [np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2) for n, c, s in zip(body.shape, centre, sigma)]
    d = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :] * body
    return d / d.sum()


# ---- metrics (pysaliency's definitions on the body's voxels) -----------------------------------
def nss(saliency: np.ndarray, fixation_values: np.ndarray) -> float:
    """Mean over fixations of (S(f) − mean S) / std S (population std), as pysaliency.metrics.NSS."""
    s = np.asarray(saliency, np.float64)
    std = s.std()
    values = np.asarray(fixation_values, np.float64) - s.mean()
    return float((values / std if std else values).mean())


def cc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (pysaliency.metrics.CC: 0 when only the first is constant)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    sa, sb = a.std(), b.std()
    if sa == 0:
        return 0.0 if sb else float("nan")
    if sb == 0:
        return float("nan")
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def _as_density(s: np.ndarray, minimum_value: float = 0.0) -> np.ndarray:
    """pysaliency.metrics.convert_saliency_map_to_density."""
    s = np.asarray(s, np.float64)
    if s.min() < 0:
        s = s - s.min()
    s = s + minimum_value
    total = s.sum()
    return s / total if total else np.full(s.shape, 1.0 / s.size)


def kl(saliency: np.ndarray, gt: np.ndarray) -> float:
    """KL(gt ‖ map) of the two maps as densities, pysaliency.metrics.image_based_kl_divergence's
    defaults (minimum value 1e-20 added, no regularisation); 0 is a perfect match."""
    p_map, p_gt = _as_density(saliency, 1e-20), _as_density(gt, 1e-20)
    return float((p_gt * (np.log(p_gt) - np.log(p_map))).sum())


def sim(saliency: np.ndarray, gt: np.ndarray) -> float:
    """SIM: Σ min of the two maps as densities (pysaliency.metrics.SIM); 1 is identical."""
    return float(np.minimum(_as_density(saliency), _as_density(gt)).sum())


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC of positive vs negative scores (P(pos > neg) + ½ P(tie)), by sorting the negatives."""
    negatives = np.sort(np.asarray(negatives, np.float64))
    positives = np.asarray(positives, np.float64)
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    return float(((below + not_above) / 2.0).mean() / negatives.size)


# ---- the comparison -----------------------------------------------------------------------------
GAZE_KEYS = ("nss", "cc", "kl", "sim", "auc", "sauc", "sncc")
GAZE_INFO = {
    "nss": "normalised scanpath saliency: mean z-score of the map at the fixations (0 = chance; higher better)",
    "cc": "Pearson correlation of the map with the fixation density (higher better)",
    "kl": "KL divergence of the map from the fixation density, both as densities (0 = identical; lower better)",
    "sim": "similarity: sum of the minimum of both densities (1 = identical; higher better)",
    "auc": "ROC AUC of the map at fixations against all body voxels (0.5 = chance)",
    "sauc": "shuffled AUC: fixations against points drawn from the centre bias (0.5 = no better than the centre bias)",
    "sncc": "CC(fixation density, map) - CC(centre bias, map) (0 = no better than the centre bias)",
}


@dataclass(frozen=True)
class GazeResult:
    """Metrics of one map against the fixations (key of :data:`GAZE_KEYS` -> value), their bootstrap
    95 % intervals ([low, high]), the inter-observer baseline (when there are several readers) and notes."""

    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    inter_observer: dict[str, float] | None
    inter_observer_intervals: dict[str, list[float]] | None
    n_fixations: int
    readers: list[str]
    sigma_mm: float
    centre_bias: str
    grid: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the trust card's gaze details), fields in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _prepare_map(saliency: Volume, grid: Volume, normalisation: str) -> np.ndarray:
    s = resample_to(saliency.with_array(np.asarray(saliency.array, np.float32)), grid, "linear")
    a = np.asarray(s.array, np.float64)
    return np.abs(a) if normalisation == "abs" else np.maximum(a, 0.0)


def _scores(s, gt, centre, fix_idx, negatives_idx):
    """All metrics of map ``s`` (values on the region, 1D) against gt density / fixations."""
    s_fix = s[fix_idx]
    return {"nss": nss(s, s_fix), "cc": cc(s, gt), "kl": kl(s, gt), "sim": sim(s, gt),
            "auc": auc(s_fix, s), "sauc": auc(s_fix, s[negatives_idx]),
            "sncc": cc(gt, s) - cc(centre, s)}


def compare_with_gaze(saliency: Volume, fixations: Fixations | Volume, body: np.ndarray | None = None,
                      sigma_mm: float = SIGMA_MM, normalisation: str = "relu",
                      centre_bias: np.ndarray | None = None, seed: int = 0,
                      n_bootstrap: int = N_BOOTSTRAP) -> GazeResult:
    """NSS, CC, KL, SIM, AUC, sAUC, sNCC of ``saliency`` (raw map Volume) against readers' attention.

    ``fixations``: :class:`Fixations` (LPS mm) or a reader heatmap Volume (its positives for NSS/AUC
    are then N_NEGATIVES points drawn ∝ the heatmap); ``body``: bool array on the map's grid (the
    region; default all); ``centre_bias``: an array on the map's grid (e.g. the mean density of other
    cases aligned with :func:`align_by_body_box`) or None (:func:`centre_bias_model`); ``seed``
    fixes the samplers (negatives, heatmap positives, bootstrap).
    """
    rng = np.random.default_rng(seed)
    notes = []
    body_full = np.ones(saliency.shape, bool) if body is None else np.asarray(body, bool)
    grid = gaze_grid(saliency, sigma_mm)
    region = resample_to(saliency.with_array(body_full), grid, "nearest").array if grid is not saliency else body_full
    if not region.any():
        raise InputError("the body region is empty on the gaze grid")
    flat = np.flatnonzero(region.ravel())
    pos_of = np.full(region.size, -1, np.int64)
    pos_of[flat] = np.arange(flat.size)
    s = _prepare_map(saliency, grid, normalisation).ravel()[flat]

    if isinstance(fixations, Volume):
        heat = resample_to(fixations.with_array(np.asarray(fixations.array, np.float32)), grid, "linear").array
        gt_full = np.clip(np.asarray(heat, np.float64), 0, None) * region
        if gt_full.sum() <= 0:
            raise InputError("the reader heatmap is zero inside the body")
        gt_full /= gt_full.sum()
        gt = gt_full.ravel()[flat]
        fix_idx = rng.choice(flat.size, size=N_NEGATIVES, p=gt / gt.sum())
        readers, per_reader = ["heatmap"], {}
        notes.append(f"reader heatmap: {N_NEGATIVES} positives drawn in proportion to it (seed {seed})")
    else:
        fixations = drop_outside(fixations, saliency, body_full)
        notes += fixations.notes
        zyx, _ = fixation_voxels(fixations, grid)
        fix_pos = pos_of[np.ravel_multi_index(tuple(zyx.T), grid.shape)]
        keep = fix_pos >= 0  # on the coarser grid a fixation near the body's edge may fall just outside
        fix_idx = fix_pos[keep]
        gt = density(fixations.subset(keep) if not keep.all() else fixations, grid, region, sigma_mm).ravel()[flat]
        readers = fixations.readers
        reader_of = fixations.reader[keep]
        per_reader = {r: fix_idx[reader_of == r] for r in readers}
        per_reader_fx = {r: fixations.subset(np.flatnonzero(keep)[reader_of == r]) for r in readers}
    if centre_bias is None:
        centre = centre_bias_model(region).ravel()[flat]
        centre_name = "Gaussian centred on the body's bounding box (σ = ¼ of its extent): no other cases given"
    else:
        cb = np.asarray(centre_bias, np.float64)
        if cb.shape != saliency.shape:
            raise InputError(f"centre bias shape {cb.shape} differs from the map's {saliency.shape}")
        cb = resample_to(saliency.with_array(cb.astype(np.float32)), grid, "linear").array if grid is not saliency else cb
        centre = np.clip(np.asarray(cb, np.float64).ravel()[flat], 0, None)
        if centre.sum() <= 0:
            raise InputError("the centre-bias map is zero inside the body")
        centre_name = "given centre-bias map (mean fixation density of other cases/readers)"
    centre = centre / centre.sum()
    negatives = rng.choice(flat.size, size=N_NEGATIVES, p=centre)

    metrics = _scores(s, gt, centre, fix_idx, negatives)
    # bootstrap over fixations for the fixation-based metrics (NSS, AUC, sAUC): each is a mean of
    # per-fixation terms (z-score; fraction of negatives below, ties half), so a resample is a mean
    # of resampled terms: exact, and no re-sorting per resample
    std = s.std()
    terms = {"nss": (s[fix_idx] - s.mean()) / (std if std else 1.0),
             "auc": _rank_fractions(s[fix_idx], np.sort(s)),
             "sauc": _rank_fractions(s[fix_idx], np.sort(s[negatives]))}
    resamples = rng.integers(0, fix_idx.size, size=(n_bootstrap, fix_idx.size))
    intervals = {k: [float(np.percentile(t[resamples].mean(1), q)) for q in (2.5, 97.5)] for k, t in terms.items()}

    inter, inter_ci = None, None
    if len(readers) >= 2:
        rows = []
        for r in readers:
            others = [o for o in readers if o != r]
            other_fx = Fixations.concat([per_reader_fx[o] for o in others])
            s_other = density(other_fx, grid, region, sigma_mm).ravel()[flat]
            gt_r = density(per_reader_fx[r], grid, region, sigma_mm).ravel()[flat]
            rows.append(_scores(s_other, gt_r, centre, per_reader[r], negatives))
        inter = {k: float(np.mean([row[k] for row in rows])) for k in GAZE_KEYS}
        idx = rng.integers(0, len(rows), size=(n_bootstrap, len(rows)))
        inter_ci = {k: [float(np.percentile(np.asarray([row[k] for row in rows])[idx].mean(1), q)) for q in (2.5, 97.5)]
                    for k in GAZE_KEYS}
        if len(readers) < 5:
            notes.append(f"inter-observer interval from only {len(readers)} readers: a rough range")
    return GazeResult(metrics=metrics, intervals=intervals, inter_observer=inter, inter_observer_intervals=inter_ci,
                      n_fixations=int(fix_idx.size), readers=list(readers), sigma_mm=float(sigma_mm),
                      centre_bias=centre_name, grid=grid.describe_grid(), notes=notes)


def _rank_fractions(positives, sorted_negatives) -> np.ndarray:
    """Per positive: the fraction of negatives below it, ties counted half (their mean is the AUC)."""
    below = np.searchsorted(sorted_negatives, positives, side="left")
    not_above = np.searchsorted(sorted_negatives, positives, side="right")
    return (below + not_above) / (2.0 * sorted_negatives.size)


