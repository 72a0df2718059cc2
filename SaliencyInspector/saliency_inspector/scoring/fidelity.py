"""Fidelity: does the model need what the map shows? Deletion (MIF), LIF and ROAD-3D curves.

On the model-input grid (the tensor the network sees), voxels are replaced in order of the map:
most important first (MIF: a map that ranks what the model needs first makes the score fall fast)
and least important first (LIF: the score should hold). p = 0 … 100 % in ``steps`` steps; score =
the class probability and the logit. Summaries: the area under each curve over p ∈ [0, 1]
(trapezoid) and **F = AUC_LIF − AUC_MIF** (higher: the map ranks what the model needs first;
WistanMarch/Thesis-repo-XAI's definition, see ``/work/shared/notes/trust.md``).

Voxels are ranked by the method's declared importance (:mod:`.importance`: ReLU(map) for CAMs,
|map| for gradient-type maps, the signed map for IG / input × gradient / occlusion), never by a
transform chosen here. The chance line is ``random_maps`` (≥ 20 by default) seeded random maps:
their mean curves, and their F values' mean and 95 % band (2.5th–97.5th percentiles). F − F(random)
is reported with the random-map band as its interval ([F − q97.5, F − q2.5] of the random maps' F):
a map is above chance when the whole band is above 0. One random map is not a chance line: its F
varied from −0.18 to +0.22 with the seed on the lung-lesion phantom.

Replacements that make sense for CT: ``air`` (−1000 HU in input units), ``mean`` (the input's mean
over the body), ``blur`` (a Gaussian blur of the input, σ in mm), ``impute`` (ROAD's noisy linear
imputation in 3D, :mod:`.imputation`). :func:`road` is ROAD-3D (Rong et al. 2022): the MoRF/LeRF
curves with that imputation at removal fractions 10 … 90 %, summarised as the mean of LeRF − MoRF.

Duck-typed so that ``scoring/`` needs nothing but ``io/``: ``classifier`` is anything with
``module`` (an ``nn.Module`` returning logits) and ``probabilities(logits)``; ``x`` the input tensor
(1, C, *spatial) on the model's device. Perturbed inputs go through the network in batches (one
forward per batch); p = 0 and p = 100 % are shared by both curves, so a 20-step pair of curves
costs 40 forwards (20 per curve), and the chance line ``random_maps`` times that (computed once per
case and class and reused for every map: :class:`Chance`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, resample_to
from .importance import check_importance, describe as describe_importance, importance_transform
from .imputation import impute  # noqa: F401 - part of this module's interface (ROAD's imputation)

if TYPE_CHECKING:
    import torch

REPLACEMENTS = ("air", "mean", "blur", "impute")
RANDOM_MAPS = 20  # random maps of the chance line
ROAD_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # ROAD's removal fractions, 10 … 90 %
BAND = (2.5, 97.5)  # percentiles of the random maps' F: the 95 % band


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
class Chance:
    """The chance line: the curves of ``len(runs)`` seeded random maps (same steps, replacement and
    class as the map they are compared with)."""

    runs: tuple
    replacement: str
    target: int
    seed: int
    forwards: int

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean_curves(self) -> Curves:
        """The random maps' mean curves (what the plots draw as the chance line)."""
        first = self.runs[0]
        mean = {k: np.mean([getattr(r, k) for r in self.runs], axis=0)
                for k in ("mif_probability", "lif_probability", "mif_logit", "lif_logit")}
        return Curves(first.fractions, **mean)

    def values(self, key: str = "F") -> np.ndarray:
        """One summary (``F``, ``F_logit``, ``auc_mif``, ``auc_lif``) of every random map."""
        return np.array([getattr(r, key) for r in self.runs], float)

    def band(self, key: str = "F") -> tuple:
        """(mean, 2.5th, 97.5th percentile) of a summary over the random maps."""
        v = self.values(key)
        low, high = np.percentile(v, BAND)
        return float(v.mean()), float(low), float(high)


