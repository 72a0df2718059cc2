"""Agreement of a saliency map with where readers looked (eye-tracking fixations in 3D).

Input: :class:`.fixations.Fixations` (read from CSV or Slicer markups by :mod:`.fixations`) or a
reader heatmap volume. Definitions follow Bigolin Lanfredi et al.'s reference code
(ricbl/etsaliencymaps, ``src/compare_heatmaps.py`` and ``src/get_center_bias.py``;
``/work/shared/notes/trust.md``):

- A reader's heatmap: one Gaussian per fixation (σ in mm, default 10), duration-weighted, inside the
  body, normalised to sum 1 — per reader, so a reader with many fixations does not outweigh the others.
- Ground truth per image: the mean of the *other* readers' heatmaps (leave one reader out); the map
  and the held-out reader are both scored against it, so the inter-observer baseline is per image and
  paired with the map's score. With one reader the ground truth is that reader (no baseline).
- Centre bias: the mean of all images' heatmaps aligned by the body box (:func:`align_by_body_box`;
  the cohort's, see :mod:`..cohort.gaze`). A single CT has no other images: a Gaussian on the body
  box stands in, and the result says so.
- sAUC: the map at the ground-truth readers' fixations (positives) against the map at fixations of
  *other images* moved onto this one by the body box (negatives: the definition of shuffled AUC).
  Without other images the negatives are every body voxel weighted by the centre bias (the
  reference code's "smooth" sAUC, computed exactly instead of from 1,000 draws).
- sNCC = CC(ground truth, map) − CC(centre bias, map).
- NSS, CC, KL (KL(gt ‖ map)), SIM: exactly pysaliency's ``metrics.NSS/CC/image_based_kl_divergence/
  SIM`` on the body's voxels (the tests compare with pysaliency itself); AUC: the map at the
  fixations against every body voxel, ties half.
- Intervals: bootstrap over readers (the leave-one-reader-out rows), never over fixations (the
  fixations of one reader are not independent); over images in a cohort. A verdict needs at least
  :data:`MIN_READERS` readers and :data:`MIN_FIXATIONS` fixations, else it is INCONCLUSIVE.

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
N_NEGATIVES = 1000  # positives drawn from a reader heatmap volume (no fixations given)
N_BOOTSTRAP = 1000
MIN_READERS = 3  # fewer: no interval over readers worth a verdict (INCONCLUSIVE)
MIN_FIXATIONS = 10
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


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


def auc(positives: np.ndarray, negatives: np.ndarray, negative_weights: np.ndarray | None = None) -> float:
    """ROC AUC of positive vs negative scores (P(pos > neg) + ½ P(tie)), by sorting the negatives.
    ``negative_weights``: each negative's weight (e.g. the centre-bias density over every voxel:
    the exact expectation of the reference code's 1,000 draws); default equal."""
    negatives = np.asarray(negatives, np.float64).ravel()
    weights = np.ones(negatives.size) if negative_weights is None else np.asarray(negative_weights, np.float64).ravel()
    order = np.argsort(negatives, kind="stable")
    negatives, cumulative = negatives[order], np.r_[0.0, np.cumsum(weights[order])]
    positives = np.asarray(positives, np.float64)
    below = cumulative[np.searchsorted(negatives, positives, side="left")]
    not_above = cumulative[np.searchsorted(negatives, positives, side="right")]
    return float(((below + not_above) / 2.0).mean() / cumulative[-1])


# ---- one image: the map and each held-out reader against the other readers ---------------------
GAZE_KEYS = ("nss", "cc", "kl", "sim", "auc", "sauc", "sncc")
GAZE_INFO = {
    "nss": "normalised scanpath saliency: mean z-score of the map at the fixations (0 = chance; higher better)",
    "cc": "Pearson correlation of the map with the readers' heatmap (higher better)",
    "kl": "KL divergence of the map from the readers' heatmap, both as densities (0 = identical; lower better)",
    "sim": "similarity: sum of the minimum of both densities (1 = identical; higher better)",
    "auc": "ROC AUC of the map at fixations against all body voxels (0.5 = chance)",
    "sauc": "shuffled AUC: the map at this image's fixations against the map at other images' fixations "
            "(0.5 = no better than the centre bias)",
    "sncc": "CC(readers' heatmap, map) - CC(centre bias, map) (0 = no better than the centre bias)",
}


