"""XRAI in 3D: SLIC supervoxels of the windowed CT ranked greedily by their mean IG attribution.

:func:`supervoxels` and :func:`xrai_rank` are also used by ``compare`` (region Dice of any map).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .captum_estimators import ig
from .settings import Attribution, EstimatorSettings


def supervoxels(image, spacing_zyx, body, scales=(16, 32, 64, 128), dilation: int = 1) -> list:
    """Candidate regions (flat voxel indices inside ``body``) from SLIC supervoxels at several scales.

    ``skimage.segmentation.slic(image, n_segments=k, channel_axis=None, spacing=voxel mm,
    mask=body)`` per scale k (read at skimage 0.26 ``segmentation/slic_superpixels.py``: labels are
    0 outside the mask), each supervoxel dilated by a ball of ``dilation`` voxels (within the body).
    """
    from scipy import ndimage
    from skimage.segmentation import slic

    image = np.asarray(image, dtype=np.float64)
    body = np.asarray(body, dtype=bool)
    span = float(image[body].max() - image[body].min()) if body.any() else 1.0
    ball = ndimage.generate_binary_structure(3, 1)
    regions = []
    for k in scales:
        labels = slic(image, n_segments=int(k), compactness=0.1 * (span or 1.0), channel_axis=None,
                      spacing=np.asarray(spacing_zyx, dtype=float), mask=body, start_label=1)
        for sl, label in zip(ndimage.find_objects(labels), range(1, labels.max() + 1)):
            if sl is None:
                continue
            grown = tuple(slice(max(0, s.start - dilation), min(n, s.stop + dilation)) for s, n in zip(sl, labels.shape))
            crop = labels[grown] == label
            if dilation:
                crop = ndimage.binary_dilation(crop, ball, iterations=dilation) & body[grown]
            zz, yy, xx = np.nonzero(crop)
            idx = np.ravel_multi_index((zz + grown[0].start, yy + grown[1].start, xx + grown[2].start), labels.shape)
            regions.append(idx)
    return regions


def xrai_rank(attribution, regions, body, min_voxels: int | None = None):
    """XRAI's greedy ranking (PAIR-code/saliency ``core/xrai.py``, 'full'), in 3D.

    Repeatedly add the region with the highest mean attribution over its not-yet-covered voxels
    (skipping regions that add fewer than ``min_voxels``, default 0.1 % of the body); each voxel is
    scored by the region it entered with; body voxels no region covered form a last region.
    Returns (map, order): ``map`` the per-voxel gain (outside the body: min(0, lowest gain)),
    ``order`` the region rank 1, 2, … of every body voxel (0 outside): the body covered exactly once.
    """
    attr = np.asarray(attribution, dtype=np.float64).ravel()
    inside = np.asarray(body, dtype=bool).ravel()
    n_body = int(inside.sum())
    min_voxels = max(1, round(0.001 * n_body)) if min_voxels is None else int(min_voxels)
    covered = ~inside  # outside the body counts as covered: regions only add body voxels
    out = np.zeros(attr.shape, np.float64)
    order = np.zeros(attr.shape, np.int32)
    remaining = {i: r for i, r in enumerate(regions)}
    gain = {}
    rank = 0
    while remaining:
        best, best_gain = None, -np.inf
        for key in list(remaining):
            fresh = remaining[key][~covered[remaining[key]]]
            if fresh.size < min_voxels:
                del remaining[key]
                gain.pop(key, None)
                continue
            if key not in gain:
                gain[key] = float(attr[fresh].mean())
            if gain[key] > best_gain:
                best, best_gain = key, gain[key]
        if best is None:
            break
        added = remaining.pop(best)
        added = added[~covered[added]]
        rank += 1
        out[added], order[added] = best_gain, rank
        covered[added] = True
        touched = np.zeros(attr.shape, bool)
        touched[added] = True
        for key in remaining:  # only regions overlapping the new voxels change their gain
            if key in gain and touched[remaining[key]].any():
                del gain[key]
    rest = np.flatnonzero(~covered)
    if rest.size:
        rank += 1
        out[rest], order[rest] = attr[rest].mean(), rank
    if inside.any():
        out[~inside] = min(0.0, float(out[inside].min()))
    shape = np.shape(attribution)
    return out.reshape(shape), order.reshape(shape)


def input_body(x, settings: EstimatorSettings) -> np.ndarray:
    """The body on the input grid: ``settings.body`` when given, else input above the air value
    (holes filled per slice, so lungs count), else everything."""
    from scipy import ndimage

    spatial = tuple(x.shape[2:])
    if settings.body is not None:
        body = np.asarray(settings.body, dtype=bool)
        if body.shape != spatial:
            raise InputError(f"body mask shape {body.shape} differs from the input grid {spatial}")
        return body
    image = x[0, 0].detach().cpu().numpy()
    air = settings.air_value if settings.air_value is not None else float(image.min())
    body = image > air + 1e-6
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    return body if body.any() else np.ones(spatial, bool)


def xrai3d(model, x, target, settings):
    """XRAI in 3D: SLIC supervoxels of the windowed CT inside the body, ranked greedily by the mean
    IG attribution of their not-yet-covered voxels; each voxel scored by the region it entered with."""
    import torch

    base = ig(model, x, target, settings)
    attr = base.map.sum(1)[0] if torch.is_tensor(base.map) and base.map.ndim == x.ndim else base.map
    attr = attr.detach().cpu().numpy()
    body = input_body(x, settings)
    spacing = settings.spacing_zyx or (1.0,) * (x.ndim - 2)
    regions = supervoxels(x[0, 0].detach().cpu().numpy(), spacing, body, settings.xrai_scales, settings.xrai_dilation)
    scores, order = xrai_rank(attr, regions, body)
    return Attribution(torch.as_tensor(scores, dtype=torch.float32, device=x.device),
                       info={**base.info, "regions": int(order.max()), "candidates": len(regions)})
