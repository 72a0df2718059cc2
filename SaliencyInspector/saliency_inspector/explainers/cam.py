"""Class activation maps (HiResCAM, Grad-CAM, Grad-CAM++) for 2D and 3D networks, all classes at once.

The engine captures the target layer's activations A once, then takes the gradient G = ∂y_c/∂A
of every requested class from the same forward pass with ``torch.autograd.grad(y_c, A,
retain_graph=True)``: the backward pass stops at the target layer. The part of the network before
the target layer runs without recording a graph (parameters are temporarily set to
``requires_grad=False`` and A is detached), so the whole computation costs about one plain forward
pass plus the (small) backward from the logits to A, per class.

Each method is a small pure function of (A, G), referenced by its entry in the method registry
(:data:`registry.METHODS`, where a CAM of your own joins with ``register_method(..., cam=True)``);
maps are kept raw and signed at feature resolution. ReLU and normalisation are display choices
(:func:`for_display`). One routine (:func:`cam_pass`) serves both the no-grad engine
(:func:`compute_cams`) and the differentiable maps of the mask loss (:func:`differentiable_cams`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import InputError
from .settings import Attribution


# ---- methods: pure functions of A (B, K, *spatial) and G (B, K, *spatial) -> (B, *spatial) ---------
def hirescam(A, G):
    """HiResCAM (Draelos & Carin): Σ_k G_k ⊙ A_k, element-wise, no averaging (raw, signed)."""
    return (G * A).sum(1)


def gradcam(A, G):
    """Grad-CAM: Σ_k mean_spatial(G_k) · A_k (raw, signed; the paper's ReLU is for display)."""
    weights = G.flatten(2).mean(2)
    return (weights.view(*weights.shape, *[1] * (A.ndim - 2)) * A).sum(1)


def gradcampp(A, G):
    """Grad-CAM++ (Chattopadhyay et al.), as MONAI's ``GradCAMpp`` computes it, without the positive
    per-class factor exp(y_c) (it only scales the map; dropping it avoids overflow for large logits).

    α = G² / (2G² + Σ_spatial(A G³)); w_k = Σ_spatial α ReLU(G); map = Σ_k w_k A_k.
    """
    b, k = G.shape[:2]
    ones = [1] * (A.ndim - 2)
    g2 = G.pow(2)
    denom = g2 * 2 + (A * G.pow(3)).flatten(2).sum(2).view(b, k, *ones)
    denom = denom.where(denom != 0.0, denom.new_ones(()))
    alpha = g2 / (denom + 1e-7)
    weights = (alpha * G.clamp(min=0)).flatten(2).sum(2).view(b, k, *ones)
    return (weights * A).sum(1)


def for_display(raw):
    """Display map: ReLU of the raw map scaled to [0, 1] by its maximum (all zeros stay zeros)."""
    pos = raw.clamp(min=0) if hasattr(raw, "clamp") else raw.clip(min=0)
    top = pos.max()
    return pos / top if float(top) > 0 else pos


# ---- hooks --------------------------------------------------------------------------------------
@contextmanager
def capture(module, layer_name: str, in_graph: bool = False):
    """Capture the output A of ``module.<layer_name>``; yields a dict (``"A"``, ``"calls"``).

    ``in_graph=False`` (explaining): the hook detaches the layer's output and marks it
    ``requires_grad`` (so the backward pass stops there), and parameters are frozen for the
    duration so that no graph is recorded before the layer. ``in_graph=True`` (training): nothing
    is detached or frozen, so maps built from A and ∂y/∂A stay differentiable with respect to every
    weight, before the layer and after it.

    Either way the rest of the network gets a *clone* of A. The clone matters for in-place ReLU
    (MONAI's default): a following ``ReLU(inplace=True)`` would otherwise overwrite A with ReLU(A)
    and the map would silently belong to the next layer (and autograd would refuse the second
    derivative). MONAI instead sets ``inplace=False`` on the hooked module only, which does not
    protect against the next one. All state is restored and the hook removed on every exit path,
    errors included.
    """
    import torch

    layer = get_layer(module, layer_name)
    store = {"calls": 0}

    def hook(_module, _inputs, output):
        if not torch.is_tensor(output):
            raise InputError(f"layer {layer_name!r}: its output is a {type(output).__name__}, not a "
                             "tensor; choose a layer that outputs a feature map")
        store["calls"] += 1
        store["A"] = output if in_graph else output.detach().requires_grad_(True)
        return store["A"].clone()

    frozen = [] if in_graph else [p for p in module.parameters() if p.requires_grad]
    handle = layer.register_forward_hook(hook)
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield store
    finally:
        handle.remove()
        for p in frozen:
            p.requires_grad_(True)


def get_layer(module, layer_name: str):
    """The submodule called ``layer_name``; InputError listing candidates when there is none."""
    modules = dict(module.named_modules())
    if layer_name in modules and layer_name != "":
        return modules[layer_name]
    names = [n for n in modules if n]
    tail = ", ".join(names[-12:])
    raise InputError(f"target layer {layer_name!r} does not exist in {type(module).__name__}; "
                     f"module names include (last {min(12, len(names))} of {len(names)}): {tail}")


# ---- automatic target layer ---------------------------------------------------------------------
def probe_layers(module, x) -> list:
    """One no-grad forward recording every submodule's output: list of (name, shape, calls) in the
    order the modules finished (containers after their children)."""
    import torch

    order, calls, handles = {}, {}, []

    def make_hook(name):
        def hook(_m, _i, output):
            calls[name] = calls.get(name, 0) + 1
            shape = tuple(output.shape) if torch.is_tensor(output) else None
            order.pop(name, None)
            order[name] = shape
        return hook

    try:
        for name, sub in module.named_modules():
            if name:
                handles.append(sub.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return [(name, shape, calls[name]) for name, shape in order.items()]


def _is_spatial(shape, x_shape) -> bool:
    if shape is None or len(shape) != len(x_shape) or shape[0] != x_shape[0]:
        return False
    n = 1
    for s in shape[2:]:
        n *= s
    return n > 1


def find_target_layer(module, x) -> str:
    """The last module, in execution order, with a spatial output (B, C, *spatial) of more than
    one voxel that runs once per forward. InputError when there is none, or when the network goes
    on to work on tokens (B, N, C) after it (a ViT: its only spatial map is the patch embedding)."""
    records = probe_layers(module, x)
    spatial = [i for i, (_n, shape, calls) in enumerate(records) if calls == 1 and _is_spatial(shape, x.shape)]
    if not spatial:
        raise InputError(f"{type(module).__name__}: no layer outputs a spatial feature map "
                         f"(B, C, {', '.join('…' * 1 for _ in x.shape[2:])}); CAM methods need one. "
                         "Use a gradient-based attribution method for this network")
    last = spatial[-1]
    tokens = [n for n, shape, _c in records[last + 1:] if shape is not None and len(shape) == 3
              and shape[0] == x.shape[0] and shape[1] > 1]
    if tokens:
        raise InputError(f"{type(module).__name__}: works on tokens after {records[last][0]!r} (e.g. "
                         f"{tokens[0]!r}); like a ViT it has no spatial feature map near the output, so "
                         "CAM methods do not apply. Use a gradient-based attribution method, or name a "
                         "layer with --layer if you know what it means")
    return records[last][0]


# ---- engine -------------------------------------------------------------------------------------
@dataclass
class CamResult:
    """Raw maps at feature resolution and what they were computed from."""

    maps: dict  # method -> tensor (B, C, *spatial): raw, signed, one map per requested class
    logits: object  # tensor (B, K), detached
    layer: str
    class_indices: list
    activation_shape: tuple


def cam_functions(methods) -> dict:
    """``{name: cam(A, G)}`` of the CAM entries ``methods`` (names) in the method registry;
    InputError naming the CAMs when one is not a CAM entry."""
    from .registry import METHODS  # the registry refers to this module's CAM functions

    cams = {name: m.cam for name, m in METHODS.items() if m.cam is not None}
    unknown = [m for m in methods if m not in cams]
    if unknown or not methods:
        raise InputError(f"unknown CAM method(s) {unknown or list(methods)}; choose from {', '.join(cams)}")
    return {m: cams[m] for m in methods}


def cam_pass(module, x, layer: str, cams: dict, class_indices=None, differentiable: bool = False) -> CamResult:
    """The CAM routine: one forward pass, G = ∂y_c/∂A per class, every ``cams`` function of (A, G).

    ``cams``: name -> cam(A, G); ``class_indices``: list of ints (None: all outputs).
    ``differentiable=False``: A is a detached leaf (:func:`capture`), the maps and logits come back
    detached. ``differentiable=True``: G is taken with ``create_graph=True`` and A stays in the
    graph, so a loss on the maps trains the network (Draelos's mask loss): its gradient reaches
    the weights after the layer (through G) and before it (through A); the logits stay in the graph.
    """
    import torch

    with capture(module, layer, in_graph=differentiable) as store, torch.enable_grad():
        logits = module(x)
        if "A" not in store:
            raise InputError(f"target layer {layer!r} did not run in the forward pass; choose another")
        if store["calls"] > 1:
            raise InputError(f"target layer {layer!r} runs {store['calls']} times per forward pass (a shared "
                             "module); choose a layer that runs once, e.g. the block that contains it")
        A = store["A"]
        if A.ndim != x.ndim or A.shape[0] != x.shape[0]:
            raise InputError(f"target layer {layer!r} outputs shape {tuple(A.shape)}, not a spatial "
                             f"feature map (B, C, {', '.join('…' for _ in x.shape[2:])}); choose another layer")
        if not torch.is_tensor(logits) or logits.ndim != 2:
            raise InputError(f"the model's output has shape {tuple(getattr(logits, 'shape', ()))}; "
                             "a classifier must return logits (B, K)")
        if class_indices is None:
            class_indices = list(range(logits.shape[1]))
        bad = [c for c in class_indices if not 0 <= c < logits.shape[1]]
        if bad:
            raise InputError(f"class index {bad[0]} out of range: the model has {logits.shape[1]} outputs")
        if differentiable and not A.requires_grad:
            raise InputError(f"layer {layer!r} does not depend on trainable weights; choose a later layer")
        if not logits.requires_grad:
            raise InputError(f"the logits do not depend on layer {layer!r}; choose a layer on the path "
                             "to the output")
        grads = []
        for n, c in enumerate(class_indices):
            # Summing over the batch gives each sample its own gradient (samples do not interact in
            # eval; in training, no layer after ``layer`` may mix samples, e.g. BatchNorm in the head).
            (g,) = torch.autograd.grad(logits[:, c].sum(), A, create_graph=differentiable,
                                       retain_graph=differentiable or n < len(class_indices) - 1)
            grads.append(g)
        with torch.set_grad_enabled(differentiable):
            maps = {m: torch.stack([cam(A, g) for g in grads], dim=1) for m, cam in cams.items()}
    return CamResult(maps=maps, logits=logits if differentiable else logits.detach(), layer=layer,
                     class_indices=list(class_indices), activation_shape=tuple(A.shape))


def compute_cams(module, x, methods=("hirescam", "gradcam"), class_indices=None, layer=None) -> CamResult:
    """All requested CAM maps for all requested classes from one forward pass (no graph kept).

    ``module``: an eval-mode network; ``x``: input (B, C, *spatial) on its device; ``methods``:
    names of CAM entries of the method registry; ``class_indices``: list of ints (None: all
    outputs); ``layer``: module name (None: :func:`find_target_layer`).
    """
    cams = cam_functions(methods)
    if layer is None:
        layer = find_target_layer(module, x)
    return cam_pass(module, x, layer, cams, class_indices)


def differentiable_cams(module, x, layer: str, methods=("hirescam",), class_indices=None):
    """(logits, {method: maps (B, C, *spatial)}) with the maps part of the autograd graph (training).

    The same routine and checks as :func:`compute_cams` (:func:`cam_pass` with
    ``differentiable=True``); costs one extra backward from the logits to the layer per class.
    ``module`` may be in training mode; the batch sum used for G assumes no layer *after*
    ``layer`` mixes samples (no BatchNorm in the head).
    """
    result = cam_pass(module, x, layer, cam_functions(methods), class_indices, differentiable=True)
    return result.logits, result.maps


def cam_estimator(name: str):
    """CAM ``name`` as an estimator ``(model, x, target, settings) -> Attribution``: the engine for
    one class (``explain`` runs all CAMs of a call in one pass instead); the map is on the feature grid."""

    def estimator(model, x, target, settings):
        result = compute_cams(model, x, methods=[name], class_indices=[int(target)], layer=settings.layer)
        return Attribution(result.maps[name][0, 0], info={"layer": result.layer}, logits=result.logits)

    estimator.__name__ = name
    return estimator
