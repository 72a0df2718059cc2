"""CAMs that need more than one forward pass: Score-CAM, Ablation-CAM (one forward per channel of
the target layer) and FullGrad (a backward to the input through every bias).

Each is a registry estimator ``(model, x, target, settings)``, but the extra forwards give the
scores of EVERY class at once: the first class asked computes all classes' weights, the next
ones for the same input reuse them (:func:`_all_classes`), so explaining C classes costs one set
of forwards, where pytorch-grad-cam loops over classes. Batches of masked/ablated copies are sized
by the memory budget (:func:`memory.batch_size`: also 1 for a static-batch ``.pt2``), with a
progress line per tenth of the work. Maps of Score-/Ablation-CAM are on the feature grid, FullGrad's
on the input grid; all raw (no ReLU, no min-max scaling: display choices).
"""

from __future__ import annotations

import time

from ..errors import InputError
from .memory import batch_note, batch_size
from .settings import Attribution

_CACHE: dict = {}  # (method, id(model), input identity, layer, knobs) -> (weights or maps for all classes, info)


def _key(method, model, x, *extra):
    return (method, id(model), x.data_ptr(), x._version, tuple(x.shape), str(x.dtype), *extra)


def _all_classes(method, model, x, extra, compute):
    """``compute()`` once per (method, model, input, settings); kept for the next class (one entry per method)."""
    key = _key(method, model, x, *extra)
    if key not in _CACHE:
        for old in [k for k in _CACHE if k[0] == method]:
            del _CACHE[old]
        _CACHE[key] = compute()
    return _CACHE[key]


def _say(settings):
    return getattr(settings, "progress", None) or (lambda _msg: None)


def _activations(model, x, layer):
    """(A, logits) from one no-grad forward."""
    import torch

    from .cam import _checked_activation, capture

    with capture(model, layer) as store, torch.no_grad():
        logits = model(x)
    return _checked_activation(store, layer, x).detach(), logits.detach()


def _layer(model, x, settings):
    from .cam import find_target_layer

    layer = settings.layer or find_target_layer(model, x)
    if not isinstance(layer, str):
        raise InputError("Score-CAM, Ablation-CAM: one target layer (several layers combine only the "
                         "activation × gradient CAMs)")
    return layer


