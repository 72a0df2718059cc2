"""The importance transform: how a raw saliency map is turned into the scores voxels are ranked by.

Every method in the registry declares one (``Method.importance``, ``explainers/registry.py``):

* ``relu`` — ReLU(map), for CAMs: their negative part means "against the class" (the Grad-CAM
  paper's ReLU; Captum ``LayerGradCam(relu_attributions=True)``);
* ``abs`` — |map|, for gradient-type maps (gradient, SmoothGrad, Guided Grad-CAM): the size of the
  local effect, either sign (Captum ``Saliency.attribute(abs=True)``, its default;
  captum/attr/_core/saliency.py);
* ``signed`` — the map itself, where the sign means for/against the class (Integrated Gradients,
  input × gradient, occlusion, XRAI): the most positive voxels rank first, the most negative last.

One function, :func:`importance_transform`, is used wherever voxels are ranked: ``evaluate``,
``compare``, fidelity, the cohort, the Slicer module. Measured on the lung-lesion phantom's negative
case: the gradient map's ROC AUC is 0.75 with ReLU and 0.97 with |map| — the transform is part of
the number, so every table says which one it used (:func:`describe`).

Masses (mass in mask) need non-negative values: for ``signed`` maps they use the positive part, so
"mass" is the evidence *for* the class (:func:`mass_scores`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

IMPORTANCES = ("relu", "abs", "signed")  # the registry's Method.importance values (kept in step by a test)
LABELS = {"relu": "ReLU(map)", "abs": "|map|", "signed": "signed map"}


def check_importance(importance: str) -> str:
    """``importance`` itself when it is one of :data:`IMPORTANCES`; InputError (one line) otherwise."""
    if importance not in IMPORTANCES:
        raise InputError(f"importance {importance!r} is not one of {', '.join(IMPORTANCES)}")
    return importance


def importance_transform(saliency, importance: str):
    """The ranking scores of a raw map: ReLU(map), |map| or the map itself (``importance``).

    ``saliency``: a numpy array or a torch tensor (the result has the same type; boolean maps are
    returned unchanged). Never modifies its input."""
    check_importance(importance)
    if hasattr(saliency, "detach"):  # a torch tensor
        if importance == "relu":
            return saliency.clamp(min=0)
        return saliency.abs() if importance == "abs" else saliency.clone()
    a = np.asarray(saliency)
    if a.dtype == bool:
        return a.copy()
    if importance == "relu":
        return np.maximum(a, 0)
    return np.abs(a) if importance == "abs" else a.copy()


def mass_scores(scores: np.ndarray, importance: str) -> np.ndarray:
    """The non-negative values masses are summed from: the transformed ``scores`` themselves, or their
    positive part for a signed map (in place where that is possible: ``scores`` is a private copy)."""
    if importance == "signed" and scores.dtype != bool:
        return np.maximum(scores, 0, out=scores) if scores.flags.writeable else np.maximum(scores, 0)
    return scores


def describe(importance: str) -> str:
    """The transform in words for a table: e.g. ``"|map| (abs)"``."""
    return f"{LABELS[check_importance(importance)]} ({importance})"
