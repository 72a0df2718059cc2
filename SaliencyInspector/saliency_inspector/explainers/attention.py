"""The ``attention`` method: the gate coefficients of an attention-gated model, read by forward hooks.

Which modules are gates: the model card's ``attention_gates`` (module paths, in order), else every
MONAI ``AttentionBlock`` of the network (monai/networks/nets/attentionunet.py). An AttentionBlock
returns ``x * psi`` with ``psi = Sequential(conv 1×1, BatchNorm, Sigmoid)``: the hook sits on its
``psi`` submodule, whose output is the sigmoid gate itself (B, 1, *spatial), not the gated
features. A declared module that is not an AttentionBlock is hooked itself: its output must be the
gate (B, 1 or C, *spatial; C channels are averaged).

Each gate's map lives on its own feature grid, which tiles the model input (edges aligned, like a
CAM's): :func:`explain` puts it on the CT's own grid through ``Prepared.raw_volume`` and
``Explanation.map`` like every other map. ``attention`` is the MEAN of the gates, each first
upsampled (trilinear, edges aligned) to the finest gate grid; ``attention_gate1`` … are the gates
one by one, in card (or module) order. A mean, not a product: a product of sigmoids sinks towards
0 with every gate added and is ruled by the most closed gate, whereas the mean stays in [0, 1] and
weighs the gates alike. The gates do not depend on the explained class: every class gets the same
map (a class-agnostic explanation: "where the model lets evidence through").
"""

from __future__ import annotations

from ..errors import InputError

MAX_GATE_MAPS = 3  # attention_gate1..3 are registered; `attention` combines any number of gates


def _is_attention_block(module) -> bool:
    try:
        from monai.networks.nets.attentionunet import AttentionBlock
    except ImportError:  # MONAI absent: only declared gates
        return False
    return isinstance(module, AttentionBlock)


def find_gates(model, declared=None) -> list:
    """[(name, module to hook)] of ``model``: the ``declared`` module paths (card ``attention_gates``)
    or, when none are declared, every MONAI AttentionBlock; an AttentionBlock is hooked at its
    ``psi`` (the sigmoid gate). InputError when the model has none or a path is unknown."""
    if declared:
        gates = []
        for path in declared:
            try:
                module = model.get_submodule(str(path))
            except AttributeError:
                raise InputError(f"attention gate {path!r} (model card 'attention_gates') is not a module of "
                                 "the model; give module paths as in model.named_modules()") from None
            gates.append((str(path), module.psi if _is_attention_block(module) else module))
        return gates
    gates = [(name, module.psi) for name, module in model.named_modules() if _is_attention_block(module)]
    if not gates:
        raise InputError("the model has no attention gates, so there is no 'attention' map: declare the gate "
                         "modules in the model card ('attention_gates': module paths whose output is the gate) "
                         "or use MONAI AttentionBlock gates; for a post-hoc map choose e.g. hirescam")
    return gates


def gate_maps(model, x, declared=None) -> list:
    """[(name, tensor (*spatial))]: each gate's coefficients for input ``x`` (1, C, *spatial), from
    one forward pass with a forward hook on every gate."""
    import torch

    gates = find_gates(model, declared)
    captured = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = output.detach()
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in gates]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    spatial = x.ndim - 2
    maps = []
    for name, _module in gates:
        if name not in captured:
            raise InputError(f"attention gate {name!r} did not run in the forward pass")
        out = captured[name][0].float()  # batch of one
        if out.ndim == spatial + 1:
            out = out.mean(0)  # (C, *spatial) gates: the mean over channels
        if out.ndim != spatial:
            raise InputError(f"attention gate {name!r} returned shape {tuple(captured[name].shape)}; a gate's "
                             "output is (B, 1, *spatial)")
        maps.append((name, out))
    return maps


def combined(maps) -> "object":
    """The mean of the gate maps, each upsampled to the finest gate's grid (trilinear, edges aligned:
    every gate grid covers the same field of view)."""
    import math

    import torch
    import torch.nn.functional as F

    size = max((tuple(m.shape) for _, m in maps), key=math.prod)
    stack = [m if tuple(m.shape) == size else
             F.interpolate(m[None, None], size=size, mode="trilinear", align_corners=False)[0, 0] for _, m in maps]
    return torch.stack(stack).mean(0)


def attention(model, x, target, settings):
    """The mean of the model's attention gates (same map for every class)."""
    from .settings import Attribution

    maps = gate_maps(model, x, getattr(settings, "attention_gates", None))
    return Attribution(combined(maps), info={"gates": [name for name, _ in maps], "combined": "mean"})


def gate_method(index: int):
    """The method function returning gate number ``index`` (1-based, card or module order)."""
    def one_gate(model, x, target, settings):
        from .settings import Attribution

        maps = gate_maps(model, x, getattr(settings, "attention_gates", None))
        if index > len(maps):
            raise InputError(f"attention_gate{index}: the model has {len(maps)} attention gate(s) "
                             f"({', '.join(n for n, _ in maps)}); use attention_gate1..{len(maps)} or attention")
        name, gate = maps[index - 1]
        return Attribution(gate, info={"gate": name})

    one_gate.__name__ = f"attention_gate{index}"
    return one_gate


def has_gates(classifier) -> bool:
    """True when ``classifier`` (a Classifier) has attention gates (declared or MONAI AttentionBlocks)."""
    try:
        find_gates(classifier.module, getattr(classifier.card, "attention_gates", None))
    except InputError:
        return False
    return True


def gate_count(classifier) -> int:
    """How many attention gates ``classifier`` has (0 when none)."""
    try:
        return len(find_gates(classifier.module, getattr(classifier.card, "attention_gates", None)))
    except InputError:
        return 0
