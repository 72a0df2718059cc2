"""How alike are two saliency maps? 3D SSIM, Spearman, Pearson and top-k overlap on one grid.

The trust checks (randomization, repeatability, reproducibility) all compare two maps. As in Arun
et al. (Radiology: AI 2021; ``/work/shared/notes/trust.md``) the maps are normalised first, by the
method's declared importance (``Method.importance``, :mod:`.importance`): |map| (``abs``, gradient
maps) or ReLU(map) (``relu``, CAMs, whose negative part means "against the class"), clipped at the
99th percentile, then min–max scaled to [0, 1]; a ``signed`` map (IG, input × gradient, occlusion,
where the sign means for/against) keeps its sign: the raw map is clipped to its 1st–99th percentile
and min–max scaled to [0, 1] (both over the region), so the most negative voxel is 0, the most
positive 1 and zero lands in between — SSIM then sees evidence against the class as structure, not
as background. SSIM runs with ``data_range=1``.

- **SSIM**: ``skimage.metrics.structural_similarity`` on the 3D arrays (7-voxel uniform window,
  skimage's defaults, ``data_range=1`` passed explicitly: older skimage assumed 2 for floats),
  averaged over the **region** (``full=True``'s SSIM image, skimage's border crop kept). The SSIM of
  the whole box (the reference code's number) is kept beside it as ``ssim_box``.
- **Spearman** rank correlation and **Pearson** CC over the region.
- **Top-k overlap**: Dice of the k % highest voxels of each map in the region.

The region (the rule every trust verdict uses): the body when the caller gives it, else the union of
the two maps' support (voxels where either normalised map is above zero). Two maps that are both
zero outside the body share that empty background; over the whole box it alone makes unrelated
maps look alike (SSIM 0.59 with Spearman 0.003 for two unrelated maps in the same body).

Two Volumes on different grids are compared on the first one's grid (the second resampled
linearly in physical space, never by resizing arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, overlap_fraction, resample_to

NORMALISATIONS = ("abs", "relu", "signed")  # = scoring.importance.IMPORTANCES
SSIM_WINDOW = 7
CLIP_PERCENTILE = 99.0
TOP_K_PERCENT = 5.0


def normalise(saliency, mode: str = "abs", region=None, clip_percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """The map as values in [0, 1] (float64) for SSIM, by ``mode`` (the method's importance):

    - ``abs`` / ``relu``: |map| or ReLU(map), clipped at its ``clip_percentile`` and min–max scaled;
    - ``signed``: the raw map clipped to its [100 − ``clip_percentile``, ``clip_percentile``]
      percentiles and min–max scaled (most negative → 0, most positive → 1; both signs kept).

    Percentiles and minimum are taken over ``region`` when given. A constant map becomes all zeros."""
    if mode not in NORMALISATIONS:
        raise InputError(f"normalisation {mode!r}: choose one of {', '.join(NORMALISATIONS)}")
    a = np.asarray(saliency.array if isinstance(saliency, Volume) else saliency, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("the saliency map has NaN or infinite voxels; fix or re-export the map")
    if mode != "signed":
        a = np.abs(a) if mode == "abs" else np.maximum(a, 0.0)
    values = a[np.asarray(region, bool)] if region is not None else a
    if values.size == 0:
        raise InputError("the comparison region is empty")
    top = np.percentile(values, clip_percentile)
    if mode == "signed":  # clip both tails: one extreme voxel of either sign must not flatten the rest
        lo = min(np.percentile(values, 100.0 - clip_percentile), top)
        a = np.clip(a, lo, top)
    else:
        a = np.minimum(a, top)
        lo = values.min()
    span = top - lo
    if span <= 0:
        return np.zeros_like(a)
    return np.clip((a - lo) / span, 0.0, 1.0)


def ssim(a, b, win_size: int = SSIM_WINDOW, region=None) -> float:
    """Mean SSIM of two arrays already in [0, 1] (``data_range=1``), any dimension (3D here).

    skimage's uniform 7-voxel window; axes shorter than the window shrink it to the largest odd
    size that fits (a flat feature map of 4 voxels along z still compares). ``region``: average the
    SSIM image over these voxels only (inside skimage's border crop; the whole region when the crop
    leaves none of it); None: skimage's own mean (the whole box)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise InputError(f"maps of shapes {a.shape} and {b.shape} differ; put them on one grid first")
    win = min([win_size] + [n if n % 2 else n - 1 for n in a.shape])
    if win < 3:
        raise InputError(f"maps of shape {a.shape} are too small for SSIM (needs at least 3 voxels per axis)")
    if region is None:
        return float(structural_similarity(a, b, win_size=win, data_range=1.0))
    region = np.asarray(region, bool)
    _, image = structural_similarity(a, b, win_size=win, data_range=1.0, full=True)
    pad = (win - 1) // 2  # skimage crops this border before averaging (metrics/_structural_similarity.py)
    inner = np.zeros_like(region)
    inner[tuple(slice(pad, n - pad) for n in region.shape)] = True
    use = region & inner if (region & inner).any() else region
    return float(image[use].mean(dtype=np.float64))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank), as ``scipy.stats.rankdata``; written here
    because importing scipy.stats costs ~4 s, more than a whole randomization run of the demo model."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def pearson(a, b) -> float:
    """Pearson correlation of two 1D arrays; 0 when either is constant (no linear relation to measure)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties): Pearson of the ranks, as scipy's."""
    return pearson(_ranks(np.asarray(a).ravel()), _ranks(np.asarray(b).ravel()))


