"""Fidelity: does the model need what the map shows? Deletion (MIF) and insertion-like (LIF) curves.

On the model-input grid (the tensor the network sees), voxels are replaced in order of the map:
most important first (MIF: a map that ranks what the model needs first makes the score fall fast)
and least important first (LIF: the score should hold). p = 0 … 100 % in ``steps`` steps; score =
the class probability (and the logit). Summaries: the area under each curve over p ∈ [0, 1]
(trapezoid) and **F = AUC_LIF − AUC_MIF** (higher: the map ranks what the model needs first;
WistanMarch/Thesis-repo-XAI's definition, see ``/work/shared/notes/trust.md``), and the same for a
seeded random map: the chance line.

Replacements that make sense for CT: ``air`` (−1000 HU in input units), ``mean`` (the input's mean
over the body), ``blur`` (a Gaussian blur of the input, σ in mm), ``impute`` (ROAD's noisy linear
imputation in 3D: each removed voxel the mean of its 6 neighbours, solved as one sparse linear
system, plus a little noise — ROAD's idea, with the 6-neighbour stencil of a voxel grid).

Duck-typed so that ``evaluate/`` needs nothing but ``io/``: ``classifier`` is anything with
``module`` (an ``nn.Module`` returning logits) and ``probabilities(logits)``; ``x`` the input tensor
(1, C, *spatial) on the model's device. Perturbed inputs go through the network in batches (one
forward per batch); p = 0 and p = 100 % are shared by both curves, so a 20-step pair of curves
costs 40 forwards (20 per curve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, resample_to

if TYPE_CHECKING:
    import torch

REPLACEMENTS = ("air", "mean", "blur", "impute")


class ScoredModel(Protocol):
    """What fidelity needs of a classifier: the network (logits) and logits -> probabilities."""

    module: Any  # torch.nn.Module

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Curves:
    """Deletion (MIF) and LIF curves of one map: scores at each fraction p of replaced voxels."""

    fractions: np.ndarray
    mif_probability: np.ndarray
    lif_probability: np.ndarray
    mif_logit: np.ndarray
    lif_logit: np.ndarray

    @property
    def auc_mif(self) -> float:
        return auc(self.fractions, self.mif_probability)

    @property
    def auc_lif(self) -> float:
        return auc(self.fractions, self.lif_probability)

    @property
    def F(self) -> float:
        """AUC_LIF − AUC_MIF of the probability curves."""
        return self.auc_lif - self.auc_mif

    @property
    def F_logit(self) -> float:
        """The same on the logit curves."""
        return auc(self.fractions, self.lif_logit) - auc(self.fractions, self.mif_logit)

    def summary(self) -> dict[str, float]:
        """The curves' summaries: AUC_MIF, AUC_LIF, F and F on the logits."""
        return {"auc_mif": self.auc_mif, "auc_lif": self.auc_lif, "F": self.F, "F_logit": self.F_logit}


@dataclass(frozen=True)
class FidelityResult:
    """Curves of the map and of a seeded random map (the chance line), and how they were made
    (``info``: steps and batch size)."""

    curves: Curves
    random: Curves | None
    replacement: str
    target: int
    forwards: int
    seconds: float
    info: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: replacement, class index, forwards, seconds, the summaries, the curves and the
        random map's (``random_*``)."""
        out = {"replacement": self.replacement, "class_index": self.target, "forwards": self.forwards,
               "seconds": round(self.seconds, 4), **self.curves.summary(),
               "fractions": self.curves.fractions.tolist(),
               "mif_probability": self.curves.mif_probability.tolist(),
               "lif_probability": self.curves.lif_probability.tolist(), **self.info}
        if self.random is not None:
            out.update({f"random_{k}": v for k, v in self.random.summary().items()})
            out["random_mif_probability"] = self.random.mif_probability.tolist()
            out["random_lif_probability"] = self.random.lif_probability.tolist()
        return out


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def map_on_input_grid(saliency: Volume, grid: Volume, axes: str = "zyx") -> np.ndarray:
    """A map on any grid (the CT's, a feature grid) resampled onto the model-input ``grid`` through
    physical space (linear), as an array in tensor order (``axes``)."""
    geometry = Volume(np.zeros(grid.shape, np.float32), grid.spacing, grid.origin, grid.direction)
    on = resample_to(saliency.with_array(np.asarray(saliency.array, np.float32)), geometry, "linear").array
    return on if axes == "zyx" else on.transpose(2, 1, 0)


