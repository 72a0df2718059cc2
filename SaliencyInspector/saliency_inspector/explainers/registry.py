"""The method registry: every saliency method — CAMs and estimators alike — is one :class:`Method`.

An entry says what the method is (name, display label, family, one-line description), what its
map means (``signed``: the sign says for/against the class; ``non-negative``: only ≥ 0 values, no
direction; ``magnitude``: the size of an effect, sign discarded), which transform ranks voxels by
importance (``relu`` for CAMs, ``abs`` for gradient-type maps as Captum's ``Saliency``, ``signed``
where the sign means for/against: IG, input × gradient, occlusion), the
:class:`EstimatorSettings` fields it uses with their defaults, its cost and whether it needs a
layer. Its callable is ``function(model, x, target, settings)``; a CAM entry also carries
``cam(A, G)``, a pure function of the target layer's activations and gradients, so
:func:`explain` runs every CAM of a call in one engine pass (:func:`cam.compute_cams`).

``explain``, ``compare``, the trust card, the reports, the Slicer module's method list and the
CLI's ``--method`` help are generated from :data:`METHODS`. Your own method joins the same way::

    import saliency_inspector as si
    def intensity(model, x):                          # any of (model, x), (model, x, target),
        return x[0].sum(0)                             # (model, x, target, settings)
    si.register_method("intensity", intensity)         # family "custom"
    si.register_method("gradcam_relu", lambda A, G: gradcam(A, G).clamp(min=0), cam=True)
    res = si.explain(clf, ct, methods=["hirescam", "intensity", "gradcam_relu"])
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field, fields
from typing import Callable

from ..errors import InputError
from . import cam as cams
from . import cam_family as family
from .cam_forward import ablationcam, fullgrad, scorecam
from . import attention as gates
from .captum_estimators import gradient, guided_gradcam, ig, inputxgradient, noise_tunnel, occlusion
from .settings import EstimatorSettings
from .xrai import xrai3d

FAMILIES = ("CAM", "gradient", "perturbation", "model", "custom")
FAMILY_LABELS = {"CAM": "CAMs", "gradient": "gradient-based", "perturbation": "perturbation",
                 "model": "self-explaining (the model's own maps)", "custom": "custom"}
MEANINGS = ("signed", "non-negative", "magnitude")
IMPORTANCES = ("relu", "abs", "signed")


@dataclass(frozen=True)
class Method:
    """A saliency method: what it is, what its map means, and how to run it (see module doc).

    ``function(model, x, target, settings)`` returns the raw map of class index ``target`` for the
    input ``x`` (1, C, *spatial): a tensor/array or an :class:`Attribution`. ``cam(A, G)``, for
    CAM entries only, maps activations and gradients (B, K, *spatial) to maps (B, *spatial).
    """

    name: str
    label: str
    family: str
    meaning: str
    importance: str
    description: str
    defaults: dict = field(default_factory=dict, compare=False)  # the EstimatorSettings fields it uses
    cost: str = "user-defined"
    needs_layer: bool = False
    function: Callable = field(default=None, repr=False, compare=False)
    cam: Callable | None = field(default=None, repr=False, compare=False)
    # available(classifier) -> bool: whether this model has the method (None: every model has it);
    # e.g. `attention` only for models with attention gates (the Slicer list uses it)
    available: Callable | None = field(default=None, repr=False, compare=False)

    def available_for(self, classifier) -> bool:
        """Whether ``classifier`` can give this method's map (always, unless the entry says otherwise)."""
        return self.available is None or bool(self.available(classifier))

    @property
    def is_cam(self) -> bool:
        """True for a CAM entry: computed from (A, G) in the one engine pass."""
        return self.cam is not None


METHODS: dict = {}  # name -> Method, in registration order (the built-in CAMs first)
ESTIMATORS = METHODS  # the registry's former name, kept for callers of the estimator API


def _defaults(*names) -> dict:
    """The defaults of the EstimatorSettings fields ``names``."""
    known = {f.name: f.default for f in fields(EstimatorSettings)}
    return {n: known[n] for n in names}


def _first_line(function, fallback: str) -> str:
    doc = (getattr(function, "__doc__", "") or "").strip()
    return doc.split("\n")[0].strip() if doc else fallback


def _adapt(function):
    """Call ``function`` with as many of (model, x, target, settings) as it takes."""
    try:
        params = inspect.signature(function).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        n = 4 if any(p.kind == p.VAR_POSITIONAL for p in params) else min(4, len(positional))
    except (TypeError, ValueError):  # builtins without a signature
        n = 4
    if n < 2:
        raise InputError(f"estimator {getattr(function, '__name__', function)!r} must take at least (model, x)")
    if n == 4:
        return function
    return lambda model, x, target, settings: function(*(model, x, target, settings)[:n])