@dataclass(frozen=True)
class FidelityResult:
    """Curves of the map and the chance line of ``chance.n`` random maps, how the voxels were ranked
    (``importance``) and how it was made (``info``: steps, batch size)."""

    curves: Curves
    chance: Chance | None
    replacement: str
    target: int
    forwards: int
    seconds: float
    info: dict[str, int] = field(default_factory=dict)
    importance: str = "signed"

    @property
    def random(self) -> Curves | None:
        """The chance line's mean curves (None without a chance line)."""
        return None if self.chance is None else self.chance.mean_curves

    def versus_random(self, logit: bool = False) -> dict[str, float]:
        """F (or F on the logits) against the chance line: the random maps' mean F and 95 % band,
        ``F − F(random)`` with its interval from that band ([F − q97.5, F − q2.5]), and ``verdict``:
        ``above chance`` / ``below chance`` when the interval excludes 0, else ``within chance``."""
        key = "F_logit" if logit else "F"
        value = getattr(self.curves, key)
        if self.chance is None:
            return {key: value}
        mean, low, high = self.chance.band(key)
        delta_low, delta_high = value - high, value - low
        verdict = "above chance" if delta_low > 0 else ("below chance" if delta_high < 0 else "within chance")
        return {key: value, f"random_{key}": mean, f"random_{key}_low": low, f"random_{key}_high": high,
                f"{key}_minus_random": value - mean, f"{key}_minus_random_low": delta_low,
                f"{key}_minus_random_high": delta_high, f"{key}_verdict": verdict}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: replacement, class index, importance, forwards, seconds, the summaries, the
        curves, and the chance line (``random_*``: mean curves, mean F and its band, F − F(random)
        with its interval and verdict, on probabilities and logits; ``random_maps``)."""
        out = {"replacement": self.replacement, "class_index": self.target, "importance": self.importance,
               "ranked_by": describe_importance(self.importance), "forwards": self.forwards,
               "seconds": round(self.seconds, 4), **self.curves.summary(),
               "fractions": self.curves.fractions.tolist(),
               "mif_probability": self.curves.mif_probability.tolist(),
               "lif_probability": self.curves.lif_probability.tolist(),
               "mif_logit": self.curves.mif_logit.tolist(), "lif_logit": self.curves.lif_logit.tolist(), **self.info}
        if self.chance is not None:
            random = self.random
            out.update({f"random_{k}": v for k, v in random.summary().items()})
            out.update(self.versus_random())
            out.update(self.versus_random(logit=True))
            out.update(random_maps=self.chance.n, interval="the random maps' 2.5th-97.5th percentiles of F",
                       random_mif_probability=random.mif_probability.tolist(),
                       random_lif_probability=random.lif_probability.tolist())
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


def _checked_map(x, saliency, steps, replacement, batch_size) -> np.ndarray:
    if int(steps) < 2:
        raise InputError(f"fidelity needs at least 2 steps (p = 0 … 100 %), got {steps}")
    if replacement not in REPLACEMENTS:
        raise InputError(f"replacement {replacement!r} is not one of {', '.join(REPLACEMENTS)}")
    if int(batch_size) < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    spatial = tuple(x.shape[2:])
    if saliency is None:
        return np.zeros(spatial)
    scores = np.asarray(saliency.detach().cpu().numpy() if hasattr(saliency, "detach") else saliency, np.float64)
    if scores.shape != spatial:
        raise InputError(f"the map has shape {scores.shape}, the model input {spatial}; bring it onto the "
                         "input grid first (map_on_input_grid)")
    if not np.all(np.isfinite(scores)):
        raise InputError("the map has NaN or infinite values")
    return scores


def _curves(classifier, x, scores, target, counts, fixed, replacement, noise, rng, batch_size):
    """(Curves, forwards) of one ranking: removal of the top / bottom ``counts`` voxels."""
    order = _order(scores.ravel(), rng)  # most important first
    n = scores.size
    requests = [(kind, int(k)) for k in counts for kind in (("both",) if k in (0, n) else ("mif", "lif"))]
    logits = _scores(classifier, x, requests, order, fixed, replacement, noise, rng, batch_size)
    probability = classifier.probabilities(logits)[:, target].cpu().numpy().astype(np.float64)
    logit = logits[:, target].cpu().numpy().astype(np.float64)
    picked = {kind: ([], []) for kind in ("mif", "lif")}
    for (kind, _k), p, z in zip(requests, probability, logit):
        for curve in (("mif", "lif") if kind == "both" else (kind,)):
            picked[curve][0].append(p)
            picked[curve][1].append(z)
    return Curves(np.asarray(counts) / n, np.array(picked["mif"][0]), np.array(picked["lif"][0]),
                  np.array(picked["mif"][1]), np.array(picked["lif"][1])), len(requests)


def chance_line(classifier: ScoredModel, x: torch.Tensor, target: int, *, steps: int = 20, replacement: str = "blur",
                random_maps: int = RANDOM_MAPS, seed: int = 0, air_value: float | None = None,
                body: np.ndarray | None = None, blur_mm: float = 10.0, spacing_zyx: tuple[float, ...] | None = None,
                impute_noise: float = 0.01, batch_size: int = 8, fractions=None) -> Chance:
    """The curves of ``random_maps`` seeded random maps (random map i from ``default_rng(seed + 1 + i)``),
    for every map of this input and class to be compared with (:func:`fidelity`'s ``chance``).
    ``fractions``: removal fractions instead of ``steps`` (ROAD)."""
    import torch

    if int(random_maps) < 1:
        raise InputError(f"the chance line needs at least 1 random map, got {random_maps}")
    _checked_map(x, None, steps, replacement, batch_size)
    n = int(np.prod(x.shape[2:]))
    counts = _counts(n, steps, fractions)
    fixed = replacement_tensor(x, replacement, air_value=air_value, body=body, blur_mm=blur_mm,
                               spacing_zyx=spacing_zyx)
    noise = impute_noise * (float(x.max() - x.min()) or 1.0)
    runs, forwards = [], 0
    with torch.no_grad():
        for i in range(int(random_maps)):
            rng = np.random.default_rng(seed + 1 + i)
            curves, k = _curves(classifier, x, rng.random(tuple(x.shape[2:])), target, counts, fixed, replacement,
                                noise, rng, batch_size)
            runs.append(curves)
            forwards += k
    return Chance(tuple(runs), _describe(replacement, air_value, blur_mm, impute_noise), int(target), int(seed),
                  forwards)


def _counts(n: int, steps, fractions=None) -> np.ndarray:
    if fractions is not None:
        return np.round(np.asarray(fractions, float) * n).astype(int)
    return np.round(np.linspace(0.0, 1.0, int(steps) + 1) * n).astype(int)


def fidelity(classifier: ScoredModel, x: torch.Tensor, saliency: np.ndarray | torch.Tensor, target: int, *,
             steps: int = 20, replacement: str = "blur", air_value: float | None = None,
             body: np.ndarray | None = None, blur_mm: float = 10.0, spacing_zyx: tuple[float, ...] | None = None,
             impute_noise: float = 0.01, seed: int = 0, random_baseline: bool = True,
             batch_size: int = 8, importance: str = "signed", random_maps: int = RANDOM_MAPS,
             chance: Chance | None = None) -> FidelityResult:
    """Deletion (MIF) and LIF curves of ``saliency`` for class ``target``, with the chance line.

    ``saliency``: a map on the input grid (array/tensor of ``x``'s spatial shape, tensor order);
    bring a CT-grid map there with :func:`map_on_input_grid`. ``importance``: how voxels are ranked
    (:func:`.importance.importance_transform`; give the method's ``Method.importance``). ``steps``:
    p = 0 … 100 % in that many steps (at least 2). ``replacement``: one of :data:`REPLACEMENTS`;
    ``air_value``: −1000 HU in input units (default: the input's minimum); ``body``: bool array on
    the input grid for ``mean``; ``blur_mm`` with ``spacing_zyx`` (input voxel size, tensor order)
    for ``blur``; ``impute_noise``: ROAD's noise as a fraction of the input's range. Ties in the map
    are broken by a random order seeded with ``seed``. The chance line: ``chance`` (from
    :func:`chance_line`, shared by every map of this input and class) or ``random_maps`` random maps
    made here (``random_baseline=False``: none). ``batch_size``: perturbed inputs per forward.
    """
    import torch

    start = time.perf_counter()
    check_importance(importance)
    scores = importance_transform(_checked_map(x, saliency, steps, replacement, batch_size), importance)
    counts = _counts(scores.size, steps)
    if chance is not None and (chance.runs[0].fractions.size != counts.size or chance.target != int(target)):
        raise InputError("the chance line was made for other steps or another class; make it with the same ones")
    fixed = replacement_tensor(x, replacement, air_value=air_value, body=body, blur_mm=blur_mm,
                               spacing_zyx=spacing_zyx)
    noise = impute_noise * (float(x.max() - x.min()) or 1.0)
    with torch.no_grad():
        curves, n = _curves(classifier, x, scores, target, counts, fixed, replacement, noise,
                            np.random.default_rng(seed), batch_size)
    if chance is None and random_baseline:
        chance = chance_line(classifier, x, target, steps=steps, replacement=replacement, random_maps=random_maps,
                             seed=seed, air_value=air_value, body=body, blur_mm=blur_mm, spacing_zyx=spacing_zyx,
                             impute_noise=impute_noise, batch_size=batch_size)
        n += chance.forwards
    return FidelityResult(curves, chance, _describe(replacement, air_value, blur_mm, impute_noise), int(target), n,
                          time.perf_counter() - start, info={"steps": int(steps), "batch_size": int(batch_size)},
                          importance=importance)


@dataclass(frozen=True)
class RoadResult:
    """ROAD-3D of one map: MoRF (most relevant first) and LeRF curves at the removal ``fractions``,
    removed voxels imputed (:mod:`.imputation`), on probabilities and logits."""

    fractions: np.ndarray
    morf_probability: np.ndarray
    lerf_probability: np.ndarray
    morf_logit: np.ndarray
    lerf_logit: np.ndarray
    importance: str
    noise: float

    @property
    def score(self) -> float:
        """Mean over the fractions of LeRF − MoRF (probabilities): higher = the map ranks what the
        model needs first (0: no better than its reverse)."""
        return float(np.mean(self.lerf_probability - self.morf_probability))

    @property
    def score_logit(self) -> float:
        """The same on the logits."""
        return float(np.mean(self.lerf_logit - self.morf_logit))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the curves, the scores, the importance transform and the noise."""
        return {"fractions": self.fractions.tolist(), "morf_probability": self.morf_probability.tolist(),
                "lerf_probability": self.lerf_probability.tolist(), "morf_logit": self.morf_logit.tolist(),
                "lerf_logit": self.lerf_logit.tolist(), "road": self.score, "road_logit": self.score_logit,
                "importance": self.importance, "ranked_by": describe_importance(self.importance),
                "imputation": f"noisy linear (ROAD stencil in 3D), noise {self.noise:g} of the range"}


def road(classifier: ScoredModel, x: torch.Tensor, saliency: np.ndarray | torch.Tensor, target: int, *,
         fractions=ROAD_FRACTIONS, importance: str = "signed", noise: float = 0.01, seed: int = 0,
         batch_size: int = 8) -> RoadResult:
    """ROAD-3D (Rong et al. 2022, Remove And Debias): remove the ``fractions`` most (MoRF) and least
    (LeRF) important voxels of ``saliency`` (ranked by ``importance``), impute them by ROAD's noisy
    linear imputation (``noise``: its standard deviation as a fraction of the input's range) and
    score the class. The imputation is what debiases: the removed region's shape leaks less class
    information than a constant fill. Cost: 2 forwards and 2 imputations per fraction."""
    import torch

    check_importance(importance)
    fractions = np.asarray(fractions, float)
    if fractions.ndim != 1 or fractions.size == 0 or np.any((fractions <= 0) | (fractions >= 1)):
        raise InputError("ROAD's removal fractions must lie strictly between 0 and 1")
    scores = importance_transform(_checked_map(x, saliency, 2, "impute", batch_size), importance)
    spread = noise * (float(x.max() - x.min()) or 1.0)
    with torch.no_grad():
        curves, _n = _curves(classifier, x, scores, target, _counts(scores.size, None, fractions), None, "impute",
                             spread, np.random.default_rng(seed), batch_size)
    return RoadResult(fractions, curves.mif_probability, curves.lif_probability, curves.mif_logit, curves.lif_logit,
                      importance, noise)


def _describe(kind, air_value, blur_mm, noise) -> str:
    return {"air": "air (-1000 HU)" if air_value is not None else "air (the input's minimum)",
            "mean": "the input's mean over the body",
            "blur": f"Gaussian blur, sigma {blur_mm:g} mm",
            "impute": f"noisy linear imputation (ROAD's stencil in 3D, noise {noise:g} of the range)"}[kind]


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
