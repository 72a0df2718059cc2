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


def _group_chunks(ranking: Ranking, chunk: int = 1 << 22):
    """(values float64, sizes float64, ascending start positions float64) of the tie groups, a chunk
    at a time: a voxel-wise map has a group per voxel, so no full-length float64 array is made."""
    n = ranking.n
    for a in range(0, ranking.n_groups, chunk):
        ends = ranking.ends[a:a + chunk].astype(np.int64)
        before = np.empty_like(ends)
        before[0] = int(ranking.ends[a - 1]) if a else 0
        before[1:] = ends[:-1]
        yield (ranking.values[a:a + chunk].astype(np.float64), (ends - before).astype(np.float64),
               (n - ends).astype(np.float64))


def total_mass(ranking: Ranking) -> float:
    """Σ of the ranked scores (Σ over groups of value × size), chunk by chunk."""
    return float(sum(np.dot(v, s) for v, s, _ in _group_chunks(ranking)))


def from_ranking(ranking: Ranking) -> dict:
    """{"sparseness", "complexity"} of the ranked scores, from the tie groups (exact, no sort).

    A tie group of size s at ascending positions p+1 … p+s adds Σ(2i − n − 1) = s(2p + s + 1) − s(n + 1)
    times its value to the Gini numerator. Two passes over the groups, chunk by chunk.
    """
    n = float(ranking.n)
    top = float(ranking.values[0])
    if top <= 0:
        return {"sparseness": float("nan"), "complexity": float("nan")}
    numerator = denominator = mass = 0.0
    # a signed map's negative scores count as 0: sparseness and complexity are those of S⁺ (they
    # used to reach log() as negative probabilities: NaN and a RuntimeWarning on the terminal)
    for v, s, start in _group_chunks(ranking):
        v = np.maximum(v, 0.0) / top
        numerator += np.dot(s * (2 * start + s + 1) - s * (n + 1), v + GINI_EPS)
        denominator += np.dot(s, v + GINI_EPS)
        mass += np.dot(s, v)
    entropy = 0.0
    for v, s, _ in _group_chunks(ranking):
        p = np.maximum(v, 0.0) / top / mass
        entropy -= np.dot(s, p * np.log(p + LOG_EPS))
    return {"sparseness": float(numerator / (n * denominator)), "complexity": float(entropy)}