def _make(name, function, *, label, family, meaning, importance, description, cam, needs_layer, cost,
          defaults) -> Method:
    """A Method; a CAM's ``function`` is its cam(A, G), run for one class by the engine."""
    return Method(name=name, label=label or name, family=family, meaning=meaning, importance=importance,
                  description=description or _first_line(function, name), defaults=defaults, cost=cost,
                  needs_layer=needs_layer or cam, function=cams.cam_estimator(name) if cam else _adapt(function),
                  cam=function if cam else None)


def _checked(name, function, family, meaning, importance) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InputError("a method needs a non-empty name")
    if not callable(function):
        raise InputError(f"method {name!r}: {function!r} is not callable")
    for what, value, allowed in (("family", family, FAMILIES), ("meaning", meaning, MEANINGS),
                                 ("importance", importance, IMPORTANCES)):
        if value not in allowed:
            raise InputError(f"method {name!r}: {what} {value!r} is not one of {', '.join(allowed)}")


def register_method(name: str, function: Callable, *, label: str | None = None, family: str = "custom",
                    meaning: str = "signed", importance: str = "signed", description: str = "",
                    cam: bool = False, needs_layer: bool = False, cost: str = "user-defined",
                    replace: bool = False) -> Method:
    """Make ``function`` available as method ``name`` in :func:`explain`, ``compare``, ``trust``,
    the reports, the Slicer module and the CLI; returns the registered :class:`Method`.

    An estimator's ``function`` takes ``(model, x)``, ``(model, x, target)`` or ``(model, x,
    target, settings)`` (``x``: the model-input tensor (1, C, *spatial) on the model's device;
    ``target``: class index; ``settings``: :class:`EstimatorSettings`) and returns a raw map: a
    tensor or array of shape (*spatial), (C, *spatial) or (1, C, *spatial) on the input grid
    (channels are summed), or an :class:`Attribution`. With ``cam=True`` it is a CAM: a pure
    function ``(A, G) -> map`` of the target layer's activations and gradients (B, K, *spatial)
    returning (B, *spatial), run in the same single pass as the built-in CAMs. ``label``: display
    name (default: ``name``); ``meaning``/``importance``: see the module doc; ``replace``: replace
    an existing entry of that name.
    """
    _checked(name, function, family, meaning, importance)
    if name in METHODS and not replace:
        raise InputError(f"method {name!r} exists already; choose another name (or replace=True)")
    METHODS[name] = _make(name, function, label=label, family=family, meaning=meaning, importance=importance,
                          description=description, cam=cam, needs_layer=needs_layer, cost=cost,
                          defaults=_defaults("layer") if cam else {})
    return METHODS[name]


_OLD_FORMS = {"attribution": ("family", "needs_layer", "cost", "meaning", "replace_existing"),
              "estimators": ("description", "overwrite")}
_OLD_NAMES = {"meaning": "description", "replace_existing": "replace", "overwrite": "replace"}


def register_estimator(name: str, function: Callable, *args, **kwargs) -> Method:
    """Deprecated: use :func:`register_method`. Takes both former signatures,
    ``(name, function, family="custom", needs_layer=False, cost=..., meaning="", replace_existing=False)``
    and ``(name, function, description="", overwrite=False)``: a third positional argument that is a
    family name is the family, anything else the description."""
    warnings.warn("register_estimator is deprecated; use register_method (same registry, keyword options)",
                  DeprecationWarning, stacklevel=2)
    form = _OLD_FORMS["attribution" if args and args[0] in FAMILIES else "estimators"]
    if len(args) > len(form):
        raise TypeError(f"register_estimator takes at most {2 + len(form)} positional arguments")
    options = dict(zip(form, args))
    twice = sorted(set(options) & set(kwargs))
    if twice:
        raise TypeError(f"register_estimator got {', '.join(twice)} twice")
    options.update(kwargs)
    options = {_OLD_NAMES.get(k, k): v for k, v in options.items()}
    return register_method(name, function, **options)


def unregister_method(name: str) -> None:
    """Forget a user-registered method (family "custom"; no error when it is not there; built-ins stay)."""
    entry = METHODS.get(name)
    if entry is not None and entry.family == "custom":
        del METHODS[name]


def method_names() -> list:
    """Every method name :func:`explain` accepts, in registry order (the built-in CAMs first)."""
    return list(METHODS)


