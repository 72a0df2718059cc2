"""Fidelity of a map on one case: does the model need what the map shows?

One pipeline for every caller: :func:`workflows.compare.compare_estimators` (each estimator's map)
and the Slicer module's ``Logic.fidelity`` (the shown map node) both call :func:`map_fidelity`.
The CT is prepared for the model once (:func:`model_input`: the input tensor, the estimator
settings completed for it, the body on the input grid, how many perturbed inputs fit one forward);
a map on any grid is brought onto the model-input grid through physical space; the deletion (MIF)
and LIF curves come from :func:`scoring.fidelity.fidelity`, voxels ranked by the method's declared
importance. The chance line (≥ 20 seeded random maps) depends on the CT, the class and the
fidelity settings but not on the map, so it is made once per ``ModelInput`` and reused by every map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np


if TYPE_CHECKING:
    from ..explainers.attribution import EstimatorSettings
    from ..io.volume import Volume
    from ..models.loaders import Classifier
    from ..models.preprocess import Prepared
    from ..scoring.fidelity import FidelityResult

MAX_PER_FORWARD = 64  # perturbed inputs per forward at most (fewer when the memory budget says so)


@dataclass(frozen=True)
class ModelInput:
    """A CT as the model sees it, with what fidelity needs: the prepared input, the estimator
    settings completed for it (voxel size, the input value of air, ``body`` on the input grid) and
    how many perturbed inputs go through the network per forward."""

    prepared: Prepared
    settings: EstimatorSettings
    per_forward: int
    chances: dict = field(default_factory=dict, compare=False, repr=False)  # settings -> scoring.fidelity.Chance

    @property
    def body(self) -> np.ndarray:
        """The body on the input grid (tensor order)."""
        return np.asarray(self.settings.body)

    def mask_on_input(self, mask: np.ndarray) -> np.ndarray:
        """A bool mask on the CT's grid brought onto the input grid (nearest), in tensor order."""
        return _mask_on_input(mask, self.prepared)

    def map_on_input(self, saliency: Volume) -> np.ndarray:
        """A map on any grid (the CT's, a feature grid) on the input grid (linear), in tensor order."""
        from ..scoring.fidelity import map_on_input_grid

        return map_on_input_grid(saliency, self.prepared.grid, self.prepared.axes)


def model_input(classifier: Classifier, ct: Volume, settings: EstimatorSettings | Mapping[str, Any] | None = None,
                body: np.ndarray | None = None) -> ModelInput:
    """Prepare ``ct`` for ``classifier`` once for every map scored on it. ``settings``: estimator
    settings (None: the defaults); ``body``: bool mask on the CT's grid (default: the CT's body,
    :func:`scoring.masks.body_mask`)."""
    from ..explainers.memory import batch_size
    from ..explainers.settings import for_input, settings_from
    from ..models.preprocess import preprocess
    from ..scoring.masks import body_mask

    prepared = preprocess(ct, classifier.card.input, device=classifier.device)
    completed = for_input(settings_from(settings), prepared, classifier.card)
    completed = replace(completed, body=_mask_on_input(body_mask(ct) if body is None else body, prepared))
    per_forward = min(MAX_PER_FORWARD, batch_size(classifier.module, prepared.tensor, completed, backward=False,
                                                  what="perturbed input"))
    return ModelInput(prepared, completed, per_forward)


def map_fidelity(classifier: Classifier, ct: Volume, saliency: Volume | np.ndarray, class_name: str, *,
                 steps: int = 20, replacement: str = "blur", blur_mm: float = 10.0, seed: int = 0,
                 settings: EstimatorSettings | Mapping[str, Any] | None = None,
                 inputs: ModelInput | None = None, importance: str = "signed",
                 random_maps: int | None = None) -> FidelityResult:
    """Deletion (MIF) and LIF curves of ``saliency`` for ``class_name`` on the model-input grid, with
    the chance line of ``random_maps`` seeded random maps (:func:`scoring.fidelity.fidelity`).

    ``saliency``: a map Volume on any grid, or an array already on the input grid (tensor order).
    ``importance``: how voxels are ranked — give the method's ``Method.importance`` (``relu``,
    ``abs``, ``signed``). ``steps``: p = 0 … 100 % in that many steps; ``replacement``: air, mean
    (over the body), blur (``blur_mm``) or impute; ``seed``: tie-break and random maps.
    ``inputs``: :func:`model_input` of this CT when the caller scores several maps (``settings``
    are then ignored; the chance line is made once and kept there).
    """
    from ..explainers.randomization import class_index
    from ..scoring.fidelity import RANDOM_MAPS, chance_line, fidelity

    # InputError for a class the model does not have; a card-less model's classes are its output
    # indices ("0", "1", …)
    target = class_index(classifier, class_name)
    inputs = inputs or model_input(classifier, ct, settings)
    on_input = saliency if isinstance(saliency, np.ndarray) else inputs.map_on_input(saliency)
    s = inputs.settings
    options = dict(steps=steps, replacement=replacement, air_value=s.air_value, body=inputs.body, blur_mm=blur_mm,
                   spacing_zyx=s.spacing_zyx, seed=seed, batch_size=inputs.per_forward)
    n_random = RANDOM_MAPS if random_maps is None else int(random_maps)
    key = (target, int(steps), replacement, float(blur_mm), int(seed), n_random)
    made = key not in inputs.chances
    if made:
        inputs.chances[key] = chance_line(classifier, inputs.prepared.tensor, target, random_maps=n_random, **options)
    result = fidelity(classifier, inputs.prepared.tensor, on_input, target, importance=importance,
                      chance=inputs.chances[key], **options)
    if made:  # the forwards of the chance line are counted once, by the map that made it
        result = replace(result, forwards=result.forwards + inputs.chances[key].forwards)
    return result


def _mask_on_input(mask: np.ndarray, prepared: Prepared) -> np.ndarray:
    from ..io.volume import Volume, resample_to

    ct, grid = prepared.ct, prepared.grid
    vol = Volume(np.asarray(mask, np.uint8), ct.spacing, ct.origin, ct.direction)
    geometry = Volume(np.zeros(grid.shape, np.uint8), grid.spacing, grid.origin, grid.direction)
    on = resample_to(vol, geometry, "nearest").array.astype(bool)
    return on if prepared.axes == "zyx" else on.transpose(2, 1, 0)
