"""Inputs shared by ``test_quantus_crosscheck.py`` and the scores Quantus gives on them.

Quantus is not a dependency (it pulls opencv, pandas, matplotlib; its torch extra pulls
torchvision), so the expected values live in the test. They were made by running this file in a
throwaway virtual environment::

    python -m venv /tmp/q/venv && /tmp/q/venv/bin/pip install torch==2.13.0 quantus==0.6.0
    PYTHONPATH=SaliencyInspector /tmp/q/venv/bin/python SaliencyInspector/Testing/Python/quantus_reference.py

which prints the dict pasted into the test as ``QUANTUS_0_6``. (Quantus 0.6 calls ``np.trapz``, gone
in numpy 2.4: it is aliased to ``np.trapezoid``, the same rule.) The test also recomputes them live
when ``quantus`` can be imported.
"""

from __future__ import annotations

import numpy as np

SIZE = 16  # a 1-channel 16 x 16 image: Quantus's patch metrics are 2-D only
CLASSES = 3


def model():
    """A small fixed CNN (weights from a seeded numpy generator, the same in every torch)."""
    import torch

    rng = np.random.default_rng(7)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.AvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(4 * (SIZE // 4) ** 2, CLASSES))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.as_tensor(rng.normal(scale=0.5, size=tuple(p.shape)), dtype=torch.float32))
    return net.eval()


def inputs():
    """(x (1, 1, S, S), target (1,), signed map a (1, 1, S, S), mask s (1, 1, S, S), superpixels (S, S))."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 1, SIZE, SIZE)).astype(np.float32)
    a = rng.normal(size=(1, 1, SIZE, SIZE)).astype(np.float32)
    s = np.zeros((1, 1, SIZE, SIZE), np.float32)
    s[..., 3:9, 5:12] = 1
    segments = (np.arange(SIZE)[:, None] // 4) * 4 + np.arange(SIZE)[None, :] // 4  # 16 squares 0..15
    return x, np.array([1]), a, s, segments


def gradient_explain(model, inputs, targets, **_kwargs):
    """Plain input gradient of the target's logit (numpy in, numpy out), for the robustness metrics."""
    import torch

    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_(True)
    out = model(x)
    out[torch.arange(x.shape[0]), torch.as_tensor(np.asarray(targets)).long()].sum().backward()
    return x.grad.detach().numpy()


def compute_with_quantus() -> dict:
    import quantus
    from quantus.helpers import utils as qutils

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    qutils.np.trapz = np.trapezoid
    net = model()
    x, y, a, s, segments = inputs()
    pos = np.abs(a)
    common = dict(model=net, x_batch=x, y_batch=y, device="cpu")
    out = {}
    quiet = dict(disable_warnings=True, return_aggregate=False)
    out["sparseness"] = quantus.Sparseness(**quiet)(a_batch=pos.copy(), **common)[0]
    out["complexity"] = quantus.Complexity(**quiet)(a_batch=pos.copy(), **common)[0]
    out["top_k_intersection"] = quantus.TopKIntersection(k=20, **quiet)(a_batch=pos.copy(), s_batch=s, **common)[0]
    out["relevance_rank_accuracy"] = quantus.RelevanceRankAccuracy(**quiet)(a_batch=pos.copy(), s_batch=s, **common)[0]
    out["relevance_mass_accuracy"] = quantus.RelevanceMassAccuracy(**quiet)(a_batch=pos.copy(), s_batch=s, **common)[0]
    np.random.seed(3)
    out["faithfulness_correlation"] = quantus.FaithfulnessCorrelation(nr_runs=30, subset_size=40, **quiet)(
        a_batch=a.copy(), **common)[0]
    out["region_perturbation_curve"] = [float(v) for v in quantus.RegionPerturbation(
        patch_size=4, regions_evaluation=10, **quiet)(a_batch=a.copy(), **common)[0]]
    out["selectivity_curve"] = [float(v) for v in quantus.Selectivity(patch_size=4, **quiet)(
        a_batch=a.copy(), **common)[0]]
    import quantus.helpers.utils as hu
    original = hu.get_superpixel_segments
    hu.get_superpixel_segments = lambda img, segmentation_method: segments
    try:
        out["irof"] = quantus.IROF(**quiet)(a_batch=a.copy(), **common)[0]
    finally:
        hu.get_superpixel_segments = original
    out["monotonicity_quantus"] = bool(quantus.Monotonicity(**quiet)(a_batch=a.copy(), **common)[0])
    grad = gradient_explain(net, x, y)
    np.random.seed(5)
    out["max_sensitivity"] = quantus.MaxSensitivity(nr_samples=5, **quiet)(
        a_batch=grad.copy(), explain_func=gradient_explain, **common)[0]
    np.random.seed(5)
    out["avg_sensitivity"] = quantus.AvgSensitivity(nr_samples=5, **quiet)(
        a_batch=grad.copy(), explain_func=gradient_explain, **common)[0]
    np.random.seed(6)
    out["local_lipschitz"] = quantus.LocalLipschitzEstimate(nr_samples=5, **quiet)(
        a_batch=grad.copy(), explain_func=gradient_explain, **common)[0]
    out["random_logit"] = quantus.RandomLogit(num_classes=CLASSES, seed=42, **quiet)(
        a_batch=grad.copy(), explain_func=gradient_explain, **common)[0]
    return {k: (float(v) if not isinstance(v, (list, bool)) else v) for k, v in out.items()}


if __name__ == "__main__":
    import pprint

    pprint.pprint(compute_with_quantus(), width=110)