@dataclass(frozen=True)
class ImageScores:
    """One image's gaze metrics: the mean over held-out readers of the map's scores against the other
    readers' mean heatmap, the inter-observer scores (the held-out reader's heatmap in the map's place)
    and their paired difference (map − inter-observer), each with a bootstrap 95 % interval over
    readers (empty with fewer than two readers)."""

    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    inter_observer: dict[str, float] | None
    inter_observer_intervals: dict[str, list[float]] | None
    difference: dict[str, float] | None
    difference_intervals: dict[str, list[float]] | None
    n_readers: int
    n_fixations: int


def _scores(s, gt, centre, positives, negatives):
    """All metrics of map ``s`` (values on the region, 1D) against ``gt`` (density) and the positive
    fixations (indices); sAUC negatives: indices of other images' fixations, or None (every voxel
    weighted by the centre bias)."""
    s_fix = s[positives]
    sauc = auc(s_fix, s, centre) if negatives is None else auc(s_fix, s[negatives])
    return {"nss": nss(s, s_fix), "cc": cc(s, gt), "kl": kl(s, gt), "sim": sim(s, gt),
            "auc": auc(s_fix, s), "sauc": sauc, "sncc": cc(gt, s) - cc(centre, s)}


def _mean_and_interval(rows: list[dict], rng, n_bootstrap: int) -> tuple[dict, dict]:
    """Mean of each key over rows and its percentile-bootstrap 95 % interval (resampling rows)."""
    values = {k: np.asarray([r[k] for r in rows], np.float64) for k in GAZE_KEYS}
    means = {k: float(np.mean(v)) for k, v in values.items()}
    if len(rows) < 2:
        return means, {}
    idx = rng.integers(0, len(rows), size=(n_bootstrap, len(rows)))
    return means, {k: [float(np.percentile(v[idx].mean(1), q)) for q in (2.5, 97.5)] for k, v in values.items()}


