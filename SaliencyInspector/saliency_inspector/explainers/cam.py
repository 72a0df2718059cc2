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
from .cam_family import CamContext, gradcam_terms, hirescam_terms, projection
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


def _gradcampp_terms(A, G):
    """Grad-CAM++'s per-channel terms w_k A_k (for eigen_smooth)."""
    b, k = G.shape[:2]
    ones = [1] * (A.ndim - 2)
    g2 = G.pow(2)
    denom = g2 * 2 + (A * G.pow(3)).flatten(2).sum(2).view(b, k, *ones)
    denom = denom.where(denom != 0.0, denom.new_ones(()))
    weights = (g2 / (denom + 1e-7) * G.clamp(min=0)).flatten(2).sum(2).view(b, k, *ones)
    return weights * A


hirescam.terms, gradcam.terms, gradcampp.terms = hirescam_terms, gradcam_terms, _gradcampp_terms


def for_display(raw):
    """Display map: ReLU of the raw map scaled to [0, 1] by its maximum (all zeros stay zeros)."""
    pos = raw.clamp(min=0) if hasattr(raw, "clamp") else raw.clip(min=0)
    top = pos.max()
    return pos / top if float(top) > 0 else pos


# ---- hooks --------------------------------------------------------------------------------------
@contextmanager
def capture(module, layer_name: str, in_graph: bool = False, shared: dict | None = None):
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
        # With several layers (``shared``) only the first to run is cut from the graph before it; the
        # later ones stay in the graph, so ∂y/∂A reaches the earlier layer through them.
        cut = not in_graph and not (shared is not None and shared.get("cut"))
        store["A"] = output.detach().requires_grad_(True) if cut else output
        if shared is not None and not in_graph:
            shared["cut"] = True
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
    notes: list = None  # how layers were combined / maps smoothed (for predictions.json)


def cam_functions(methods) -> dict:
    """``{name: cam(A, G)}`` of the CAM entries ``methods`` (names) in the method registry;
    InputError naming the CAMs when one is not a CAM entry."""
    from .registry import METHODS  # the registry refers to this module's CAM functions

    cams = {name: m.cam for name, m in METHODS.items() if m.cam is not None}
    unknown = [m for m in methods if m not in cams]
    if unknown or not methods:
        raise InputError(f"unknown CAM method(s) {unknown or list(methods)}; choose from {', '.join(cams)}")
    return {m: cams[m] for m in methods}


def _checked_activation(store, layer, x):
    if "A" not in store:
        raise InputError(f"target layer {layer!r} did not run in the forward pass; choose another")
    if store["calls"] > 1:
        raise InputError(f"target layer {layer!r} runs {store['calls']} times per forward pass (a shared "
                         "module); choose a layer that runs once, e.g. the block that contains it")
    A = store["A"]
    if A.ndim != x.ndim or A.shape[0] != x.shape[0]:
        raise InputError(f"target layer {layer!r} outputs shape {tuple(A.shape)}, not a spatial "
                         f"feature map (B, C, {', '.join('…' for _ in x.shape[2:])}); choose another layer")
    return A


def _apply(cam, A, G, ctx, eigen_smooth: bool):
    """One CAM function on one layer and class: its terms' projection (eigen_smooth), with its
    context, or plainly (A, G)."""
    if eigen_smooth and hasattr(cam, "terms"):
        return projection(cam.terms(A, G))
    return cam(A, G, ctx) if getattr(cam, "context", False) else cam(A, G)


