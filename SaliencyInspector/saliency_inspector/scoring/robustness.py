"""Quantus's robustness and randomisation metrics in 3D, and Captum's infidelity and sensitivity.

Read from Quantus 0.6 (``quantus/metrics/robustness/max_sensitivity.py``, ``avg_sensitivity.py``,
``local_lipschitz_estimate.py``; ``quantus/metrics/randomisation/random_logit.py``) and Captum 0.9
(``captum/metrics/_core/infidelity.py``, ``sensitivity.py``). One sample on the model-input grid:
``x`` (C, *spatial), its map ``a`` (*spatial) and ``explain``: a function from one input (C, *spatial)
to its map (*spatial) for the same class, i.e. the method re-run on the perturbed input. Noise is
added inside ``domain`` (the body; None = every voxel, Quantus's setting). ``rng`` is a
``np.random.RandomState``: its draws are Quantus's global ``np.random`` draws for the same seed.
"""

from __future__ import annotations

import numpy as np


def _noise_in(shape, domain, draw):
    noise = draw(shape)
    if domain is not None:
        noise = noise * np.broadcast_to(np.asarray(domain, dtype=bool), shape)
    return noise


def _norm_max(a):
    a = np.asarray(a, dtype=np.float64)
    top = np.abs(a).max()
    return a / top if top > 0 else a


def sensitivity(explain, x, a, domain=None, samples: int = 10, radius: float = 0.2, rng=None) -> dict:
    """Max- and avg-sensitivity (Yeh et al. 2019): over ``samples`` inputs x' = x + U(−r, r) per voxel,
    ‖a − a'‖_F / ‖a‖_F (Quantus's defaults: difference, Frobenius norms, raw maps). Lower is better."""
    rng = rng if rng is not None else np.random.RandomState(0)
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64).ravel()
    values = []
    for _ in range(samples):
        xp = x + _noise_in(x.shape, domain, lambda s: rng.uniform(low=-radius, high=radius, size=s))
        ap = np.asarray(explain(xp.astype(np.float32)), dtype=np.float64).ravel()
        values.append(np.linalg.norm(a - ap) / np.linalg.norm(a))
    return {"max": float(np.max(values)), "avg": float(np.mean(values)), "values": np.asarray(values)}


def local_lipschitz(explain, x, a, domain=None, samples: int = 10, std: float = 0.1, rng=None) -> float:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max over x' = x + N(0, std²) of
    ‖â − â'‖₂ / (‖x − x'‖₂ + 1e-10), maps normalised by their maximum |value| (Quantus's default).
    Lower is better."""
    rng = rng if rng is not None else np.random.RandomState(0)
    x = np.asarray(x, dtype=np.float64)
    a = _norm_max(a).ravel()
    best = -np.inf
    for _ in range(samples):
        xp = x + _noise_in(x.shape, domain, lambda s: rng.normal(loc=0.0, scale=std, size=s))
        ap = _norm_max(explain(xp.astype(np.float32))).ravel()
        best = max(best, np.linalg.norm(a - ap) / (np.linalg.norm((x - xp).ravel()) + 1e-10))
    return float(best)


def ssim(a, b) -> float:
    """Structural similarity of two maps (any dimension), data range from both, as Quantus's ``ssim``
    (``quantus/functions/similarity_func.py``: skimage's ``structural_similarity``, default window)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([a.ravel(), b.ravel()])
    return float(structural_similarity(a, b, data_range=float(abs(both.max() - both.min()))))


def random_logit(explain_class, x, a, target: int, n_classes: int, seed: int = 42, spatial: bool = False) -> dict:
    """Random logit (Sixt et al. 2020): SSIM between the map for ``target`` and the map for a random
    other class (drawn as Quantus does: ``np.random.seed(seed)``, ``randint(0, n_classes − 1)`` among
    the others), maps normalised by their maximum |value|. Lower is better (the map depends on the
    class). ``explain_class(x, c)`` -> map; ``spatial``: SSIM on the grid instead of Quantus's vectors."""
    rng = np.random.RandomState(seed)
    others = [c for c in range(n_classes) if c != target]
    other = others[int(rng.randint(0, n_classes - 1))]
    b = explain_class(np.asarray(x, dtype=np.float32), other)
    # Quantus compares the maps flattened to vectors (a 1-D SSIM, window 7); ``spatial`` keeps the grid
    a, b = _norm_max(a), _norm_max(b)
    value = ssim(a, b) if spatial else ssim(a.ravel(), b.ravel())
    return {"ssim": value, "other_class": int(other)}


def captum_infidelity(forward, x, a, target: int, domain=None, samples: int = 10, std: float = 0.1,
                      seed: int = 0, batch: int = 1) -> float:
    """Captum's ``infidelity`` (Yeh et al. 2019): E[(Iᵀ·a − (f(x) − f(x − I)))²] over Gaussian
    perturbations I (std ``std``, inside ``domain``). ``forward``: torch module/function of a batch.
    Lower is better. ``batch`` = ``max_examples_per_batch`` (1 for a static-batch model)."""
    import torch
    from captum.metrics import infidelity

    gen = torch.Generator().manual_seed(seed)
    mask = None if domain is None else torch.as_tensor(np.asarray(domain, dtype=bool))

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=gen) * std
        if mask is not None:
            noise = noise * mask
        return noise, inputs - noise

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))[None]
    at = torch.as_tensor(np.asarray(a, dtype=np.float32))[None, None].expand_as(xt)
    with torch.no_grad():
        value = infidelity(forward, perturb, xt, at, target=int(target), n_perturb_samples=samples,
                           max_examples_per_batch=batch)
    return float(value[0])


def captum_sensitivity_max(explain, x, radius: float = 0.02, samples: int = 10, seed: int = 0) -> float:
    """Captum's ``sensitivity_max``: max over x' = x + U(−r, r) of ‖a(x) − a(x')‖_F / ‖a(x)‖_F (Captum's
    default perturbation and norm). ``explain(x)`` -> map, run one perturbed input at a time."""
    import torch
    from captum.metrics import sensitivity_max

    torch.manual_seed(seed)

    def explanation(inputs, **_kwargs):
        if isinstance(inputs, tuple):  # Captum may pass its inputs as a 1-tuple
            inputs = inputs[0]
        with torch.enable_grad():  # Captum calls this under no_grad; a gradient method needs it
            return torch.stack([torch.as_tensor(np.asarray(explain(xi.detach().numpy()), dtype=np.float32))[None]
                                for xi in inputs])

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))[None]
    return float(sensitivity_max(explanation, xt, perturb_radius=radius, n_perturb_samples=samples,
                                 max_examples_per_batch=1)[0])
