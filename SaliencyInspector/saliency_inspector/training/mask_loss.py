"""Draelos & Carin's mask loss: HiResCAM mass outside the region where a label may be seen.

Reference: rachellea/explainable-ct-ai, ``src/evals/losses.py``
(``calculate_classification_and_dzattn_loss``): the attention (the HiResCAM map at the last
feature layer, before ReLU) at every forbidden cell — outside the organ of a present label, and
everywhere for an absent one — goes through ``BCEWithLogits(·, 0)`` averaged over those cells, and
the total is ``BCE(logits, labels) + λ · that`` with λ = 1/3.

``BCEWithLogits(m, 0) = softplus(m)`` is log 2, not 0, at m = 0; we subtract that constant so a map
that is zero outside the allowed region costs exactly 0 (the gradient, hence training, is the
reference's unchanged). A map that is negative outside the region lowers the loss below 0, as in
the reference: the loss asks for no *pro-class* evidence outside, and allows counter-evidence.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

LAMBDA = 1.0 / 3.0  # the reference's default weight (its sweeps: 0.1, 0.3, 0.5)


def forbidden_cells(allowed, labels):
    """Bool (B, K, *spatial): cells where class k's map must not be positive — outside ``allowed``
    (B, K, *spatial) for a present label, everywhere for an absent one (labels (B, K) in {0, 1})."""
    present = labels.bool().view(*labels.shape, *[1] * (allowed.ndim - 2))
    return ~(allowed.bool() & present)


def mask_loss(maps, allowed, labels):
    """Mean of softplus(map) − log 2 over the forbidden cells (see the module docstring).

    ``maps``: raw (signed) HiResCAM (B, K, *spatial) at feature resolution, differentiable;
    ``allowed``: bool/0-1 (B, K, *spatial) on the same grid; ``labels``: (B, K) 0/1.
    0 when nothing is forbidden.
    """
    import torch.nn.functional as F

    if maps.shape != allowed.shape:
        raise InputError(f"mask loss: the maps {tuple(maps.shape)} and the allowed regions "
                         f"{tuple(allowed.shape)} are not on the same feature grid")
    outside = maps[forbidden_cells(allowed, labels)]
    if outside.numel() == 0:
        return maps.sum() * 0.0
    return F.softplus(outside).mean() - math.log(2.0)


def check_lambda(value) -> float:
    """λ as a float; InputError when negative or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--mask-loss {value!r}: λ must be a number ≥ 0 (0 turns the mask loss off)") from None
    if not value >= 0 or not math.isfinite(value):
        raise InputError(f"--mask-loss {value}: λ must be ≥ 0 (0 turns the mask loss off; the paper uses 1/3)")
    return value


def dilate_mm(mask: np.ndarray, spacing_xyz, radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` (physical distance, anisotropic spacing respected) of ``mask``."""
    from scipy import ndimage

    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    distance = ndimage.distance_transform_edt(~mask, sampling=tuple(float(s) for s in spacing_xyz[::-1]))
    return distance <= radius_mm


def to_feature_grid(masks, feature_shape):
    """Input-grid masks (B, K, *input) → (B, K, *feature_shape) bool: a cell is allowed when any of
    its input voxels is (the network's strides tile the input evenly, as preprocess assumes)."""
    import torch.nn.functional as F

    pooled = F.adaptive_max_pool3d(masks.float(), tuple(feature_shape)) if masks.ndim == 5 else \
        F.adaptive_max_pool2d(masks.float(), tuple(feature_shape))
    return pooled > 0.5
