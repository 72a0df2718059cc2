"""Two self-explaining demo networks whose maps come out of the model itself (issue 25).

Both are the demo network (:func:`.demo_model.build_demo_network`: conv blocks → 8-channel per-cell
lesion map → linear head) with a multiplicative gate between its features (8×16×16 cells) and its
lesion map: the lesion map, and so the decision, sees ONLY gated features, so what the gate closes
cannot reach the decision — the gate map is an explanation by construction (of where the model
*may* look, not of how much each voxel counted). The lesion map stays the demo's ``lesion_map``
target layer, so HiResCAM there is still exact (it sums to logit − bias) and the post-hoc maps of
the same model can be compared with its own.

- ``attention_gated``: two grid attention gates (Schlemper et al. 2019) built from MONAI's
  ``AttentionBlock`` (monai/networks/nets/attentionunet.py: ``x * psi`` with
  ``psi = sigmoid(BN(conv(relu(W_g g + W_x x))))``). The gating signal ``g`` is a coarser context:
  the features pooled twice (2×4×4 cells) and convolved, upsampled to each gated grid.
  ``gate.gate1`` gates the 8×16×16 features, ``gate.gate2`` the 4×8×8 features (pooled once and
  convolved); the lesion map reads both (the second upsampled), as Schlemper's gated classifiers
  read every gated scale.
- ``trainable_saliency`` (our design; only the abstract of arXiv 2011.07482 is public): one
  soft-attention saliency head — conv 3×3 → BN → ReLU → conv 1×1 on the 8×16×16 features and
  their upsampled coarse context — whose sigmoid map (``gate.saliency_gate``) multiplies the
  features. Its logits (kept as ``gate.logits`` after each forward) can be supervised with "a
  lesion in this cell" on a fraction of the training cases (:mod:`..training.demo_recipe`).

Gates are found by the ``attention`` method (:mod:`..explainers.attention`): MONAI
``AttentionBlock`` modules automatically, others from the card's ``attention_gates``.
"""

from __future__ import annotations

from pathlib import Path

from .loaders import register_architecture, register_source

GATES = {"attention_gated": ["gate.gate1", "gate.gate2"], "trainable_saliency": ["gate.saliency_gate"]}


def _block(i, o):
    from torch import nn

    return [nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU()]


def _upsample(t, size):
    import torch.nn.functional as F

    return F.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)


def attention_gates(channels, feature_size):
    """The ``attention_gated`` gate: (module, output channels) for :func:`build_demo_network`'s ``gate``."""
    import torch
    from monai.networks.nets.attentionunet import AttentionBlock
    from torch import nn

    c = int(channels)

    class AttentionGates(nn.Module):
        """Two MONAI attention gates on two scales, gated by a coarser context; returns both gated
        feature sets on the finer grid (2c channels)."""

        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.MaxPool3d(2), *_block(c, c))  # 4×8×8
            self.context = nn.Sequential(nn.MaxPool3d(2), *_block(c, c))  # 2×4×4: the gating signal
            self.gate1 = AttentionBlock(3, f_int=c // 2, f_g=c, f_l=c)
            self.gate2 = AttentionBlock(3, f_int=c // 2, f_g=c, f_l=c)

        def forward(self, x1):
            x2 = self.down(x1)
            g = self.context(x2)
            gated1 = self.gate1(_upsample(g, x1.shape[2:]), x1)
            gated2 = self.gate2(_upsample(g, x2.shape[2:]), x2)
            return torch.cat([gated1, _upsample(gated2, x1.shape[2:])], 1)

    return AttentionGates(), 2 * c


def saliency_gate(channels, feature_size):
    """The ``trainable_saliency`` gate: (module, output channels) for :func:`build_demo_network`'s ``gate``."""
    import torch
    from torch import nn

    c = int(channels)

    class SaliencyGate(nn.Module):
        """features × sigmoid(saliency logits); the logits of the last forward stay in ``self.logits``
        (the training recipe supervises them)."""

        def __init__(self):
            super().__init__()
            self.context = nn.Sequential(nn.MaxPool3d(2), *_block(c, c))
            self.saliency = nn.Sequential(*_block(2 * c, 16), nn.Conv3d(16, 1, 1))
            self.saliency_gate = nn.Sigmoid()
            self.logits = None

        def forward(self, x1):
            context = _upsample(self.context(x1), x1.shape[2:])
            self.logits = self.saliency(torch.cat([x1, context], 1))
            return x1 * self.saliency_gate(self.logits)

    return SaliencyGate(), c


def _builder(gate):
    def build(in_channels=1, num_classes=4, channels=(8, 16, 32), input_size=(32, 64, 64), map_channels=8,
              coordinates=True):
        from .demo_model import build_demo_network

        return build_demo_network(in_channels, num_classes, channels, input_size, map_channels, coordinates, gate=gate)

    build.__doc__ = f"The demo network with the ``{gate.__name__}`` gate before its lesion map."
    return build


ARCHITECTURES = {"attention_gated": _builder(attention_gates), "trainable_saliency": _builder(saliency_gate)}
for _name, _build in ARCHITECTURES.items():  # `--arch attention_gated`, a card's "architecture"
    register_architecture(_name, _build)

MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
SHIPPED = ("demo-attention-gated", "demo-trainable-saliency-mask0", "demo-trainable-saliency-mask10",
           "demo-trainable-saliency-mask100")


def model_name(arch: str, mask_fraction: float = 0.0, seed: int = 0) -> str:
    """``demo-attention-gated`` / ``demo-trainable-saliency-mask10`` (+ ``-seedN`` for seeds ≠ 0)."""
    name = "demo-attention-gated" if arch == "attention_gated" else \
        f"demo-trainable-saliency-mask{round(100 * mask_fraction)}"
    return name if int(seed) == 0 else f"{name}-seed{int(seed)}"


def shipped_classifier(name: str, device="auto"):
    """A shipped self-explaining demo model (``SHIPPED``) from Resources/Models, weights and card."""
    from .loaders import load_classifier

    return load_classifier(MODELS_DIR / f"{name}.pt", device=device)


for _name in SHIPPED:  # `--model demo-attention-gated`, load_classifier("demo-attention-gated")
    if (MODELS_DIR / f"{_name}.pt").is_file():
        register_source(_name, lambda device, _name=_name: shipped_classifier(_name, device))
