"""How many steps/samples of an estimator fit a memory budget at once.

Captum batches steps and samples (``internal_batch_size``, ``nt_samples_batch_size``,
``perturbations_per_eval``); the batch is chosen so that it fits ``settings.memory_gb`` (default
2 GB), from an estimate of one sample's forward(+backward) memory measured once per model and
input shape.
"""

from __future__ import annotations

from ..errors import InputError
from .settings import EstimatorSettings

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