def cam_pass(module, x, layer, cams: dict, class_indices=None, differentiable: bool = False,
             settings=None) -> CamResult:
    """The CAM routine: one forward pass, G = ∂y_c/∂A per class, every ``cams`` function of (A, G).

    ``layer``: a module name, or a list of names (their maps combined: :func:`combine_layers`);
    ``cams``: name -> cam(A, G); ``class_indices``: list of ints (None: all outputs); ``settings``:
    EstimatorSettings (``eigen_smooth`` and the context CAMs' knobs) or None.
    ``differentiable=False``: A is a detached leaf (:func:`capture`), the maps and logits come back
    detached. ``differentiable=True``: G is taken with ``create_graph=True`` and A stays in the
    graph, so a loss on the maps trains the network (Draelos's mask loss): its gradient reaches
    the weights after the layer (through G) and before it (through A); the logits stay in the graph.
    Gradients are taken lazily, once per class, for all layers at once: class-independent CAMs
    (EigenCAM, KPCA-CAM, FEM) take none and are computed once per layer.
    """
    import torch
    from contextlib import ExitStack

    layers = [layer] if isinstance(layer, str) else list(layer)
    if differentiable and len(layers) != 1:
        raise InputError("the mask loss uses one target layer")
    eigen_smooth = bool(getattr(settings, "eigen_smooth", False))
    need_hvp = any(getattr(f, "needs_hvp", False) for f in cams.values())
    with ExitStack() as stack, torch.enable_grad():
        shared = {} if len(layers) > 1 else None
        stores = [stack.enter_context(capture(module, name, in_graph=differentiable, shared=shared)) for name in layers]
        logits = module(x)
        As = [_checked_activation(store, name, x) for store, name in zip(stores, layers)]
        if not torch.is_tensor(logits) or logits.ndim != 2:
            raise InputError(f"the model's output has shape {tuple(getattr(logits, 'shape', ()))}; "
                             "a classifier must return logits (B, K)")
        if class_indices is None:
            class_indices = list(range(logits.shape[1]))
        bad = [c for c in class_indices if not 0 <= c < logits.shape[1]]
        if bad:
            raise InputError(f"class index {bad[0]} out of range: the model has {logits.shape[1]} outputs")
        if differentiable and not As[0].requires_grad:
            raise InputError(f"layer {layers[0]!r} does not depend on trainable weights; choose a later layer")
        if not logits.requires_grad:
            raise InputError(f"the logits do not depend on layer {layers[0]!r}; choose a layer on the path "
                             "to the output")
        grads = {}

        def grads_of(c):
            # Summing over the batch gives each sample its own gradient (samples do not interact in
            # eval; in training, no layer after ``layer`` may mix samples, e.g. BatchNorm in the head).
            if c not in grads:
                with torch.enable_grad():  # asked lazily, maybe from inside the maps' no-grad block
                    grads[c] = torch.autograd.grad(logits[:, c].sum(), As, allow_unused=True, retain_graph=True,
                                                   create_graph=differentiable or need_hvp)
                grads[c] = tuple(torch.zeros_like(a) if g is None else g for g, a in zip(grads[c], As))
            return grads[c]

        def hvp_of(i, c):
            g = grads_of(c)[i]
            if not g.requires_grad:  # y_c is linear in A: H = 0
                return torch.zeros_like(g)
            (h,) = torch.autograd.grad(g, As[i], grad_outputs=As[i].detach(), retain_graph=True, allow_unused=True)
            return torch.zeros_like(g) if h is None else h

        per_layer = []
        with torch.set_grad_enabled(differentiable or need_hvp or any(getattr(f, "context", False)
                                                                      for f in cams.values())):
            for i, A in enumerate(As):
                maps = {}
                for m, cam in cams.items():
                    def ctx(c, i=i):
                        return CamContext(logits=logits.detach(), index=c, settings=settings,
                                          grad=lambda k: grads_of(k)[i].detach() if not differentiable
                                          else grads_of(k)[i], hvp=lambda: hvp_of(i, c).detach())
                    if getattr(cam, "class_independent", False):
                        one = _apply(cam, A.detach(), None, ctx(class_indices[0]), False)
                        maps[m] = one.unsqueeze(1).expand(-1, len(class_indices), *one.shape[1:])
                    else:
                        maps[m] = torch.stack([_apply(cam, A, grads_of(c)[i] if differentiable
                                                      else grads_of(c)[i].detach(), ctx(c), eigen_smooth)
                                               for c in class_indices], dim=1)
                    if not differentiable:
                        maps[m] = maps[m].detach()
                per_layer.append(maps)
    notes = ["eigen_smooth: channel sums replaced by their first principal component"] if eigen_smooth else []
    if len(layers) == 1:
        maps, shape = per_layer[0], tuple(As[0].shape)
    else:
        maps, shape, note = combine_layers(per_layer, layers, [tuple(a.shape) for a in As])
        notes.append(note)
    return CamResult(maps=maps, logits=logits if differentiable else logits.detach(), layer="+".join(layers),
                     class_indices=list(class_indices), activation_shape=shape, notes=notes)