def _in_batches(n: int, per: int, what: str, say, run):
    """run(start, stop) over [0, n) in batches of ``per``, with a progress line each ~tenth."""
    out, step, t0 = [], max(1, n // 10), time.perf_counter()
    for start in range(0, n, per):
        out.append(run(start, min(n, start + per)))
        done = min(n, start + per)
        if done // step != start // step or done == n:
            say(f"{what}: {done}/{n} channels ({time.perf_counter() - t0:.1f} s)")
    return out


def score_weights(model, x, A, settings, channels=None):
    """Score-CAM's channel weights for every class (K_classes, K_channels): softmax over channels of
    y_c(x ⊙ M_k), M_k = A_k upsampled to the input (linear, corners aligned, as the peer's
    ``UpsamplingBilinear2d``) and min-max scaled to [0, 1] (``score_cam.py``)."""
    import torch
    import torch.nn.functional as F

    k = A.shape[1] if channels is None else int(channels)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
    per = max(1, min(k, batch_size(model, x, settings, backward=False, what="masked input")))

    def run(start, stop):
        with torch.no_grad():
            up = F.interpolate(A[:1, start:stop], size=x.shape[2:], mode=mode, align_corners=True)[0]
            flat = up.flatten(1)
            lo, hi = flat.min(1)[0], flat.max(1)[0]
            masks = (up - lo.view(-1, *[1] * (up.ndim - 1))) / (hi - lo + 1e-8).view(-1, *[1] * (up.ndim - 1))
            return model(x[:1] * masks[:, None]).double()  # (n, K_classes)

    scores = torch.cat(_in_batches(k, per, "Score-CAM", _say(settings), run))  # (k, K_classes)
    return torch.softmax(scores.T, dim=-1).to(A.dtype), per


def ablation_weights(model, x, A, logits, layer, settings, channels=None):
    """Ablation-CAM's channel weights for every class (K_classes, K_channels): (y_c − y_c^k) / y_c,
    y_c^k the score with channel k of the layer set to 0 (or to min(A) − 1e7 when A has no zero
    minimum, as the peer's ``ablation_layer.py``). The layer's output is replaced by a batch of
    ablated copies (the network before it runs once per batch, not once per copy); a network that
    mixes the layer's output with an earlier batch-1 tensor (a concatenation) gets x repeated instead."""
    import torch

    from .cam import get_layer

    k = A.shape[1] if channels is None else int(channels)
    value = 0.0 if float(A.min()) == 0.0 else float(A.min()) - 1e7
    per = max(1, min(k, batch_size(model, x, settings, backward=False, what="ablated copy")))
    module = get_layer(model, layer)
    repeat_x = [False]

    def run(start, stop):
        n = stop - start
        ablated = A[:1].repeat(n, *[1] * (A.ndim - 1))
        ablated[torch.arange(n), torch.arange(start, stop)] = value
        handle = module.register_forward_hook(lambda _m, _i, _o: ablated)
        try:
            with torch.no_grad():
                if not repeat_x[0]:
                    try:
                        out = model(x[:1])
                        if out.shape[0] == n:
                            return out.double()
                    except RuntimeError:
                        pass
                    repeat_x[0] = True
                return model(x[:1].expand(n, *x.shape[1:])).double()
        finally:
            handle.remove()

    scores = torch.cat(_in_batches(k, per, "Ablation-CAM", _say(settings), run))  # (k, K_classes)
    y = logits[0].double()
    return ((y[:, None] - scores.T) / y[:, None]).to(A.dtype), per


def _weighted_map(weights_c, A):
    return (weights_c.view(1, -1, *[1] * (A.ndim - 2)) * A).sum(1)[0]


def scorecam(model, x, target, settings):
    """Score-CAM (Wang et al. 2020; pytorch-grad-cam ``score_cam.py``): Σ_k w_k A_k with
    w = softmax_k y_c(x ⊙ M_k), M_k channel k upsampled and scaled to [0, 1]: one forward per
    channel, shared by all classes. Non-negative weights; the map is non-negative where A ≥ 0."""
    layer = _layer(model, x, settings)
    A, _logits = _activations(model, x, layer)
    weights, per = _all_classes("scorecam", model, x, (layer, settings.memory_gb),
                                lambda: score_weights(model, x, A, settings))
    return Attribution(_weighted_map(weights[int(target)], A),
                       info={"layer": layer, "batch": per, "forwards": A.shape[1], **batch_note(model)})


def ablationcam(model, x, target, settings):
    """Ablation-CAM (Desai & Ramaswamy 2020; pytorch-grad-cam ``ablation_cam.py``): Σ_k w_k A_k with
    w_k = (y_c − y_c with channel k ablated) / y_c: one forward per channel, shared by all classes.
    Signed (a negative y_c flips the weights' sign, as in the peer)."""
    layer = _layer(model, x, settings)
    A, logits = _activations(model, x, layer)
    weights, per = _all_classes("ablationcam", model, x, (layer, settings.memory_gb),
                                lambda: ablation_weights(model, x, A, logits, layer, settings))
    return Attribution(_weighted_map(weights[int(target)], A),
                       info={"layer": layer, "batch": per, "forwards": A.shape[1], **batch_note(model)})


# ---- FullGrad -----------------------------------------------------------------------------------
def bias_layers(model) -> list:
    """(name, module, bias) of every Conv (1-3D) and BatchNorm (1-3D) layer with a bias, the biases
    FullGrad uses (pytorch-grad-cam ``fullgrad_cam.py``: BatchNorm's effective bias
    β − μ γ / √(σ² + ε))."""
    import torch
    from torch import nn

    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.bias is not None:
            out.append((name, m, m.bias.detach()))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.bias is not None \
                and m.running_mean is not None:
            scale = m.weight.detach() if m.weight is not None else torch.ones_like(m.running_mean)
            out.append((name, m, m.bias.detach() - m.running_mean * scale / torch.sqrt(m.running_var + m.eps)))
    return out


def _scaled(t, size):
    """Each (B·C) image min-max scaled to [0, 1] and resampled (linear, cell-centred) to ``size``
    (the peer's ``scale_accross_batch_and_channels``)."""
    import torch.nn.functional as F

    flat = t.flatten(2)
    lo = flat.min(2)[0].view(*t.shape[:2], *[1] * (t.ndim - 2))
    t = t - lo
    t = t / (1e-7 + t.flatten(2).max(2)[0].view(*t.shape[:2], *[1] * (t.ndim - 2)))
    if tuple(t.shape[2:]) != tuple(size):
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        t = F.interpolate(t, size=size, mode=mode, align_corners=False)
    return t


def fullgrad_maps(model, x, classes=None):
    """FullGrad maps (len(classes), *spatial) from one forward and one backward per class (None: all)."""
    import torch

    layers = bias_layers(model)
    if not layers:
        hidden = any(name.endswith("bias") for name, _p in model.named_parameters())
        raise InputError("fullgrad needs convolution or BatchNorm layers with biases (FullGrad sums bias × "
                         "gradient over them); " + ("this network has biases but no nn.Conv/BatchNorm modules "
                         "to find them by (a torch.export .pt2 keeps only its graph): load it from a state "
                         "dict with --arch, or use another method" if hidden else
                         "this network has none: use another method"))
    outs, handles = [], []
    for _name, m, _b in layers:
        handles.append(m.register_forward_hook(lambda _m, _i, o: outs.append(o)))
    xi = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(xi)
    finally:
        for h in handles:
            h.remove()
    if len(outs) != len(layers):
        raise InputError("fullgrad: a bias layer ran more than once or not at all in the forward pass")
    size = x.shape[2:]
    classes = list(range(logits.shape[1])) if classes is None else list(classes)
    maps = []
    for n, c in enumerate(classes):
        grads = torch.autograd.grad(logits[:, c].sum(), [xi, *outs], retain_graph=n < len(classes) - 1,
                                    allow_unused=True)
        total = _scaled((grads[0] * xi).abs().detach(), size).sum(1)
        for (_name, _m, b), g in zip(layers, grads[1:]):
            if g is not None:
                bias = b.view(1, -1, *[1] * (g.ndim - 2))
                total = total + _scaled((bias * g).abs().detach(), size).sum(1)
        maps.append(total[0])
    return torch.stack(maps), len(layers)


def fullgrad(model, x, target, settings):
    """FullGrad (Srinivas & Fleuret 2019; pytorch-grad-cam ``fullgrad_cam.py``): ψ(|x ⊙ ∂y_c/∂x|) +
    Σ_layers Σ_channels ψ(|b ⊙ ∂y_c/∂z|), ψ = min-max scaling per channel and resampling to the
    input grid, z the output of each conv/BatchNorm layer with bias b. Non-negative; all classes
    from one forward (one backward each). Needs biases (a clear error otherwise)."""
    maps, n_layers = _all_classes("fullgrad", model, x, (), lambda: fullgrad_maps(model, x))
    return Attribution(maps[int(target)], info={"bias_layers": n_layers})