def top_k_overlap(a, b, percent: float = TOP_K_PERCENT) -> float:
    """Dice of the ``percent`` % highest values of ``a`` and of ``b`` (1D arrays of one region).

    Ties at the cut are broken by a stable sort on position (the same rule for both maps)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    k = max(1, int(round(a.size * percent / 100.0)))
    top_a = np.zeros(a.size, bool)
    top_b = np.zeros(b.size, bool)
    top_a[np.argsort(-a, kind="stable")[:k]] = True
    top_b[np.argsort(-b, kind="stable")[:k]] = True
    return float(2.0 * np.count_nonzero(top_a & top_b) / (2 * k))


@dataclass
class Similarity:
    """All four similarities of two maps plus what they were computed over (``region``: "body",
    "support" or "box"; ``ssim_box``: SSIM over the whole box, for reference)."""

    ssim: float
    spearman: float
    pearson: float
    top_k_overlap: float
    top_k_percent: float
    normalisation: str
    region_voxels: int
    note: str = ""
    ssim_box: float = float("nan")
    region: str = "box"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


SIMILARITY_KEYS = ("ssim", "spearman", "pearson", "top_k_overlap")


def compare_maps(a, b, normalisation: str = "abs", region=None, top_k_percent: float = TOP_K_PERCENT,
                 win_size: int = SSIM_WINDOW) -> Similarity:
    """SSIM, Spearman, Pearson and top-k overlap of two maps after :func:`normalise`.

    ``a``, ``b``: arrays of one shape, or Volumes (``b`` is resampled onto ``a``'s grid in physical
    space when the grids differ: use this for two maps of ONE case; maps of different cases are
    compared as arrays, see :func:`scoring.trust_measures.baseline_similarity`). ``region``: a boolean
    array on ``a``'s grid (the body) over which the percentile, SSIM, Spearman, Pearson and top-k are
    taken; None: the union of the two maps' support; "box": the whole grid (the old rule).
    ``normalisation``: the method's importance, "abs" (gradient maps), "relu" (CAMs) or "signed"
    (IG, input × gradient, occlusion; see :func:`normalise`).
    """
    note = ""
    if isinstance(a, Volume) and isinstance(b, Volume) and not a.same_grid(b):
        if overlap_fraction(b, a) == 0.0:
            raise InputError(f"the two maps do not overlap ({a.describe_grid()} vs {b.describe_grid()})")
        b = resample_to(b.with_array(np.asarray(b.array, np.float32)), a, "linear", default_value=0.0)
        note = "second map resampled onto the first map's grid (linear, physical space)"
    a_arr = np.asarray(a.array if isinstance(a, Volume) else a)
    b_arr = np.asarray(b.array if isinstance(b, Volume) else b)
    if a_arr.shape != b_arr.shape:
        raise InputError(f"maps of shapes {a_arr.shape} and {b_arr.shape} differ; give Volumes (resampled in "
                         "physical space) or arrays on one grid")
    kind = "body"
    if isinstance(region, str):
        if region != "box":
            raise InputError(f"region {region!r}: give a boolean array, None (the maps' support) or 'box'")
        region, kind = None, "box"
    elif region is None:
        kind = "support"
    else:
        region = np.asarray(region, bool)
        if region.shape != a_arr.shape:
            raise InputError(f"region shape {region.shape} differs from the maps' {a_arr.shape}")
        if not region.any():
            raise InputError("the comparison region is empty")
    na = normalise(a_arr, normalisation, region)
    nb = normalise(b_arr, normalisation, region)
    if kind == "support":  # where either map has evidence (a signed map's zero is not at 0 after normalise)
        region = ((a_arr != 0) | (b_arr != 0)) if normalisation == "signed" else (na > 0) | (nb > 0)
        if not region.any():  # both maps empty: nothing but background, compare the box
            region, kind = None, "box"
    va, vb = (na[region], nb[region]) if region is not None else (na.ravel(), nb.ravel())
    box = ssim(na, nb, win_size)
    inside = box if region is None else ssim(na, nb, win_size, region)
    return Similarity(ssim=inside, spearman=spearman(va, vb), pearson=pearson(va, vb),
                      top_k_overlap=top_k_overlap(va, vb, top_k_percent), top_k_percent=float(top_k_percent),
                      normalisation=normalisation, region_voxels=int(va.size), note=note, ssim_box=box,
                      region=kind)
