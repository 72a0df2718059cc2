"""Maps on the model-input grid, and the same maps as the model's weights are randomized.

The model side of the randomization sanity check (Adebayo et al. 2018; Arun et al. 2021): the
network is deep-copied ONCE, then its blocks are re-initialised, from the output down ("cascading":
randomization accumulates) or one block at a time ("independent": each block's weights are
restored after its step), and the map is recomputed after every step. Comparing the maps is
:mod:`scoring.trust`'s job; this module only yields them, so it needs nothing from ``scoring``.

Randomization acts on PARAMETERS, never on module types, so an exported program (``.pt2``, whose
unflattened ``InterpreterModule``s have no ``reset_parameters``) is randomized exactly like the
``nn.Module`` it came from. The initialiser (:func:`redraw`), for every floating-point parameter
and buffer of the block:

- tensors with ≥ 2 dimensions (convolution and linear weights): He/Kaiming normal,
  N(0, 2 / fan_in) with fan_in = numel / shape[0] (``torch.nn.init.kaiming_normal_``'s default);
- tensors with ≤ 1 dimension (biases, norm scales and shifts, running means): uniform on
  [−1/√n, 1/√n] (n = the tensor's length: PyTorch's bias rule with the tensor's own length as the
  fan), except running variances (name ending ``running_var``), drawn uniform on
  [0.5, 1.5] so that normalisation stays defined;
- integer buffers (``num_batches_tracked``) are left alone.

Each tensor has its own ``torch.Generator`` seeded from (seed, step, the tensor's name inside the
block), drawn on the CPU: the result depends neither on the caller's global random state nor on the
device nor on parameter order. After every step the block's tensors are checked to have changed;
a block with nothing floating-point to redraw is an error.

Blocks: the model's top-level children in execution order; a top-level child with no parameters
of its own (a ``Sequential``, a ``ModuleList``, or the ``InterpreterModule`` an export makes of
them) is opened one level (MONAI's DenseNet keeps ``conv0 … denseblock4, norm5`` in ``features``
and the head in ``class_layers``; the demo model keeps its convolutions in ``features``); blocks
without parameters (ReLU, pooling) are skipped.

Maps are compared on the model-input grid: the resolution the network sees, the same for every
case a fixed-size model reads, and small enough to compare a dozen times. Each map is a
:class:`Volume` on that grid in physical space (z, y, x), so maps of two models with different
input grids can still be compared (resampled in physical space).
"""

from __future__ import annotations

import copy
import zlib
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


def input_map(module, prepared, method, target: int, layer=None, gates=None) -> InputMap:
    """The raw, signed map of ``method`` for class index ``target`` on the model-input grid.

    ``method``: any name of the method registry or a callable ``fn(model, x, target)``, run by
    :func:`attribution.attribute` with default settings (and ``layer`` for the methods that use one).
    ``gates``: the card's ``attention_gates`` (module paths; the ``attention`` methods find MONAI
    AttentionBlocks without them, but a declared gate of a randomized copy is only found by its path).
    """
    import torch

    from .attribution import attribute
    from .settings import EstimatorSettings
    from ..models.preprocess import resample_tensor

    x = prepared.tensor
    settings = EstimatorSettings(layer=layer, attention_gates=tuple(gates) if gates else None)
    result = attribute(method, module, x, int(target), settings)
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


def _has_own_parameters(module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def randomization_blocks(module, x) -> list:
    """Names of the blocks that hold parameters, in execution order (input first).

    Top-level children, a child without parameters of its own opened one level (a structural rule:
    an ``nn.Sequential`` and its exported ``InterpreterModule`` give the same blocks); the order is
    the order in which the blocks finished during one forward pass on ``x``.
    """
    import torch

    candidates = []
    for name, child in module.named_children():
        inner = list(child.named_children())
        if inner and not _has_own_parameters(child):
            candidates += [(f"{name}.{n}", c) for n, c in inner]
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


def _floating_tensors(block) -> list:
    """(name, tensor) of every floating-point parameter and buffer of ``block`` (names inside it)."""
    seen, out = set(), []
    for name, t in list(block.named_parameters()) + list(block.named_buffers()):
        if t is not None and t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def redraw(name: str, tensor, generator):
    """A new value for ``tensor`` from the stated initialiser (see the module docstring), on the CPU."""
    import torch

    shape = tuple(tensor.shape)
    if len(shape) >= 2:
        fan_in = max(1, tensor.numel() // shape[0])
        return torch.randn(shape, generator=generator, dtype=torch.float64) * (2.0 / fan_in) ** 0.5
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
    bound = 1.0 / max(1, tensor.numel()) ** 0.5
    return (2.0 * torch.rand(shape, generator=generator, dtype=torch.float64) - 1.0) * bound


def randomize_block(block, seed: int, block_name: str = "block") -> int:
    """Redraw every floating-point parameter and buffer of ``block`` in place (seeded per tensor by
    name); returns how many tensors were redrawn. InputError when there is nothing to redraw;
    RuntimeError when the block's weights did not change (the randomization would be a no-op)."""
    import torch

    tensors = _floating_tensors(block)
    if not tensors:
        raise InputError(f"block {block_name!r} has no floating-point parameters or buffers to randomize")
    before = [t.detach().clone() for _, t in tensors]
    with torch.no_grad():
        for name, t in tensors:
            g = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            t.copy_(redraw(name, t, g).to(device=t.device, dtype=t.dtype))
    changed = any(not torch.equal(b, t) for b, (_, t) in zip(before, tensors))
    if not changed:
        raise RuntimeError(f"randomizing block {block_name!r} left its weights unchanged")
    return len(tensors)


def architecture_signature(module) -> tuple:
    """What makes two networks "the same architecture": the names and shapes of their floating-point
    parameters and buffers (never the class name: every exported program is an "UnflattenedModule")."""
    return tuple(sorted((n, tuple(t.shape)) for n, t in _floating_tensors(module)))


def randomized_maps(classifier, ct: Volume, method, class_name, mode: str = "cascading", seed: int = 0,
                    layer=None, prepared=None):
    """Yield ``(block, InputMap)``: first ``("original", map)``, then one map per randomized block.

    ``mode``: "cascading" (from the output block down, randomization accumulating) or "independent"
    (one block at a time, the others trained). The classifier's own module is never modified: one
    deep copy is randomized. ``seed`` makes every re-initialisation repeatable (see :func:`redraw`);
    the caller's global random state is neither used nor changed.
    """
    import torch

    if mode not in ("cascading", "independent"):
        raise InputError(f"randomization mode {mode!r}: choose cascading or independent")
    prepared = prepared or prepare(classifier, ct)
    target = class_index(classifier, class_name)
    layer = layer or classifier.card.target_layer
    gates = getattr(classifier.card, "attention_gates", None)
    yield "original", input_map(classifier.module, prepared, method, target, layer, gates)
    blocks = randomization_blocks(classifier.module, prepared.tensor)
    model = copy.deepcopy(classifier.module).eval()
    modules = dict(model.named_modules())
    for step, name in enumerate(reversed(blocks), start=1):
        block = modules[name]
        saved = [t.detach().clone() for _, t in _floating_tensors(block)] if mode == "independent" else None
        randomize_block(block, seed * 1000 + step, name)
        yield name, input_map(model, prepared, method, target, layer, gates)
        if saved is not None:
            with torch.no_grad():
                for (_, t), old in zip(_floating_tensors(block), saved):
                    t.copy_(old)