def replacement_tensor(x: torch.Tensor, kind: str, *, air_value: float | None = None, body: np.ndarray | None = None,
                       blur_mm: float = 10.0, spacing_zyx: tuple[float, ...] | None = None) -> torch.Tensor | None:
    """The values put in place of removed voxels (a tensor like ``x``); ``impute`` is per removal set
    and has no fixed replacement (returns None)."""
    import torch

    if kind == "air":
        value = float(x.min()) if air_value is None else float(air_value)
        return torch.full_like(x, value)
    if kind == "mean":
        inside = torch.ones(x.shape[2:], dtype=torch.bool, device=x.device) if body is None else \
            torch.as_tensor(np.asarray(body, bool), device=x.device)
        means = x[0][:, inside].mean(1)  # per channel
        return means.view(1, -1, *[1] * (x.ndim - 2)).expand_as(x).clone()
    if kind == "blur":
        from scipy import ndimage

        spacing = spacing_zyx or (1.0,) * (x.ndim - 2)
        sigma = [0.0, 0.0] + [blur_mm / s for s in spacing]
        blurred = ndimage.gaussian_filter(x.detach().cpu().numpy(), sigma, mode="nearest")
        return torch.as_tensor(blurred, device=x.device, dtype=x.dtype)
    if kind == "impute":
        return None
    raise InputError(f"replacement {kind!r} is not one of {', '.join(REPLACEMENTS)}")


