"""Gradient and perturbation estimators computed by Captum: each a function (model, x, target, settings).

Every estimator returns a RAW, SIGNED map for one class on the model-input grid; :func:`explain`
brings it back to the CT through the same physical inverse as the CAMs. Captum does the
attribution (read at its source, captum 0.9: ``attr/_core/saliency.py``, ``input_x_gradient.py``,
``noise_tunnel.py``, ``integrated_gradients.py``, ``occlusion.py``, ``guided_grad_cam.py``); this
module only chooses the settings, the baselines and the batch sizes (:mod:`.memory`). The input
channels are summed later (:func:`attribution.attribute`): they are copies of the one windowed CT,
so by the chain rule the sum is the attribution of that CT voxel.
"""

from __future__ import annotations

from ..errors import InputError
from .memory import batch_size
from .settings import Attribution, EstimatorSettings


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


def noise_tunnel(kind: str):
    """The NoiseTunnel estimator of ``kind`` (smoothgrad, smoothgrad_sq, vargrad) over Captum's
    signed ``Saliency``, with seeded noise and memory-budgeted batches."""

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
