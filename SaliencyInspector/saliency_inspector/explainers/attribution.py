"""Importance estimators beyond CAMs: a registry of functions (model, input, class, settings) → raw map.

Every estimator returns a RAW, SIGNED map for one class on the model-input grid (or, for CAMs, on
the feature grid, which covers the same field of view); :func:`explain` brings it back to the CT
through the same physical inverse as the CAMs. Captum does the attribution (read at its source,
captum 0.9: ``attr/_core/saliency.py``, ``input_x_gradient.py``, ``noise_tunnel.py``,
``integrated_gradients.py``, ``occlusion.py``, ``guided_grad_cam.py``); this module only chooses
the settings, the baselines and the batch sizes, and sums the input channels (they are copies of
the one windowed CT, so by the chain rule the sum is the attribution of that CT voxel).

Registry: :data:`ESTIMATORS` maps a name to an :class:`EstimatorInfo` (function, family, whether
it needs a layer, cost in forward/backward passes). Your own estimator joins the same way::

    import saliency_inspector as si
    def intensity(model, x):                      # any of (model, x), (model, x, target),
        return x[0].sum(0)                         # (model, x, target, settings)
    si.register_estimator("intensity", intensity)  # family "custom"
    res = si.explain(clf, ct, methods=["hirescam", "intensity"])

Memory: steps and samples are batched (Captum's ``internal_batch_size``, ``nt_samples_batch_size``,
``perturbations_per_eval``) so that one batch fits a budget (default 2 GB, ``memory_gb``), from an
estimate of one sample's forward(+backward) memory measured once per model and input shape.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import InputError

FAMILIES = ("CAM", "gradient", "perturbation", "custom")
BASELINES = ("air", "min", "blur")


# ---- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimatorSettings:
    """Knobs of the estimators, plus what :func:`explain` knows of the input grid.

    ``noise``: SmoothGrad σ as a fraction of the input's range (max − min); ``samples``: noisy
    samples; ``steps``: IG steps (Gauss–Legendre, Captum's default rule); ``baseline``: ``air``
    (−1000 HU through the card's window), ``min`` (the windowed input's minimum) or ``blur`` (the
    input blurred with σ = ``blur_mm``); ``occlusion_window_mm``/``occlusion_stride_mm``: the 3D
    window and stride (mm, converted to voxels on the input grid); ``memory_gb``: the budget one
    batch of steps/samples must fit; ``seed``: noise seed; ``layer``: target layer for CAMs and
    Guided Grad-CAM; ``xrai_scales``: SLIC supervoxel counts; ``xrai_dilation``: voxels.
    Filled by :func:`explain` from the model card and the input grid: ``spacing_zyx`` (mm, tensor
    order), ``air_value`` (−1000 HU in input units), ``body`` (bool array on the input grid).
    """

    noise: float = 0.15
    samples: int = 25
    steps: int = 32
    baseline: str = "air"
    blur_mm: float = 10.0
    occlusion_window_mm: float = 50.0
    occlusion_stride_mm: float = 50.0
    memory_gb: float = 2.0
    seed: int = 0
    layer: str | None = None
    xrai_scales: tuple = (16, 32, 64, 128)
    xrai_dilation: int = 1
    spacing_zyx: tuple | None = None
    air_value: float | None = None
    body: object = field(default=None, repr=False, compare=False)

    def check(self) -> "EstimatorSettings":
        """InputError for settings that cannot work; returns self."""
        if not self.noise >= 0:
            raise InputError(f"noise must be >= 0 (a fraction of the input range), got {self.noise}")
        for name in ("samples", "steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.baseline not in BASELINES:
            raise InputError(f"baseline {self.baseline!r} is not one of {', '.join(BASELINES)}")
        if not self.memory_gb > 0:
            raise InputError(f"memory budget must be positive (GB), got {self.memory_gb}")
        if not (self.occlusion_window_mm > 0 and self.occlusion_stride_mm > 0 and self.blur_mm > 0):
            raise InputError("occlusion window/stride and blur sigma must be positive millimetres")
        return self


def settings_from(options) -> EstimatorSettings:
    """EstimatorSettings from None, a dict of field names, or EstimatorSettings."""
    if options is None:
        return EstimatorSettings()
    if isinstance(options, EstimatorSettings):
        return options.check()
    known = {f for f in EstimatorSettings.__dataclass_fields__}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown estimator setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return EstimatorSettings(**dict(options)).check()


def hu_to_input(spec, hu: float) -> float:
    """The input value of a HU value under a card's input spec (window, then optional mean/std)."""
    lo, hi = spec.window
    value = min(1.0, max(0.0, (float(hu) - lo) / (hi - lo)))
    if getattr(spec, "mean", None) is not None or getattr(spec, "std", None) is not None:
        value = (value - (spec.mean or 0.0)) / (spec.std or 1.0)
    return value


# ---- registry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimatorInfo:
    """An estimator: its function and what it is (family, needs a layer, cost, one-line meaning)."""

    name: str
    family: str
    needs_layer: bool
    cost: str
    meaning: str
    function: Callable = field(repr=False, compare=False, default=None)


@dataclass
class Attribution:
    """One estimator's raw map for one class: ``map`` (spatial dims, tensor order, on the input or
    feature grid), the seconds it took and what it reports (e.g. IG's completeness error)."""

    map: object
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


ESTIMATORS: dict = {}


def register_estimator(name: str, function: Callable, family: str = "custom", needs_layer: bool = False,
                       cost: str = "user-defined", meaning: str = "", replace_existing: bool = False) -> EstimatorInfo:
    """Make ``function`` available as method ``name`` in :func:`explain`, ``compare`` and the report.

    ``function`` takes ``(model, x)``, ``(model, x, target)`` or ``(model, x, target, settings)``
    (``x``: the model-input tensor (1, C, *spatial) on the model's device; ``target``: class index;
    ``settings``: :class:`EstimatorSettings`) and returns a raw map: a tensor or array of shape
    (*spatial), (C, *spatial) or (1, C, *spatial) on the input grid (channels are summed), or an
    :class:`Attribution`. Returns the registered :class:`EstimatorInfo`.
    """
    from .cam import METHODS

    if not isinstance(name, str) or not name.strip():
        raise InputError("an estimator needs a non-empty name")
    if not callable(function):
        raise InputError(f"estimator {name!r}: {function!r} is not callable")
    if family not in FAMILIES:
        raise InputError(f"estimator {name!r}: family {family!r} is not one of {', '.join(FAMILIES)}")
    if (name in ESTIMATORS or name in METHODS) and not replace_existing:
        raise InputError(f"estimator {name!r} exists already; choose another name (or replace_existing=True)")
    info = EstimatorInfo(name, family, needs_layer, cost, meaning or getattr(function, "__doc__", "") or name,
                         _adapt(function))
    ESTIMATORS[name] = info
    return info


def _adapt(function):
    """Call ``function`` with as many of (model, x, target, settings) as it takes."""
    try:
        params = [p for p in inspect.signature(function).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        var = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(function).parameters.values())
        n = 4 if var else min(4, len(params))
    except (TypeError, ValueError):  # builtins without a signature
        n = 4
    if n < 2:
        raise InputError(f"estimator {getattr(function, '__name__', function)!r} must take at least (model, x)")
    return lambda model, x, target, settings: function(*(model, x, target, settings)[:n])


def estimator_names() -> list:
    """Every method name :func:`explain` accepts: CAMs first, then the registered estimators."""
    from .cam import METHODS

    return list(METHODS) + [n for n in ESTIMATORS if n not in METHODS]


def get_estimator(name) -> EstimatorInfo:
    """The EstimatorInfo of ``name`` (a callable is wrapped as a one-off custom estimator)."""
    if callable(name) and not isinstance(name, str):
        label = getattr(name, "__name__", "custom")
        return EstimatorInfo(label, "custom", False, "user-defined", getattr(name, "__doc__", "") or label,
                             _adapt(name))
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    raise InputError(f"unknown method {name!r}; choose from {', '.join(estimator_names())}")


def attribute(name, model, x, target: int, settings=None) -> Attribution:
    """Run estimator ``name`` (or a callable) for class index ``target`` on input ``x`` (1, C, *spatial).

    Returns an :class:`Attribution` whose ``map`` is a float32 tensor of the spatial shape (channels
    summed), on the input grid (CAMs: on the feature grid).
    """
    import torch

    info = get_estimator(name)
    settings = settings_from(settings)
    start = time.perf_counter()
    with torch.enable_grad():
        out = info.function(model, x, int(target), settings)
    result = out if isinstance(out, Attribution) else Attribution(out)
    result.map = _spatial(torch.as_tensor(result.map).detach(), x, info.name)
    if not torch.isfinite(result.map).all():
        raise InputError(f"estimator {info.name!r} returned NaN or infinite values")
    result.seconds = time.perf_counter() - start
    return result


def _spatial(t, x, name):
    spatial = x.ndim - 2
    t = t.float()
    while t.ndim > spatial + 1 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == spatial + 1:
        t = t.sum(0)
    if t.ndim != spatial:
        raise InputError(f"estimator {name!r} returned shape {tuple(t.shape)}; expected the input's spatial "
                         f"shape {tuple(x.shape[2:])} (optionally with batch and channel axes)")
    return t.to(x.device)


def for_input(settings: EstimatorSettings, prepared, card=None, layer=None) -> EstimatorSettings:
    """``settings`` completed from a prepared input (its grid's voxel size in tensor order), the
    model card (the input value of air) and the explain layer."""
    spacing = tuple(float(v) for v in prepared.grid.spacing)
    spacing = spacing[::-1] if getattr(prepared, "axes", "zyx") == "zyx" else spacing
    air = settings.air_value
    if air is None and card is not None:
        air = hu_to_input(card.input, -1000.0)
    return replace(settings, spacing_zyx=settings.spacing_zyx or spacing, air_value=air,
                   layer=settings.layer or layer or getattr(card, "target_layer", None))


def run_estimators(classifier, prepared, estimators: dict, classes: dict, settings, layer=None, say=None) -> dict:
    """Every (estimator, class) map for :func:`explain`, raw on the model-input grid (put on the CT
    grid later, one at a time, by ``Explanation.map``).

    ``estimators``: name -> name or callable; ``classes``: class name -> index. Returns
    ``{"maps": {(method, class): raw Volume}, "info": {method: {class: {...}}}}``.
    """
    say = say or (lambda _m: None)
    settings = for_input(settings_from(settings), prepared, classifier.card, layer)
    x = prepared.tensor
    maps, info = {}, {}
    for method, spec in estimators.items():
        entry = get_estimator(spec)
        info[method] = {}
        for name, index in classes.items():
            say(f"{method} for class {name} ({entry.cost})")
            result = attribute(spec, classifier.module, x, index, settings)
            maps[(method, name)] = prepared.raw_volume(result.map)
            info[method][name] = {"seconds": round(result.seconds, 4), "family": entry.family,
                                  **{k: v for k, v in result.info.items()}}
    return {"maps": maps, "info": info}


# ---- memory ---------------------------------------------------------------------------------------
_FOOTPRINT: dict = {}  # (id(model), shape, dtype, device) -> (bytes forward+backward, bytes forward)


def sample_bytes(model, x) -> tuple:
    """Estimated memory of one sample (bytes): (forward + backward, forward only).

    One no-grad forward records the outputs of every leaf module: a backward keeps about all of
    them (saved tensors) plus gradients the size of the largest two; a plain forward holds about
    the largest two at a time. Measured once per (model, input shape) and cached.
    """
    import torch

    key = (id(model), tuple(x.shape[1:]), x.dtype, str(x.device))
    if key in _FOOTPRINT:
        return _FOOTPRINT[key]
    sizes, handles = [], []

    def hook(_m, _i, out):
        if torch.is_tensor(out):
            sizes.append(out.numel() // max(1, out.shape[0]) * out.element_size() if out.ndim else 0)

    try:
        for m in model.modules():
            if not list(m.children()):
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    sample = x[0].numel() * x.element_size()
    top = sorted(sizes, reverse=True)[:2]
    both = (sum(sizes) + sum(top) + 2 * sample, sum(top) + 2 * sample)
    _FOOTPRINT[key] = both
    return both


def batch_size(model, x, settings: EstimatorSettings, backward: bool = True, what: str = "sample") -> int:
    """How many samples of ``x`` fit the memory budget at once (InputError when not even one)."""
    need = sample_bytes(model, x)[0 if backward else 1]
    budget = settings.memory_gb * 2 ** 30
    n = int(budget // max(1, need))
    if n < 1:
        raise InputError(f"memory budget {settings.memory_gb:g} GB is too small for one {what} of this model "
                         f"(about {need / 2 ** 30:.2f} GB at input {tuple(x.shape[1:])}); raise --memory-gb")
    return n


# ---- the estimators -------------------------------------------------------------------------------
def _forward(model):
    """Captum's forward_func: the model itself (logits), so targets index classes."""
    return model


def gradient(model, x, target, settings):
    """∂y_c/∂x (Captum ``Saliency`` with ``abs=False``: the signed gradient)."""
    from captum.attr import Saliency

    return Saliency(_forward(model)).attribute(x, target=target, abs=False)


def inputxgradient(model, x, target, settings):
    """x ⊙ ∂y_c/∂x (Captum ``InputXGradient``)."""
    from captum.attr import InputXGradient

    return InputXGradient(_forward(model)).attribute(x, target=target)


def _noise_tunnel(kind):
    def estimator(model, x, target, settings):
        import torch
        from captum.attr import NoiseTunnel, Saliency

        sigma = float(settings.noise) * float(x.max() - x.min())
        per_batch = min(settings.samples, batch_size(model, x, settings, what="noisy sample"))
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(settings.seed)  # seeded noise that leaves the caller's RNG alone
            out = NoiseTunnel(Saliency(_forward(model))).attribute(
                x, nt_type=kind, nt_samples=int(settings.samples), nt_samples_batch_size=per_batch,
                stdevs=sigma, target=target, abs=False)
        return Attribution(out, info={"sigma": sigma, "samples": int(settings.samples), "batch": per_batch})

    estimator.__name__ = kind
    estimator.__doc__ = {"smoothgrad": "mean gradient over noisy copies of the input (NoiseTunnel)",
                         "smoothgrad_sq": "mean squared gradient over noisy copies (NoiseTunnel)",
                         "vargrad": "variance of the gradient over noisy copies (NoiseTunnel)"}[kind]
    return estimator


def baseline_for(x, settings: EstimatorSettings):
    """IG/occlusion baseline: a float (air, min) or a tensor like ``x`` (blur); and its description."""
    import torch

    if settings.baseline == "air" and settings.air_value is not None:
        return float(settings.air_value), "air (-1000 HU through the card's window)"
    if settings.baseline in ("air", "min"):
        note = "" if settings.baseline == "min" else " (air value unknown without a model card: used the minimum)"
        return float(x.min()), "windowed minimum" + note
    from scipy import ndimage

    spacing = settings.spacing_zyx or (1.0,) * (x.ndim - 2)
    sigma = [0.0, 0.0] + [settings.blur_mm / s for s in spacing]
    blurred = ndimage.gaussian_filter(x.detach().cpu().numpy(), sigma, mode="nearest")
    return torch.as_tensor(blurred, device=x.device, dtype=x.dtype), f"CT blurred with sigma {settings.blur_mm:g} mm"


def ig(model, x, target, settings):
    """Integrated Gradients from the baseline to x (Captum, Gauss–Legendre steps); reports the
    completeness error |Σ attribution − (y_c(x) − y_c(baseline))|."""
    import torch
    from captum.attr import IntegratedGradients

    base, text = baseline_for(x, settings)
    per_batch = min(settings.steps, batch_size(model, x, settings, what="IG step"))
    attr, delta = IntegratedGradients(_forward(model)).attribute(
        x, baselines=base, target=target, n_steps=int(settings.steps), internal_batch_size=per_batch,
        return_convergence_delta=True)
    # Captum's delta = Σ attribution − (y(x) − y(baseline)) (attr/_utils/attribution.py,
    # compute_convergence_delta), so the output difference needs no extra forward passes.
    diff = float(attr.detach().double().sum() - delta[0].double())
    error = abs(float(delta[0]))
    return Attribution(attr, info={"baseline": text, "steps": int(settings.steps), "batch": per_batch,
                                   "completeness_error": error, "output_difference": diff,
                                   "completeness_relative": error / abs(diff) if diff else float("nan")})


def occlusion(model, x, target, settings):
    """Drop in the class score when a 3D window (mm) is replaced by the baseline (Captum ``Occlusion``)."""
    from captum.attr import Occlusion

    base, text = baseline_for(x, settings)
    spacing = settings.spacing_zyx or (1.0,) * (x.ndim - 2)
    shape = x.shape[2:]
    window = tuple(max(1, min(n, round(settings.occlusion_window_mm / s))) for n, s in zip(shape, spacing))
    stride = tuple(max(1, min(w, round(settings.occlusion_stride_mm / s))) for w, s in zip(window, spacing))
    per_eval = batch_size(model, x, settings, backward=False, what="occluded input")
    attr = Occlusion(_forward(model)).attribute(
        x, sliding_window_shapes=(x.shape[1], *window), strides=(x.shape[1], *stride), baselines=base,
        target=target, perturbations_per_eval=per_eval)
    return Attribution(attr, info={"baseline": text, "window_voxels": list(window), "stride_voxels": list(stride),
                                   "batch": per_eval})


def non_relu_activations(model) -> list:
    """Names and types of activation modules that are not ``nn.ReLU`` (Guided backprop only
    changes ``nn.ReLU`` modules; any other activation would silently keep its plain gradient)."""
    import torch.nn.modules.activation as act

    kinds = tuple(c for c in vars(act).values() if isinstance(c, type) and c.__module__ == act.__name__
                  and c.__name__ not in ("ReLU", "MultiheadAttention"))
    return [f"{name} ({type(m).__name__})" for name, m in model.named_modules() if isinstance(m, kinds)]


_FUNCTIONAL = ("relu", "relu_", "sigmoid", "tanh", "gelu", "silu", "elu", "selu", "leaky_relu", "softplus",
               "mish", "hardswish", "prelu", "relu6", "hardtanh", "sigmoid_")


def guided_gradcam(model, x, target, settings):
    """Guided Grad-CAM (Captum ``GuidedGradCam``, trilinear upsampling): only for networks whose every
    activation is an ``nn.ReLU`` module."""
    import torch
    from captum.attr import GuidedGradCam
    from torch.overrides import TorchFunctionMode

    from .cam import find_target_layer, get_layer

    others = non_relu_activations(model)
    if others:
        raise InputError(f"guided_gradcam needs every activation to be an nn.ReLU module (Guided backprop "
                         f"changes only those); this network has {', '.join(others[:4])}"
                         f"{' …' if len(others) > 4 else ''}. Use gradient, smoothgrad or ig instead")
    layer = settings.layer or find_target_layer(model, x)
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    depth, seen = [0], []  # depth: 1 inside the model's forward, +1 inside each nn.ReLU

    class Watch(TorchFunctionMode):  # activations called as functions in the forward, outside nn.ReLU
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if depth[0] == 1 and name in _FUNCTIONAL:
                seen.append(name)
            return func(*args, **(kwargs or {}))

    def step(by):
        return lambda *_: depth.__setitem__(0, depth[0] + by)

    enter = [m.register_forward_pre_hook(step(1)) for m in relus + [model]]
    leave = [m.register_forward_hook(step(-1)) for m in relus + [model]]
    try:
        with Watch():
            out = GuidedGradCam(model, get_layer(model, layer)).attribute(x, target=target,
                                                                          interpolate_mode="trilinear")
    finally:
        for h in enter + leave:
            h.remove()
    if seen:
        raise InputError(f"guided_gradcam: the network calls {', '.join(sorted(set(seen)))} as a function, "
                         "which Guided backprop cannot change; use gradient, smoothgrad or ig instead")
    return Attribution(out, info={"layer": layer})


# ---- xrai3d ---------------------------------------------------------------------------------------
def supervoxels(image, spacing_zyx, body, scales=(16, 32, 64, 128), dilation: int = 1) -> list:
    """Candidate regions (flat voxel indices inside ``body``) from SLIC supervoxels at several scales.

    ``skimage.segmentation.slic(image, n_segments=k, channel_axis=None, spacing=voxel mm,
    mask=body)`` per scale k (read at skimage 0.26 ``segmentation/slic_superpixels.py``: labels are
    0 outside the mask), each supervoxel dilated by a ball of ``dilation`` voxels (within the body).
    """
    from scipy import ndimage
    from skimage.segmentation import slic

    image = np.asarray(image, dtype=np.float64)
    body = np.asarray(body, dtype=bool)
    span = float(image[body].max() - image[body].min()) if body.any() else 1.0
    ball = ndimage.generate_binary_structure(3, 1)
    regions = []
    for k in scales:
        labels = slic(image, n_segments=int(k), compactness=0.1 * (span or 1.0), channel_axis=None,
                      spacing=np.asarray(spacing_zyx, dtype=float), mask=body, start_label=1)
        for sl, label in zip(ndimage.find_objects(labels), range(1, labels.max() + 1)):
            if sl is None:
                continue
            grown = tuple(slice(max(0, s.start - dilation), min(n, s.stop + dilation)) for s, n in zip(sl, labels.shape))
            crop = labels[grown] == label
            if dilation:
                crop = ndimage.binary_dilation(crop, ball, iterations=dilation) & body[grown]
            zz, yy, xx = np.nonzero(crop)
            idx = np.ravel_multi_index((zz + grown[0].start, yy + grown[1].start, xx + grown[2].start), labels.shape)
            regions.append(idx)
    return regions


def xrai_rank(attribution, regions, body, min_voxels: int | None = None):
    """XRAI's greedy ranking (PAIR-code/saliency ``core/xrai.py``, 'full'), in 3D.

    Repeatedly add the region with the highest mean attribution over its not-yet-covered voxels
    (skipping regions that add fewer than ``min_voxels``, default 0.1 % of the body); each voxel is
    scored by the region it entered with; body voxels no region covered form a last region.
    Returns (map, order): ``map`` the per-voxel gain (outside the body: min(0, lowest gain)),
    ``order`` the region rank 1, 2, … of every body voxel (0 outside): the body covered exactly once.
    """
    attr = np.asarray(attribution, dtype=np.float64).ravel()
    inside = np.asarray(body, dtype=bool).ravel()
    n_body = int(inside.sum())
    min_voxels = max(1, round(0.001 * n_body)) if min_voxels is None else int(min_voxels)
    covered = ~inside  # outside the body counts as covered: regions only add body voxels
    out = np.zeros(attr.shape, np.float64)
    order = np.zeros(attr.shape, np.int32)
    remaining = {i: r for i, r in enumerate(regions)}
    gain = {}
    rank = 0
    while remaining:
        best, best_gain = None, -np.inf
        for key in list(remaining):
            fresh = remaining[key][~covered[remaining[key]]]
            if fresh.size < min_voxels:
                del remaining[key]
                gain.pop(key, None)
                continue
            if key not in gain:
                gain[key] = float(attr[fresh].mean())
            if gain[key] > best_gain:
                best, best_gain = key, gain[key]
        if best is None:
            break
        added = remaining.pop(best)
        added = added[~covered[added]]
        rank += 1
        out[added], order[added] = best_gain, rank
        covered[added] = True
        touched = np.zeros(attr.shape, bool)
        touched[added] = True
        for key in remaining:  # only regions overlapping the new voxels change their gain
            if key in gain and touched[remaining[key]].any():
                del gain[key]
    rest = np.flatnonzero(~covered)
    if rest.size:
        rank += 1
        out[rest], order[rest] = attr[rest].mean(), rank
    if inside.any():
        out[~inside] = min(0.0, float(out[inside].min()))
    shape = np.shape(attribution)
    return out.reshape(shape), order.reshape(shape)


def input_body(x, settings: EstimatorSettings) -> np.ndarray:
    """The body on the input grid: ``settings.body`` when given, else input above the air value
    (holes filled per slice, so lungs count), else everything."""
    from scipy import ndimage

    spatial = tuple(x.shape[2:])
    if settings.body is not None:
        body = np.asarray(settings.body, dtype=bool)
        if body.shape != spatial:
            raise InputError(f"body mask shape {body.shape} differs from the input grid {spatial}")
        return body
    image = x[0, 0].detach().cpu().numpy()
    air = settings.air_value if settings.air_value is not None else float(image.min())
    body = image > air + 1e-6
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    return body if body.any() else np.ones(spatial, bool)


def xrai3d(model, x, target, settings):
    """XRAI in 3D: SLIC supervoxels of the windowed CT inside the body, ranked greedily by the mean
    IG attribution of their not-yet-covered voxels; each voxel scored by the region it entered with."""
    import torch

    base = ig(model, x, target, settings)
    attr = base.map.sum(1)[0] if torch.is_tensor(base.map) and base.map.ndim == x.ndim else base.map
    attr = attr.detach().cpu().numpy()
    body = input_body(x, settings)
    spacing = settings.spacing_zyx or (1.0,) * (x.ndim - 2)
    regions = supervoxels(x[0, 0].detach().cpu().numpy(), spacing, body, settings.xrai_scales, settings.xrai_dilation)
    scores, order = xrai_rank(attr, regions, body)
    return Attribution(torch.as_tensor(scores, dtype=torch.float32, device=x.device),
                       info={**base.info, "regions": int(order.max()), "candidates": len(regions)})


# ---- CAMs as registry entries (explain() still computes all CAMs of a call in one pass) -------------
def _cam(method):
    def estimator(model, x, target, settings):
        from .cam import compute_cams

        result = compute_cams(model, x, methods=[method], class_indices=[target], layer=settings.layer)
        return Attribution(result.maps[method][0, 0], info={"layer": result.layer})

    estimator.__name__ = method
    return estimator


def _register_builtins():
    from .cam import METHODS

    cams = {"hirescam": "HiResCAM: Σ_k G_k ⊙ A_k at the target layer (feature resolution)",
            "gradcam": "Grad-CAM: Σ_k mean(G_k) A_k at the target layer (feature resolution)",
            "gradcampp": "Grad-CAM++ weights at the target layer (feature resolution)"}
    for name in METHODS:
        ESTIMATORS[name] = EstimatorInfo(name, "CAM", True, "1 forward + backward to the layer (all classes)",
                                         cams.get(name, name), _cam(name))
    table = [
        ("gradient", "gradient", False, "1 forward + 1 backward", gradient),
        ("inputxgradient", "gradient", False, "1 forward + 1 backward", inputxgradient),
        ("smoothgrad", "gradient", False, "samples × (forward + backward)", _noise_tunnel("smoothgrad")),
        ("smoothgrad_sq", "gradient", False, "samples × (forward + backward)", _noise_tunnel("smoothgrad_sq")),
        ("vargrad", "gradient", False, "samples × (forward + backward)", _noise_tunnel("vargrad")),
        ("ig", "gradient", False, "steps × (forward + backward)", ig),
        ("guided_gradcam", "gradient", True, "2 × (forward + backward)", guided_gradcam),
        ("occlusion", "perturbation", False, "1 forward per window position", occlusion),
        ("xrai3d", "perturbation", False, "IG + SLIC at each scale + greedy ranking", xrai3d),
    ]
    for name, family, layer, cost, fn in table:
        ESTIMATORS[name] = EstimatorInfo(name, family, layer, cost, (fn.__doc__ or name).split("\n")[0], fn)


_register_builtins()
