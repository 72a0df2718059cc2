"""How concentrated a map is: Quantus's sparseness (Gini index) and complexity (entropy), in 3D.

Definitions from Quantus 0.6 (``quantus/metrics/complexity/sparseness.py``, Chalasani et al. 2020;
``quantus/metrics/complexity/complexity.py``, Bhatt et al. 2020), per sample, over the domain V (the
body by default, never the air around it): with a = |map| (Quantus's ``abs=True``) divided by its
maximum (``normalise_by_max``, per sample),

* sparseness  G = Σᵢ (2i − n − 1) aᵢ / (n Σ aᵢ), aᵢ (+1e-7, as Quantus adds) sorted ascending: 0 for a
  uniform map, → 1 when one voxel holds everything;
* complexity  H = −Σ pᵢ ln(pᵢ + 1e-12), pᵢ = aᵢ / Σ a: ln n for a uniform map, 0 for one voxel.

:func:`from_ranking` computes both exactly from a :class:`~.ranking.Ranking` (its tie groups: no
second sort), which is what ``evaluate`` does on its S⁺ = ReLU(map) (for a non-negative map, as every
CAM, S⁺ = |map|). :func:`sparseness` / :func:`complexity` take an array and a domain.
"""

from __future__ import annotations

import numpy as np

from .ranking import Ranking

GINI_EPS = 1e-7  # Quantus adds it to every attribution before the Gini index
LOG_EPS = 1e-12


def _domain_values(a, domain=None, transform: str = "abs") -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.asarray(domain, dtype=bool)] if domain is not None else a.ravel()
    a = np.abs(a) if transform == "abs" else np.maximum(a, 0) if transform == "relu" else a
    top = a.max() if a.size else 0.0
    return a / top if top > 0 else a


def sparseness(a, domain=None, transform: str = "abs") -> float:
    """Gini index of the map over ``domain`` (bool, same shape; None: everywhere); ``transform``
    "abs" (Quantus's default), "relu" or "none"."""
    v = np.sort(_domain_values(a, domain, transform) + GINI_EPS)
    n = v.size
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * v) / (n * np.sum(v)))


def complexity(a, domain=None, transform: str = "abs") -> float:
    """Entropy of the map's share per voxel over ``domain`` (nats)."""
    v = _domain_values(a, domain, transform)
    total = v.sum()
    if total <= 0:
        return float("nan")
    p = v / total
    return float(-np.sum(p * np.log(p + LOG_EPS)))


def from_ranking(ranking: Ranking) -> dict:
    """{"sparseness", "complexity"} of the ranked scores, from the tie groups (exact, no sort).

    A tie group of size s at ascending positions p+1 … p+s adds Σ(2i − n − 1) = s(2p + s + 1) − s(n + 1)
    times its value to the Gini numerator.
    """
    values = ranking.values[::-1].astype(np.float64)  # ascending
    sizes = ranking.sizes[::-1].astype(np.float64)
    n = float(ranking.n)
    top = values[-1]
    if top <= 0:
        return {"sparseness": float("nan"), "complexity": float("nan")}
    v = values / top
    start = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
    weight = sizes * (2 * start + sizes + 1) - sizes * (n + 1)
    gini = np.sum(weight * (v + GINI_EPS)) / (n * np.sum(sizes * (v + GINI_EPS)))
    p = v / np.sum(sizes * v)
    entropy = -np.sum(sizes * p * np.log(p + LOG_EPS))
    return {"sparseness": float(gini), "complexity": float(entropy)}
