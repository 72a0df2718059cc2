"""Two self-explaining demo networks whose maps come out of the model itself (issue 25).

Both share the demo's input (32×64×64, soft-tissue window), an encoder of conv blocks and a
multiple-instance head: the gated features (plus each cell's (z, y, x) position, as the demo
model's coordinate channels) go through a 1×1×1 two-layer head to one "lesion of class k here"
logit per cell and class, and a class logit is an affine readout (scale and bias per class) of the
log-sum-exp pooling of its cells (a smooth max: "a lesion of class k somewhere"). The head sees ONLY gated features, so what the gate
closes cannot reach the decision: the gate map is an explanation by construction (of where the
model *may* look, not of how much each voxel counted).

- ``attention_gated``: two grid attention gates (Schlemper et al. 2019) built from MONAI's
  ``AttentionBlock`` (monai/networks/nets/attentionunet.py: ``x * psi`` with
  ``psi = sigmoid(BN(conv(relu(W_g g + W_x x))))``), the gating signal ``g`` being the deepest
  features: ``gate1`` on the 8×16×16 features (g upsampled), ``gate2`` on the 4×8×8 features.
- ``trainable_saliency``: one soft-attention saliency head (conv 3×3 → BN → ReLU → conv 1×1 on
  the 8×16×16 features and the upsampled deepest features) whose sigmoid map (``saliency_gate``)
  multiplies the features the head pools. Its logits (``saliency``) can be supervised with the
  lesion masks of a fraction of the training cases (:mod:`..training.attention_recipe`).

``forward(x, with_cells=True)`` also returns the cell logits (the demo recipe supervises them per
cell, as the demo model's lesion map) and, for the saliency model, the saliency logits.

Gates are found by the ``attention`` method (:mod:`..explainers.attention`): MONAI
``AttentionBlock`` modules automatically, others from the card's ``attention_gates``.
"""

from __future__ import annotations

from pathlib import Path

from .loaders import register_architecture, register_source

INPUT_SIZE = (32, 64, 64)
LSE_SHARPNESS = 5.0  # r of the log-sum-exp pooling: large → max, small → mean
ATTENTION_KWARGS = {"in_channels": 1, "num_classes": 4, "channels": [8, 16, 32], "input_size": list(INPUT_SIZE)}


def _encoder(in_channels, channels):
    """(stem, mid, deep): 1/4-resolution features x1 (c2), 1/8-resolution x2 (c3) and g (c3)."""
    from torch import nn

    def block(i, o):
        return [nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU()]

    c1, c2, c3 = (int(c) for c in channels)
    stem = nn.Sequential(*block(in_channels, c1), nn.MaxPool3d(2), *block(c1, c2), nn.MaxPool3d(2))
    mid = nn.Sequential(*block(c2, c3), nn.MaxPool3d(2))
    deep = nn.Sequential(*block(c3, c3))
    return stem, mid, deep


def _cell_head(in_channels, num_classes):
    """The multiple-instance head: 1×1×1 conv → ReLU → 1×1×1 conv to one logit per cell and class."""
    from torch import nn

    return nn.Sequential(nn.Conv3d(in_channels + 3, 16, 1), nn.ReLU(), nn.Conv3d(16, num_classes, 1))


def _readout(num_classes):
    """Per-class affine readout of the pooled cell logits: logit_k = a_k · LSE_k + b_k."""
    import torch
    from torch import nn

    class Readout(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(num_classes))
            self.bias = nn.Parameter(torch.zeros(num_classes))

        def forward(self, pooled):
            return self.scale * pooled + self.bias

    return Readout()


def _coordinates(x):
    """Three channels: each voxel's (z, y, x) index scaled to [-1, 1], shaped like ``x``."""
    import torch

    axes = [torch.linspace(-1.0, 1.0, int(n), dtype=x.dtype, device=x.device) for n in x.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]
    return grid.expand(x.shape[0], -1, -1, -1, -1)


def lse_pool(cells, r=LSE_SHARPNESS):
    """(B, K, *spatial) cell logits → (B, K) class logits: (1/r) log mean exp(r · cell)."""
    import math

    import torch

    flat = cells.flatten(2)
    return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r


def _check(x, size):
    if x.dim() != 5 or tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"this network takes (B, C, {', '.join(map(str, size))}) tensors, got {tuple(x.shape)}; "
                         "resize the CT to the model card's input.size")