def method_label(name: str) -> str:
    """The display name of method ``name`` ('hirescam' -> 'HiResCAM'); an unknown name as it is."""
    return METHODS[name].label if name in METHODS else name


def get_method(method) -> Method:
    """The :class:`Method` of a name (InputError naming every method when unknown); a callable
    becomes a one-off custom estimator under its ``__name__`` (not registered)."""
    if isinstance(method, Method):
        return method
    if callable(method) and not isinstance(method, str):
        return _make(getattr(method, "__name__", "custom"), method, label=None, family="custom", meaning="signed",
                     importance="signed", description="", cam=False, needs_layer=False, cost="user-defined",
                     defaults={})
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    raise InputError(f"unknown method {method!r}; choose from {', '.join(method_names())}")


def method_in_file_name(name: str):
    """The registered method a map file named ``<method>_<class>.nrrd`` (as ``Explanation.save``
    writes it) was made with: the longest method name followed by ``_``; None when none matches."""
    from pathlib import PurePath

    stem = PurePath(str(name)).name
    matches = [m for m in METHODS if stem.startswith(m + "_")]
    return max(matches, key=len) if matches else None


def _register_builtins() -> None:
    cam_cost = "1 forward + backward to the layer (all classes)"
    entries = [  # name, label, family, meaning, importance, callable, settings used, cost, description
        ("hirescam", "HiResCAM", "CAM", "signed", "relu", cams.hirescam, ("layer",), cam_cost,
         "HiResCAM: Σ_k G_k ⊙ A_k at the target layer (feature resolution)"),
        ("gradcam", "Grad-CAM", "CAM", "signed", "relu", cams.gradcam, ("layer",), cam_cost,
         "Grad-CAM: Σ_k mean(G_k) A_k at the target layer (feature resolution)"),
        ("gradcampp", "Grad-CAM++", "CAM", "signed", "relu", cams.gradcampp, ("layer",), cam_cost,
         "Grad-CAM++ weights at the target layer (feature resolution)"),
        # pytorch-grad-cam's family (explainers/cam_family.py): all classes from the same pass
        ("gradcam_elementwise", "Grad-CAM element-wise", "CAM", "non-negative", "relu", family.gradcam_elementwise,
         ("layer", "eigen_smooth", "aug_smooth"), cam_cost, "Σ_k ReLU(G_k ⊙ A_k) at the target layer"),
        ("xgradcam", "XGrad-CAM", "CAM", "signed", "relu", family.xgradcam, ("layer", "eigen_smooth", "aug_smooth"),
         cam_cost, "Σ_k (Σ G_k A_k / Σ A_k) A_k at the target layer"),
        ("layercam", "Layer-CAM", "CAM", "signed", "relu", family.layercam, ("layer", "eigen_smooth", "aug_smooth"),
         cam_cost, "Σ_k ReLU(G_k) ⊙ A_k at the target layer (non-negative after a ReLU)"),
        ("eigencam", "Eigen-CAM", "CAM", "signed", "relu", family.eigencam, ("layer", "aug_smooth"),
         "1 forward (no gradient; the same map for every class)",
         "first principal component of the activations (class-independent)"),
        ("eigengradcam", "Eigen-Grad-CAM", "CAM", "signed", "relu", family.eigengradcam, ("layer", "aug_smooth"),
         cam_cost, "first principal component of G ⊙ A"),
        ("kpcacam", "KPCA-CAM", "CAM", "signed", "relu", family.kpcacam,
         ("layer", "aug_smooth", "kpca_kernel", "kpca_gamma"), "1 forward + a voxels² kernel (same map for every class)",
         "first kernel-PCA component of the activations (class-independent)"),
        ("finercam", "Finer-CAM", "CAM", "signed", "relu", family.finercam,
         ("layer", "eigen_smooth", "aug_smooth", "finer_alpha", "finer_compare"),
         "1 forward + backward to the layer per compared class",
         "Grad-CAM of y_c minus its nearest classes (what tells c apart from look-alikes)"),
        ("shapleycam", "Shapley-CAM", "CAM", "signed", "relu", family.shapleycam, ("layer", "eigen_smooth", "aug_smooth"),
         "1 forward + a double backward to the layer per class",
         "Σ_k mean(G_k − ½ H·A)_k A_k: gradient and Hessian-vector product"),
        ("fem", "FEM", "CAM", "non-negative", "relu", family.fem, ("layer", "aug_smooth", "fem_k"),
         "1 forward (no gradient; the same map for every class)",
         "activations weighted by the share of voxels above mean + k·std (class-independent)"),
        ("scorecam", "Score-CAM", "CAM", "non-negative", "relu", scorecam, ("layer", "memory_gb"),
         "1 forward per channel of the layer (all classes)", "Σ_k softmax_k(y_c(x ⊙ A_k↑)) A_k"),
        ("ablationcam", "Ablation-CAM", "CAM", "signed", "relu", ablationcam, ("layer", "memory_gb"),
         "1 forward per channel of the layer (all classes)", "Σ_k (y_c − y_c without channel k)/y_c · A_k"),
        ("fullgrad", "FullGrad", "gradient", "non-negative", "abs", fullgrad, (), "1 forward + 1 backward per class",
         "|x ⊙ ∂y/∂x| + Σ over conv/BatchNorm biases of |b ⊙ ∂y/∂z|, each scaled and resampled to the input"),
        ("gradient", "Gradient", "gradient", "signed", "abs", gradient, (), "1 forward + 1 backward",
         "∂y_c/∂x, the signed gradient (Captum Saliency, abs=False)"),
        ("inputxgradient", "Input × Gradient", "gradient", "signed", "signed", inputxgradient, (),
         "1 forward + 1 backward", "x ⊙ ∂y_c/∂x (Captum InputXGradient)"),
        ("smoothgrad", "SmoothGrad", "gradient", "signed", "abs", noise_tunnel("smoothgrad"),
         ("noise", "samples", "seed", "memory_gb"), "samples × (forward + backward)",
         "mean gradient over noisy copies of the input (NoiseTunnel)"),
        ("smoothgrad_sq", "SmoothGrad²", "gradient", "magnitude", "abs", noise_tunnel("smoothgrad_sq"),
         ("noise", "samples", "seed", "memory_gb"), "samples × (forward + backward)",
         "mean squared gradient over noisy copies (NoiseTunnel)"),
        ("vargrad", "VarGrad", "gradient", "non-negative", "abs", noise_tunnel("vargrad"),
         ("noise", "samples", "seed", "memory_gb"), "samples × (forward + backward)",
         "variance of the gradient over noisy copies (NoiseTunnel)"),
        ("ig", "Integrated Gradients", "gradient", "signed", "signed", ig,
         ("steps", "baseline", "blur_mm", "memory_gb"), "steps × (forward + backward)",
         "Integrated Gradients from the baseline to x (Captum, Gauss–Legendre steps), with its completeness error"),
        ("guided_gradcam", "Guided Grad-CAM", "gradient", "signed", "abs", guided_gradcam, ("layer",),
         "2 × (forward + backward)",
         "Guided backprop × Grad-CAM (Captum GuidedGradCam); only for networks whose activations are nn.ReLU modules"),
        ("occlusion", "Occlusion", "perturbation", "signed", "signed", occlusion,
         ("occlusion_window_mm", "occlusion_stride_mm", "baseline", "blur_mm", "memory_gb"),
         "1 forward per window position",
         "drop in the class score when a 3D window (mm) is replaced by the baseline (Captum Occlusion)"),
        ("xrai3d", "XRAI-3D", "perturbation", "signed", "signed", xrai3d,
         ("steps", "baseline", "blur_mm", "memory_gb", "xrai_scales", "xrai_dilation"),
         "IG + SLIC at each scale + greedy ranking",
         "SLIC supervoxels ranked greedily by their mean IG attribution (XRAI in 3D)"),
    ]
    extra_forwards = ("scorecam", "ablationcam")  # CAMs, but estimators: they need more forward passes
    for name, label, kind, meaning, importance, function, used, cost, description in entries:
        cam = kind == "CAM" and name not in extra_forwards
        METHODS[name] = _make(name, function, label=label, family=kind, meaning=meaning, importance=importance,
                              description=description, cam=cam,
                              needs_layer=name in ("guided_gradcam", *extra_forwards), cost=cost,
                              defaults=_defaults(*used))

    # the model's own maps (explainers/attention.py): gate coefficients read by forward hooks
    cost = "1 forward pass (hooks on the gates)"
    METHODS["attention"] = Method(
        name="attention", label="Attention gates", family="model", meaning="non-negative", importance="relu",
        description="the mean of the model's attention-gate coefficients (same map for every class)",
        cost=cost, function=gates.attention, available=gates.has_gates)
    for i in range(1, gates.MAX_GATE_MAPS + 1):
        METHODS[f"attention_gate{i}"] = Method(
            name=f"attention_gate{i}", label=f"Attention gate {i}", family="model", meaning="non-negative",
            importance="relu", description=f"the coefficients of attention gate {i} (card or module order)",
            cost=cost, function=gates.gate_method(i), available=lambda c, i=i: gates.gate_count(c) >= i)


_register_builtins()
