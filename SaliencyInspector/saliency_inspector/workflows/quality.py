"""The model-calling metrics of :data:`scoring.quality.QUALITY_METRICS` for one map of one case.

``compare --quantus`` calls :func:`model_metrics` per method: the map on the model-input grid, the
body as the domain, the model batched under the memory cap (``ModelInput.per_forward``; batches of
1 for a static-batch model). Settings are scaled for 3-D CT (stated in each key's docstring of
``scoring.faithfulness``/``robustness``; defaults below): they cost forwards, hence opt-in.
"""

from __future__ import annotations

import numpy as np

# forwards per map: ~20 + 20 + supervoxels + cubes + 21 + 2 + robustness (5 maps re-run, 10 forwards)
CORRELATION_RUNS = 20
SUBSET_SHARE = 0.005     # of the body's voxels per random subset (Quantus: 224 of 224² ≈ 0.45 %)
PATCH = 8                # cube side in voxels (Quantus's 2-D patch_size 8)
REGIONS = 20             # cubes removed in region perturbation
SELECTIVITY_PATCH = 16   # coarser cubes: selectivity removes every cube, one forward each
MONOTONICITY_STEPS = 20
SUPERVOXELS = 64         # SLIC supervoxels in the body for IROF
ROBUSTNESS_SAMPLES = 5


def _body_supervoxels(image, body, spacing_zyx, count: int) -> np.ndarray:
    """SLIC supervoxels inside the body (labels 0 … S−1, −1 outside), as explainers.xrai.supervoxels
    makes them (skimage ``slic`` with the voxel spacing and the body as mask), one scale, no dilation."""
    from skimage.segmentation import slic

    image = np.asarray(image, dtype=np.float64)
    span = float(image[body].max() - image[body].min()) if body.any() else 1.0
    labels = slic(image, n_segments=int(count), compactness=0.1 * (span or 1.0), channel_axis=None,
                  spacing=np.asarray(spacing_zyx, dtype=float), mask=body, start_label=1)
    return labels.astype(np.int64) - 1


def model_metrics(classifier, inputs, on_input: np.ndarray, target: int, method: str, seed: int = 0,
                  note=None) -> dict:
    """{key: value} for every ``needs_model`` metric of :data:`QUALITY_METRICS` (NaN where the method
    cannot be re-run on a perturbed input: robustness needs a method with an input-grid function)."""
    from ..explainers.attribution import attribute
    from ..explainers.registry import get_method
    from ..scoring import faithfulness, robustness
    from ..scoring.model_calls import target_scores

    x = inputs.prepared.tensor[0].detach().cpu().numpy()
    body = np.asarray(inputs.body, dtype=bool)
    a = np.asarray(on_input, dtype=np.float64)
    per = inputs.per_forward
    logit = target_scores(classifier, target, per, note)
    prob = target_scores(classifier, target, per, note, probability=True)
    subset = max(1, int(SUBSET_SHARE * body.sum()))
    out = {
        "faithfulness_correlation": faithfulness.faithfulness_correlation(
            logit, x, a, body, subset_size=subset, runs=CORRELATION_RUNS, rng=np.random.RandomState(seed), batch=per),
        "monotonicity": faithfulness.monotonicity(prob, x, a, body, steps=MONOTONICITY_STEPS, batch=per)["fraction"],
        "region_perturbation_aopc": faithfulness.region_perturbation(prob, x, a, body, patch=PATCH, regions=REGIONS,
                                                                     batch=per)["aopc"],
        "selectivity_auc": faithfulness.selectivity(prob, x, a, body, patch=SELECTIVITY_PATCH, batch=per)["auc"],
        "irof": faithfulness.irof(prob, x, a, _body_supervoxels(x[0], body, inputs.settings.spacing_zyx, SUPERVOXELS),
                                  body, batch=per)["aoc"],
        "completeness_gap": faithfulness.completeness(logit, x, a)["relative"],
    }
    entry = get_method(method)
    robust = dict.fromkeys(["max_sensitivity", "avg_sensitivity", "local_lipschitz", "random_logit",
                            "captum_infidelity", "captum_sensitivity_max"], float("nan"))
    if not entry.is_cam:
        import torch

        def explain_class(xi, cls=target):
            t = torch.as_tensor(np.asarray(xi, dtype=np.float32))[None].to(classifier.device)
            return attribute(method, classifier.module, t, int(cls), inputs.settings).map.cpu().numpy()

        rng = np.random.RandomState(seed)
        sens = robustness.sensitivity(explain_class, x, a, body, samples=ROBUSTNESS_SAMPLES, rng=rng)
        robust.update(max_sensitivity=sens["max"], avg_sensitivity=sens["avg"],
                      local_lipschitz=robustness.local_lipschitz(explain_class, x, a, body,
                                                                 samples=ROBUSTNESS_SAMPLES, rng=rng),
                      captum_infidelity=robustness.captum_infidelity(
                          classifier.module, x, a, target, body, seed=seed, batch=1),
                      captum_sensitivity_max=robustness.captum_sensitivity_max(
                          explain_class, x, samples=ROBUSTNESS_SAMPLES, seed=seed))
        n_classes = len(classifier.card.classes or [])
        if n_classes > 1:
            robust["random_logit"] = robustness.random_logit(explain_class, x, a, target, n_classes, seed=seed,
                                                             spatial=True)["ssim"]
    out.update(robust)
    return out