def build_attention_gated(in_channels=1, num_classes=4, channels=(8, 16, 32), input_size=INPUT_SIZE):
    """The attention-gated classifier: two MONAI ``AttentionBlock`` gates (``gate1``, ``gate2``)."""
    import torch
    import torch.nn.functional as F
    from monai.networks.nets.attentionunet import AttentionBlock
    from torch import nn

    c2, c3 = int(channels[1]), int(channels[2])
    size = tuple(int(n) for n in input_size)

    class AttentionGatedNet(nn.Module):
        """Encoder → gates (g: the deepest features) → cell head on the gated features → LSE pooling."""

        def __init__(self):
            super().__init__()
            self.stem, self.mid, self.deep = _encoder(in_channels, channels)
            self.gate1 = AttentionBlock(3, f_int=c2, f_g=c3, f_l=c2)
            self.gate2 = AttentionBlock(3, f_int=c3 // 2, f_g=c3, f_l=c3)
            self.head = _cell_head(c2 + c3, num_classes)
            self.readout = _readout(num_classes)

        def forward(self, x, with_cells=False):
            """Logits (B, K); with ``with_cells`` (logits, cell logits (B, K, d, h, w), None)."""
            _check(x, size)
            x1 = self.stem(x)
            x2 = self.mid(x1)
            g = self.deep(x2)
            gated1 = self.gate1(F.interpolate(g, size=x1.shape[2:], mode="trilinear", align_corners=False), x1)
            gated2 = F.interpolate(self.gate2(g, x2), size=x1.shape[2:], mode="trilinear", align_corners=False)
            features = torch.cat([gated1, gated2], 1)
            cells = self.head(torch.cat([features, _coordinates(features)], 1))
            return (self.readout(lse_pool(cells)), cells, None) if with_cells else self.readout(lse_pool(cells))

    return AttentionGatedNet()


def build_trainable_saliency(in_channels=1, num_classes=4, channels=(8, 16, 32), input_size=INPUT_SIZE):
    """The trainable-saliency classifier: a saliency head (``saliency``: logits; ``saliency_gate``:
    its sigmoid) multiplies the features the cell head pools."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    c2, c3 = int(channels[1]), int(channels[2])
    size = tuple(int(n) for n in input_size)

    class TrainableSaliencyNet(nn.Module):
        """Encoder → saliency logits → sigmoid gate × features → cell head → LSE pooling."""

        def __init__(self):
            super().__init__()
            self.stem, self.mid, self.deep = _encoder(in_channels, channels)
            self.saliency = nn.Sequential(nn.Conv3d(c2 + c3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
                                          nn.Conv3d(16, 1, 1))
            self.saliency_gate = nn.Sigmoid()
            self.head = _cell_head(c2, num_classes)
            self.readout = _readout(num_classes)

        def forward(self, x, with_cells=False):
            """Logits (B, K); with ``with_cells`` (logits, cell logits (B, K, d, h, w), saliency
            logits (B, 1, d, h, w))."""
            _check(x, size)
            x1 = self.stem(x)
            g = self.deep(self.mid(x1))
            up = F.interpolate(g, size=x1.shape[2:], mode="trilinear", align_corners=False)
            saliency_logits = self.saliency(torch.cat([x1, up], 1))
            gated = x1 * self.saliency_gate(saliency_logits)
            cells = self.head(torch.cat([gated, _coordinates(gated)], 1))
            logits = self.readout(lse_pool(cells))
            return (logits, cells, saliency_logits) if with_cells else logits

    return TrainableSaliencyNet()


ARCHITECTURES = {"attention_gated": build_attention_gated, "trainable_saliency": build_trainable_saliency}
for _name, _build in ARCHITECTURES.items():  # `--arch attention_gated`, a card's "architecture"
    register_architecture(_name, _build)

MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
SHIPPED = ("demo-attention-gated", "demo-trainable-saliency-mask0", "demo-trainable-saliency-mask10",
           "demo-trainable-saliency-mask100")


def shipped_classifier(name: str, device="auto"):
    """A shipped self-explaining demo model (``SHIPPED``) from Resources/Models, weights and card."""
    from .loaders import load_classifier

    return load_classifier(MODELS_DIR / f"{name}.pt", device=device)


for _name in SHIPPED:  # `--model demo-attention-gated`, load_classifier("demo-attention-gated")
    if (MODELS_DIR / f"{_name}.pt").is_file():
        register_source(_name, lambda device, _name=_name: shipped_classifier(_name, device))