def score_image(s: np.ndarray, densities: list[np.ndarray], fixation_idx: list[np.ndarray], centre: np.ndarray,
                negatives: np.ndarray | None = None, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> ImageScores:
    """Gaze metrics of one image, as etsaliencymaps' ``compare_heatmaps.py`` computes them.

    All arrays are values on the image's region (1D): ``s`` the map (≥ 0), ``densities`` one heatmap
    per reader (each sums to 1), ``fixation_idx`` each reader's fixations (indices into the region),
    ``centre`` the centre bias (sums to 1), ``negatives`` other images' fixations (indices) or None
    (every voxel weighted by the centre bias). With R ≥ 2 readers: for each reader r, ground truth =
    mean of the other readers' heatmaps, positives = their fixations; the map and reader r's heatmap
    are scored against it (paired). With one reader: that reader is the ground truth, no baseline.
    """
    rng = np.random.default_rng(seed)
    n_fix = int(sum(len(f) for f in fixation_idx))
    if len(densities) == 1:
        row = _scores(s, densities[0], centre, fixation_idx[0], negatives)
        return ImageScores(row, {}, None, None, None, None, 1, n_fix)
    model_rows, inter_rows = [], []
    for r in range(len(densities)):
        others = [o for o in range(len(densities)) if o != r]
        gt = np.mean([densities[o] for o in others], axis=0)
        positives = np.concatenate([fixation_idx[o] for o in others])
        model_rows.append(_scores(s, gt, centre, positives, negatives))
        inter_rows.append(_scores(densities[r], gt, centre, positives, negatives))
    diff_rows = [{k: m[k] - i[k] for k in GAZE_KEYS} for m, i in zip(model_rows, inter_rows)]
    metrics, intervals = _mean_and_interval(model_rows, rng, n_bootstrap)
    inter, inter_ci = _mean_and_interval(inter_rows, rng, n_bootstrap)
    diff, diff_ci = _mean_and_interval(diff_rows, rng, n_bootstrap)
    return ImageScores(metrics, intervals, inter, inter_ci, diff, diff_ci, len(densities), n_fix)


def judge(value: float, interval: list[float] | None, n: int, minimum: int, unit: str, line: float = 0.5,
          n_fixations: int | None = None) -> tuple[str, str]:
    """(verdict, why) of a score that must beat ``line``: PASS when its 95 % interval lies above it,
    FAIL when below, INCONCLUSIVE when it straddles the line or ``n`` (readers or images) is below
    ``minimum`` (or there are fewer than :data:`MIN_FIXATIONS` fixations)."""
    if n < minimum:
        return INCONCLUSIVE, (f"{n} {unit}{'s' if n != 1 else ''}: a verdict needs at least {minimum} "
                              f"(the interval resamples {unit}s, never fixations)")
    if n_fixations is not None and n_fixations < MIN_FIXATIONS:
        return INCONCLUSIVE, f"{n_fixations} fixations: a verdict needs at least {MIN_FIXATIONS}"
    lo, hi = interval if interval else (float("nan"), float("nan"))
    if lo > line:
        return PASS, f"95 % interval [{lo:.3f}, {hi:.3f}] above {line:g} (n = {n} {unit}s)"
    if hi < line:
        return FAIL, f"95 % interval [{lo:.3f}, {hi:.3f}] below {line:g} (n = {n} {unit}s)"
    return INCONCLUSIVE, f"95 % interval [{lo:.3f}, {hi:.3f}] straddles {line:g} (n = {n} {unit}s)"


# ---- one map against one CT's readers ----------------------------------------------------------
@dataclass(frozen=True)
class GazeResult:
    """Metrics of one map against the readers (key of :data:`GAZE_KEYS` -> value), their bootstrap
    95 % intervals over readers ([low, high]; none with one reader), the inter-observer baseline and
    the paired difference map − inter-observer (two or more readers), the sAUC verdict and notes."""

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
    difference: dict[str, float] | None = None
    difference_intervals: dict[str, list[float]] | None = None
    negatives: str = ""
    verdict: str = INCONCLUSIVE
    verdict_why: str = ""

    @property
    def n_readers(self) -> int:
        """How many readers (the unit the intervals resample)."""
        return len(self.readers)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the trust card's gaze details), fields in order."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "n_readers": self.n_readers}


def _prepare_map(saliency: Volume, grid: Volume, normalisation: str) -> np.ndarray:
    s = resample_to(saliency.with_array(np.asarray(saliency.array, np.float32)), grid, "linear")
    a = np.asarray(s.array, np.float64)
    # the gaze metrics compare distributions (KL, SIM need non-negative values): a signed map enters
    # by its positive part, the evidence FOR the class, as masses do (scoring/importance.py)
    return np.abs(a) if normalisation == "abs" else np.maximum(a, 0.0)


def compare_with_gaze(saliency: Volume, fixations: Fixations | Volume, body: np.ndarray | None = None,
                      sigma_mm: float = SIGMA_MM, normalisation: str = "relu",
                      centre_bias: np.ndarray | None = None, seed: int = 0,
                      n_bootstrap: int = N_BOOTSTRAP, negatives: Fixations | None = None) -> GazeResult:
    """NSS, CC, KL, SIM, AUC, sAUC, sNCC of ``saliency`` (raw map Volume) against readers' attention.

    ``fixations``: :class:`Fixations` (LPS mm; its ``reader`` column tells the readers apart) or a
    reader heatmap Volume (one reader; its positives for NSS/AUC are N_NEGATIVES points drawn ∝ the
    heatmap); ``body``: bool array on the map's grid (the region; default all); ``centre_bias``: an
    array on the map's grid (the mean heatmap of all images aligned by :func:`align_by_body_box`) or
    None (:func:`centre_bias_model`, said in the result); ``negatives``: other images' fixations
    already placed on this CT (the sAUC negatives; None: every voxel weighted by the centre bias);
    ``seed`` fixes the samplers and the bootstrap over readers. See the module docstring.
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

    def on_region(fx: Fixations) -> tuple[np.ndarray, np.ndarray]:
        """(region indices of the fixations inside the region, which of ``fx`` those are)."""
        zyx, inside = fixation_voxels(fx, grid)
        pos = np.full(len(fx), -1, np.int64)
        pos[inside] = pos_of[np.ravel_multi_index(tuple(zyx.T), grid.shape)]
        keep = pos >= 0  # on the coarser grid a fixation near the body's edge may fall just outside
        return pos[keep], keep

    if isinstance(fixations, Volume):
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(fixations.array, np.float64))))
        if bad:  # NaN would reach rng.choice's probabilities as a ValueError traceback
            raise InputError(f"the reader heatmap has {bad} NaN or infinite voxels; give a heatmap of finite values")
        heat = resample_to(fixations.with_array(np.asarray(fixations.array, np.float32)), grid, "linear").array
        gt = np.clip(np.asarray(heat, np.float64), 0, None).ravel()[flat]
        if gt.sum() <= 0:
            raise InputError("the reader heatmap is zero inside the body")
        densities = [gt / gt.sum()]
        fix_idx = [rng.choice(flat.size, size=N_NEGATIVES, p=densities[0])]
        readers = ["heatmap"]
        notes.append(f"reader heatmap: {N_NEGATIVES} positives drawn in proportion to it (seed {seed}); "
                     "one reader: no inter-observer baseline")
    else:
        fixations = drop_outside(fixations, saliency, body_full)
        notes += fixations.notes
        readers, densities, fix_idx = [], [], []
        for r in fixations.readers:
            own = fixations.subset(fixations.reader == r)
            idx, keep = on_region(own)
            if not idx.size:
                notes.append(f"reader {r}: no fixation inside the body on the gaze grid; left out")
                continue
            readers.append(r)
            densities.append(density(own.subset(keep), grid, region, sigma_mm).ravel()[flat])
            fix_idx.append(idx)
        if not readers:
            raise InputError("no fixation lies inside the body on the gaze grid")
    if centre_bias is None:
        centre = centre_bias_model(region).ravel()[flat]
        centre_name = ("a Gaussian centred on the body's bounding box (σ = ¼ of its extent): a single CT has no "
                       "other images to average; give a cohort (batch) for the data's centre bias")
    else:
        cb = np.asarray(centre_bias, np.float64)
        if cb.shape != saliency.shape:
            raise InputError(f"centre bias shape {cb.shape} differs from the map's {saliency.shape}")
        cb = resample_to(saliency.with_array(cb.astype(np.float32)), grid, "linear").array if grid is not saliency else cb
        centre = np.clip(np.asarray(cb, np.float64).ravel()[flat], 0, None)
        if centre.sum() <= 0:
            raise InputError("the centre-bias map is zero inside the body")
        centre_name = "given centre-bias map (the mean heatmap of all images aligned by the body box)"
    centre = centre / centre.sum()
    if negatives is not None:
        negative_idx = on_region(negatives)[0]
        if not negative_idx.size:
            raise InputError("none of the other images' fixations falls inside this body; align them first")
        negatives_name = f"{negative_idx.size} fixations of other images"
    else:
        negative_idx = None
        negatives_name = "every body voxel weighted by the centre bias (no other images' fixations given)"

    scores = score_image(s, densities, fix_idx, centre, negative_idx, seed, n_bootstrap)
    verdict, why = judge(scores.metrics["sauc"], scores.intervals.get("sauc"), scores.n_readers, MIN_READERS,
                         "reader", 0.5, scores.n_fixations)
    if scores.n_readers < 5 and scores.n_readers >= 2:
        notes.append(f"intervals over only {scores.n_readers} readers: a rough range")
    return GazeResult(metrics=scores.metrics, intervals=scores.intervals, inter_observer=scores.inter_observer,
                      inter_observer_intervals=scores.inter_observer_intervals, n_fixations=scores.n_fixations,
                      readers=list(readers), sigma_mm=float(sigma_mm), centre_bias=centre_name,
                      grid=grid.describe_grid(), notes=notes, difference=scores.difference,
                      difference_intervals=scores.difference_intervals, negatives=negatives_name,
                      verdict=verdict, verdict_why=why)
