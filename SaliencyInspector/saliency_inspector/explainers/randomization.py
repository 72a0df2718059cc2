"""Maps on the model-input grid, and the same maps as the model's weights are randomized.

The model side of the randomization sanity check (Adebayo et al. 2018; Arun et al. 2021): the
network is deep-copied ONCE, then its blocks are re-initialised with each layer's own
``reset_parameters`` (seeded), from the output down ("cascading": randomization accumulates) or one
block at a time ("independent": each block's weights are restored after its step), and the map is
recomputed after every step. Comparing the maps is :mod:`evaluate.trust`'s job; this module only
yields them, so it needs nothing from ``evaluate``.

Blocks: the model's top-level children in execution order, with a top-level ``nn.Sequential`` /
``ModuleList`` opened one level (MONAI's DenseNet keeps ``conv0 … denseblock4, norm5`` in
``features`` and the head in ``class_layers``; the demo model keeps its convolutions in
``features``); blocks without parameters (ReLU, pooling) are skipped.

Maps are compared on the model-input grid: the resolution the network sees, the same for every
case a fixed-size model reads, and small enough to compare a dozen times. Each map is a
:class:`Volume` on that grid in physical space (z, y, x), so maps of two models with different
input grids can still be compared (resampled in physical space).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.volume import Volume


@dataclass
class InputMap:
    """A raw map on the model-input grid plus the logits of the pass that made it."""

    volume: Volume
    logits: np.ndarray


def prepare(classifier, ct: Volume):
    """The model input for ``ct`` (a :class:`models.preprocess.Prepared`)."""
    from ..models.preprocess import preprocess

    return preprocess(ct, classifier.card.input, device=classifier.device)


def class_index(classifier, class_name) -> int:
    """Index of ``class_name`` (a name, or an index as int/str) in the classifier's classes."""
    names = classifier.card.classes
    if isinstance(class_name, (int, np.integer)) or (isinstance(class_name, str) and class_name.isdigit()
                                                     and (names is None or class_name not in names)):
        return int(class_name)
    if names is None or class_name not in names:
        raise InputError(f"class {class_name!r} is not one of the model's classes: {', '.join(names or [])}")
    return names.index(class_name)


def input_map(module, prepared, method, target: int, layer=None) -> InputMap:
    """The raw, signed map of ``method`` for class index ``target`` on the model-input grid.

    ``method``: any name of the method registry or a callable ``fn(model, x, target)``, run by
    :func:`attribution.attribute` with default settings (and ``layer`` for the methods that use one).
    """
    import torch

    from .attribution import attribute
    from .settings import EstimatorSettings
    from ..models.preprocess import resample_tensor

    x = prepared.tensor
    result = attribute(method, module, x, int(target), EstimatorSettings(layer=layer))
    raw, logits = result.map, result.logits
    if logits is None:  # the method's own pass gave no logits: one plain forward
        with torch.no_grad():
            logits = module(x)
    logits = logits[0]
    if raw.ndim != 3:
        raise InputError(f"method {getattr(method, '__name__', method)!r} gave a {raw.ndim}D map; the "
                         f"randomization check needs a 3D map, for input {tuple(x.shape)}")
    raw = raw.detach().float()
    if prepared.axes == "xyz":
        raw = raw.permute(2, 1, 0)
    grid = prepared.grid
    shape = tuple(raw.shape)
    if shape == grid.shape:
        array = raw.cpu().numpy()
    else:  # a feature-resolution map covers the input's field of view: resample in physical space
        source = prepared.feature_grid(shape if prepared.axes == "zyx" else shape[::-1])
        array = resample_tensor(raw[None], source, grid)[0]
    return InputMap(grid.with_array(np.asarray(array, np.float32)), logits.detach().cpu().numpy())


def randomization_blocks(module, x) -> list:
    """Names of the blocks that hold parameters, in execution order (input first).

    Top-level children, with a top-level Sequential/ModuleList opened one level; the order is
    the order in which the blocks finished during one forward pass on ``x``.
    """
    import torch
    from torch import nn

    candidates = []
    for name, child in module.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            candidates += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            candidates.append((name, child))
    candidates = [(n, c) for n, c in candidates if any(True for _ in c.parameters())]
    finished, handles = [], []
    for name, child in candidates:
        handles.append(child.register_forward_hook(lambda _m, _i, _o, n=name: finished.append(n)))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    order = list(dict.fromkeys(finished))
    never = [n for n, _ in candidates if n not in order]
    if never:
        raise InputError(f"blocks {', '.join(never)} did not run in the forward pass; cannot order them")
    if not order:
        raise InputError(f"{type(module).__name__} has no block with parameters to randomize")
    return order


def _reset(block, seed: int) -> int:
    """Re-initialise every layer of ``block`` that has ``reset_parameters`` (seeded); returns the count.

    As Quantus's MPRT does, BatchNorm included (its running statistics are reset too)."""
    import torch

    count = 0
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(int(seed))
        for layer in block.modules():
            if callable(getattr(layer, "reset_parameters", None)):
                layer.reset_parameters()
                count += 1
            if callable(getattr(layer, "reset_running_stats", None)):
                layer.reset_running_stats()
    return count


def randomized_maps(classifier, ct: Volume, method, class_name, mode: str = "cascading", seed: int = 0,
                    layer=None, prepared=None):
    """Yield ``(block, InputMap)``: first ``("original", map)``, then one map per randomized block.

    ``mode``: "cascading" (from the output block down, randomization accumulating) or "independent"
    (one block at a time, the others trained). The classifier's own module is never modified: one
    deep copy is randomized. ``seed`` makes every re-initialisation repeatable.
    """
    if mode not in ("cascading", "independent"):
        raise InputError(f"randomization mode {mode!r}: choose cascading or independent")
    prepared = prepared or prepare(classifier, ct)
    target = class_index(classifier, class_name)
    layer = layer or classifier.card.target_layer
    yield "original", input_map(classifier.module, prepared, method, target, layer)
    blocks = randomization_blocks(classifier.module, prepared.tensor)
    model = copy.deepcopy(classifier.module).eval()
    modules = dict(model.named_modules())
    for step, name in enumerate(reversed(blocks), start=1):
        block = modules[name]
        saved = {k: v.clone() for k, v in block.state_dict().items()} if mode == "independent" else None
        _reset(block, seed * 1000 + step)
        yield name, input_map(model, prepared, method, target, layer)
        if saved is not None:
            block.load_state_dict(saved)