def combine_layers(per_layer: list, layers: list, shapes: list):
    """Maps of several layers as one: each layer's map divided by its largest |value| (per sample
    and class; sign kept), resampled (linear, cell-centred) to the finest layer's grid, averaged.
    pytorch-grad-cam (``base_cam.py`` aggregate_multi_layers) ReLUs and min-max scales each layer
    first; keeping the sign here leaves ReLU to the display. Returns (maps, shape, note)."""
    import torch.nn.functional as F

    finest = max(range(len(shapes)), key=lambda i: _voxels(shapes[i][2:]))
    size = shapes[finest][2:]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    out = {}
    for m in per_layer[0]:
        total = 0
        for maps in per_layer:
            v = maps[m]
            top = v.abs().flatten(2).amax(2).clamp(min=1e-30).view(*v.shape[:2], *[1] * len(size))
            v = v / top
            if tuple(v.shape[2:]) != tuple(size):
                v = F.interpolate(v, size=size, mode=mode, align_corners=False)
            total = total + v
        out[m] = total / len(per_layer)
    note = (f"layers {', '.join(layers)} combined: each map divided by its max |value|, resampled "
            f"(linear) to the finest grid ({layers[finest]}, {'×'.join(map(str, size))}) and averaged")
    return out, shapes[finest], note


def _voxels(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def compute_cams(module, x, methods=("hirescam", "gradcam"), class_indices=None, layer=None,
                 settings=None) -> CamResult:
    """All requested CAM maps for all requested classes from one forward pass (no graph kept).

    ``module``: an eval-mode network; ``x``: input (B, C, *spatial) on its device; ``methods``:
    names of CAM entries of the method registry; ``class_indices``: list of ints (None: all
    outputs); ``layer``: module name or list of names (None: :func:`find_target_layer`);
    ``settings``: EstimatorSettings (``eigen_smooth``, ``aug_smooth`` and the CAMs' knobs) or None.
    """
    cams = cam_functions(methods)
    if layer is None:
        layer = find_target_layer(module, x)
    if getattr(settings, "aug_smooth", False):
        return aug_smooth(module, x, layer, cams, class_indices, settings)
    return cam_pass(module, x, layer, cams, class_indices, settings=settings)


def grid_transforms(spatial: tuple) -> list:
    """Input transforms that are exact permutations of the voxel grid, with their inverses on a map:
    identity, a flip of each spatial axis, and a 90° rotation in each plane whose two sides are
    equal. Returns [(name, forward(t), inverse(t))] acting on the trailing spatial axes."""
    import torch

    n = len(spatial)
    out = [("identity", lambda t: t, lambda t: t)]
    for a in range(n):
        dim = -n + a
        out.append((f"flip axis {a}", lambda t, d=dim: torch.flip(t, (d,)), lambda t, d=dim: torch.flip(t, (d,))))
    for a in range(n):
        for b in range(a + 1, n):
            if spatial[a] == spatial[b]:
                dims = (-n + a, -n + b)
                out.append((f"rot90 axes {a},{b}", lambda t, d=dims: torch.rot90(t, 1, d),
                            lambda t, d=dims: torch.rot90(t, -1, d)))
    return out


def aug_smooth(module, x, layer, cams: dict, class_indices, settings) -> CamResult:
    """``aug_smooth``: the CAMs of x under every :func:`grid_transforms` transform, each map taken
    back by the inverse transform on the feature grid and the raw maps averaged. pytorch-grad-cam
    (``base_cam.py``) averages over a 2-D horizontal flip × intensity factors 0.9/1/1.1 (ttach);
    flips and rotations of the voxel grid are what is invertible in 3-D. The logits are x's own.
    Exact when the feature grid tiles the input symmetrically (conv/pool stacks with 'same' padding)."""
    transforms = grid_transforms(tuple(x.shape[2:]))
    base = cam_pass(module, x, layer, cams, class_indices, settings=settings)
    sums = {m: v.clone() for m, v in base.maps.items()}
    for _name, forward, inverse in transforms[1:]:
        result = cam_pass(module, forward(x), layer, cams, base.class_indices, settings=settings)
        for m, v in result.maps.items():
            if v.shape != sums[m].shape:
                raise InputError(f"aug_smooth: the feature map of {_name} has shape {tuple(v.shape)}, not "
                                 f"{tuple(sums[m].shape)}; use it only where the grid transforms keep the shape")
            sums[m] += inverse(v)
    base.maps = {m: v / len(transforms) for m, v in sums.items()}
    base.notes = (base.notes or []) + [f"aug_smooth: raw maps averaged over {len(transforms)} grid transforms "
                                       f"({', '.join(t[0] for t in transforms)}), each undone on the map"]
    return base


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
        result = compute_cams(model, x, methods=[name], class_indices=[int(target)], layer=settings.layer,
                              settings=settings)
        info = {"layer": result.layer, **({"notes": result.notes} if result.notes else {})}
        return Attribution(result.maps[name][0, 0], info=info, logits=result.logits)

    estimator.__name__ = name
    return estimator
