"""How many steps/samples of an estimator fit a memory budget at once.

Captum batches steps and samples (``internal_batch_size``, ``nt_samples_batch_size``,
``perturbations_per_eval``); the batch is chosen so that it fits ``settings.memory_gb`` (default
2 GB), from an estimate of one sample's forward(+backward) memory measured once per model and
input shape.

A model exported with ``torch.export.export(model, (x,))`` accepts only the batch it was exported
with (1): :func:`batch_limit` reads that from the program's graph (:func:`models.loaders.static_batch`),
:func:`batch_size` never exceeds it, and :func:`run_batched` catches the shape guard once for a
model whose limit could not be read (e.g. an exported program wrapped in another module) and
remembers it. The estimators say so in their info (:func:`batch_note`), hence in predictions.json.
"""

from __future__ import annotations

import weakref

from ..errors import InputError
from .settings import EstimatorSettings

_FOOTPRINT: dict = {}  # (id(model), shape, dtype, device) -> (bytes forward+backward, bytes forward)
_GUARDED = weakref.WeakKeyDictionary()  # model -> the batch its shape guard turned out to allow (1)


def batch_limit(model) -> int | None:
    """The largest batch ``model`` accepts: its exported static batch, or 1 after its shape guard
    refused a larger one (:func:`run_batched`); None when any batch goes."""
    from ..models.loaders import static_batch

    limit = static_batch(model)
    if limit is None:
        try:
            limit = _GUARDED.get(model)
        except TypeError:  # not weak-referenceable
            limit = None
    return limit


def batch_note(model) -> dict:
    """What the estimators' info (and predictions.json) says when the batch was limited, else {}."""
    limit = batch_limit(model)
    if limit is None:
        return {}
    return {"batch_limit": 1, "batch_note": f"the model accepts only batches of {limit} (a torch.export "
            "program exported with a static batch): steps/samples were sent one at a time"}


def _is_shape_guard(err) -> bool:
    text = str(err)
    # torch/export/unflatten.py (_check_input_constraints_for_graph) and program.module()'s guard
    return ("Expected input at" in text and "shape[0]" in text) or ("Guard failed" in text and "size()[0]" in text)


def run_batched(model, run, per_batch: int):
    """``run(per_batch)``, and when the model's export shape guard refuses a batch larger than 1,
    ``run(1)`` (remembered for this model). Returns (result, the batch size used)."""
    try:
        return run(per_batch), per_batch
    except (RuntimeError, AssertionError) as err:
        if per_batch <= 1 or not _is_shape_guard(err):
            raise
    try:
        _GUARDED[model] = 1
    except TypeError:
        pass
    return run(1), 1


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
    limit = batch_limit(model)
    if limit is not None:  # a static export: one sample at a time, however much memory there is
        return 1
    need = sample_bytes(model, x)[0 if backward else 1]
    budget = settings.memory_gb * 2 ** 30
    n = int(budget // max(1, need))
    if n < 1:
        raise InputError(f"memory budget {settings.memory_gb:g} GB is too small for one {what} of this model "
                         f"(about {need / 2 ** 30:.2f} GB at input {tuple(x.shape[1:])}); raise --memory-gb")
    return n