def impute(image: np.ndarray, removed: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """ROAD's noisy linear imputation in 3D: every removed voxel becomes the mean of its 6 neighbours
    (known ones fixed), solved jointly (conjugate gradients on the sparse system; a tiny pull toward
    the image mean keeps it solvable when everything is removed), plus Gaussian noise ``noise``."""
    from scipy import sparse
    from scipy.sparse.linalg import cg

    image = np.asarray(image, np.float64)
    removed = np.asarray(removed, bool)
    m = int(removed.sum())
    if m == 0:
        return image.copy()
    index = np.full(image.shape, -1, np.int64)
    index[removed] = np.arange(m)
    coords = np.nonzero(removed)
    degree = np.zeros(m)
    rhs = np.zeros(m)
    rows, cols = [], []
    for axis in range(image.ndim):
        for shift in (-1, 1):
            nb = list(coords)
            nb[axis] = coords[axis] + shift
            valid = (nb[axis] >= 0) & (nb[axis] < image.shape[axis])
            me = np.flatnonzero(valid)
            nb = tuple(c[valid] for c in nb)
            degree[me] += 1
            other = index[nb]
            unknown = other >= 0
            rows.append(me[unknown])
            cols.append(other[unknown])
            np.add.at(rhs, me[~unknown], image[nb][~unknown])
    eps = 1e-6
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.csr_matrix((np.full(rows.size, -1.0), (rows, cols)), shape=(m, m)) + \
        sparse.diags(degree + eps)
    guess = np.full(m, image[~removed].mean() if m < image.size else image.mean())
    solution, _ = cg(matrix, rhs + eps * image.mean(), x0=guess, rtol=1e-6, maxiter=2000)
    out = image.copy()
    out[removed] = solution + noise * rng.standard_normal(m)
    return out


def fidelity(classifier: ScoredModel, x: torch.Tensor, saliency: np.ndarray | torch.Tensor, target: int, *,
             steps: int = 20, replacement: str = "blur", air_value: float | None = None,
             body: np.ndarray | None = None, blur_mm: float = 10.0, spacing_zyx: tuple[float, ...] | None = None,
             impute_noise: float = 0.01, seed: int = 0, random_baseline: bool = True,
             batch_size: int = 8) -> FidelityResult:
    """Deletion (MIF) and LIF curves of ``saliency`` for class ``target``.

    ``saliency``: a map on the input grid (array/tensor of ``x``'s spatial shape, tensor order);
    bring a CT-grid map there with :func:`map_on_input_grid`. ``steps``: p = 0 … 100 % in that many
    steps (at least 2). ``replacement``: one of :data:`REPLACEMENTS`; ``air_value``: −1000 HU in
    input units (default: the input's minimum); ``body``: bool array on the input grid for ``mean``;
    ``blur_mm`` with ``spacing_zyx`` (input voxel size, tensor order) for ``blur``. Ties in the map
    are broken by a random order seeded with ``seed``; the random map uses the same seed.
    ``batch_size``: perturbed inputs per forward.
    """
    import torch

    start = time.perf_counter()
    if int(steps) < 2:
        raise InputError(f"fidelity needs at least 2 steps (p = 0 … 100 %), got {steps}")
    if replacement not in REPLACEMENTS:
        raise InputError(f"replacement {replacement!r} is not one of {', '.join(REPLACEMENTS)}")
    if int(batch_size) < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    spatial = tuple(x.shape[2:])
    scores = np.asarray(saliency.detach().cpu().numpy() if hasattr(saliency, "detach") else saliency, np.float64)
    if scores.shape != spatial:
        raise InputError(f"the map has shape {scores.shape}, the model input {spatial}; bring it onto the "
                         "input grid first (map_on_input_grid)")
    if not np.all(np.isfinite(scores)):
        raise InputError("the map has NaN or infinite values")
    rng = np.random.default_rng(seed)
    fixed = replacement_tensor(x, replacement, air_value=air_value, body=body, blur_mm=blur_mm,
                               spacing_zyx=spacing_zyx)
    span = float(x.max() - x.min()) or 1.0
    counts = np.round(np.linspace(0.0, 1.0, int(steps) + 1) * scores.size).astype(int)

    def curves_of(map_values, generator):
        order = _order(map_values.ravel(), generator)  # most important first
        requests = [("both", 0)] + [(kind, k) for k in counts[1:-1] for kind in ("mif", "lif")] + \
                   [("both", scores.size)]
        logits = _scores(classifier, x, requests, order, fixed, replacement, impute_noise * span, generator,
                         batch_size)
        probability = classifier.probabilities(logits)[:, target].cpu().numpy().astype(np.float64)
        logit = logits[:, target].cpu().numpy().astype(np.float64)
        inner = len(counts) - 2

        def pick(values, kind):
            offset = 0 if kind == "mif" else 1
            middle = [values[1 + 2 * i + offset] for i in range(inner)]
            return np.array([values[0], *middle, values[-1]])

        return Curves(counts / scores.size, pick(probability, "mif"), pick(probability, "lif"),
                      pick(logit, "mif"), pick(logit, "lif")), len(requests)

    with torch.no_grad():
        curves, n = curves_of(scores, rng)
        chance = None
        if random_baseline:
            random_rng = np.random.default_rng(seed + 1)
            chance, n_random = curves_of(random_rng.random(scores.shape), random_rng)
            n += n_random
    return FidelityResult(curves, chance, _describe(replacement, air_value, blur_mm, impute_noise), int(target), n,
                          time.perf_counter() - start, info={"steps": int(steps), "batch_size": int(batch_size)})


def _describe(kind, air_value, blur_mm, noise) -> str:
    return {"air": "air (-1000 HU)" if air_value is not None else "air (the input's minimum)",
            "mean": "the input's mean over the body",
            "blur": f"Gaussian blur, sigma {blur_mm:g} mm",
            "impute": f"noisy linear imputation (6 neighbours, noise {noise:g} of the range)"}[kind]


def _order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxel indices from most to least important; ties in random (seeded) order."""
    shuffle = rng.permutation(values.size)
    return shuffle[np.argsort(-values[shuffle], kind="stable")]


def _scores(classifier, x, requests, order, fixed, replacement, noise, rng, batch_size):
    """Logits (len(requests), K) of the perturbed inputs, ``batch_size`` inputs per forward."""
    import torch

    n = order.size
    spatial = x.shape[2:]
    out = []
    batch = []

    def perturbed(kind, k):
        removed = np.zeros(n, bool)
        if k:
            removed[order[:k] if kind in ("mif", "both") else order[n - k:]] = True
        removed = removed.reshape(spatial)
        if fixed is not None:
            mask = torch.as_tensor(removed, device=x.device)
            return torch.where(mask, fixed, x)[0]
        channels = [impute(c.detach().cpu().numpy(), removed, noise, rng) for c in x[0]]
        return torch.as_tensor(np.stack(channels), dtype=x.dtype, device=x.device)

    for kind, k in requests:
        batch.append(perturbed(kind, k))
        if len(batch) == batch_size:
            out.append(classifier.module(torch.stack(batch)).detach())
            batch = []
    if batch:
        out.append(classifier.module(torch.stack(batch)).detach())
    return torch.cat(out)
