"""Toy networks for the tests: small, hand-built or seeded, each with a known property a test relies on.

Import them from the tests (``from toy_models import BoxMeanModel``); pytest puts this folder on the path.
Each class keeps the exact layers (and, where it seeds itself, the seed) the tests were written against,
so the numbers the tests check do not change.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


# ---- CAM engine (test_cam) -----------------------------------------------------------------------
class ConvFlatLinear(nn.Module):
    """conv → flatten → one linear layer: HiResCAM at ``features`` sums to logit − bias."""

    def __init__(self, dims=3, in_channels=1, classes=4, size=8, inplace=False):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.features = nn.Sequential(conv(in_channels, 6, 3, padding=1), nn.ReLU(inplace=inplace),
                                      conv(6, 5, 3, padding=1, stride=2))
        self.act = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(5 * (size // 2) ** dims, classes)

    def forward(self, x):
        return self.head(self.act(self.features(x)).flatten(1))


class ConvGapLinear(nn.Module):
    """conv → ReLU → global average pool → linear (the CAM architecture)."""

    def __init__(self, dims=3, classes=3):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        pool = nn.AdaptiveAvgPool3d(1) if dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.early = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU())
        self.late = nn.Sequential(conv(4, 6, 3, padding=1), nn.ReLU())
        self.pool = pool
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        return self.head(self.pool(self.late(self.early(x))).flatten(1))


class TinyViT(nn.Module):
    """A ViT in miniature: patch-embedding conv → tokens (B, N, C) → transformer → mean → linear.

    (MONAI's ViT needs einops, which is not installed here; this has the same structure.)
    """

    def __init__(self):
        super().__init__()
        self.patch_embedding = nn.Conv3d(1, 16, 8, stride=8)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), num_layers=1)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(1))


# ---- loading (test_models) -----------------------------------------------------------------------
class SmallNet(nn.Module):
    """conv → ReLU(inplace) → strided conv → ReLU(inplace) → flatten → linear, on 8×8×8 inputs."""

    def __init__(self, classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv3d(4, 4, 3, padding=1, stride=2), nn.ReLU(inplace=True))
        self.head = nn.Linear(4 * 4 * 4 * 4, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


# ---- estimators beyond CAMs (test_attribution) ---------------------------------------------------
class TinyNet(nn.Module):
    """Two channels in (so channel summing is exercised), ReLU modules only, a linear head."""

    def __init__(self, shape=(6, 8, 7), classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * int(np.prod(shape)), classes)
        with torch.no_grad():
            self.head.weight[0].abs_()  # class 0 likes every feature: its Grad-CAM is not all zero

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class TanhAsFunction(nn.Module):
    """Calls ``torch.tanh`` as a function (not an ``nn`` module): guided backprop cannot see it.

    Two channels in, on 6×8×7 inputs (the shape of `TinyNet`'s).
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 6 * 8 * 7, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


# ---- known answers (test_attribution, test_fidelity) ---------------------------------------------
class BoxMeanModel(nn.Module):
    """Logit of class 0 = mean of channel 0 over a known box of the input; class 1: its negative."""

    def __init__(self, shape, box):
        super().__init__()
        self.register_buffer("mask", torch.zeros(shape))
        self.mask[box] = 1.0

    def forward(self, x):
        score = (x[:, 0] * self.mask).flatten(1).sum(1) / self.mask.sum()
        return torch.stack([score, -score], 1)


# ---- lesion detectors on a physical grid (test_explain, test_attribution, test_orientation) -------
class BlobDetector(nn.Module):
    """A hand-built lesion detector: mean filter minus a threshold → ReLU → flatten → linear.

    Responds only where the windowed CT is brighter than soft tissue, i.e. at the lesion.
    """

    def __init__(self, feature_shape, classes=2):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 27)
            self.features[0].bias.copy_(torch.tensor([-0.6, -0.65]))
        n = 2 * int(np.prod(feature_shape))
        self.head = nn.Linear(n, classes)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.head.weight[1] = -1.0  # class 1 says "no lesion"
            self.head.bias.fill_(0.25)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def blob_classifier(size=(16, 32, 32)):
    """`BlobDetector` as a softmax classifier ("lesion", "no lesion") with a card, on the CPU."""
    from saliency_inspector.models.card import ModelCard
    from saliency_inspector.models.loaders import load_classifier

    card = ModelCard.from_dict({"name": "blob", "classes": ["lesion", "no lesion"], "multilabel": False,
                                "input": {"size": list(size), "window": [-1000, 500]},
                                "target_layer": "features"})
    return load_classifier(BlobDetector(size).eval(), card=card, device="cpu")


class MaxPoolLesionDetector(nn.Module):
    """Fully convolutional lesion detector of any input size: bright-blob filter → ReLU → global max."""

    def __init__(self):
        super().__init__()
        self.blob = nn.Conv3d(1, 1, 3, padding=1)
        self.pool = nn.MaxPool3d(2)
        with torch.no_grad():
            self.blob.weight.fill_(1.0 / 27)
            self.blob.bias.fill_(-0.6)  # windowed soft tissue ≈ 0.48 stays below, the lesion (1.0) above

    def forward(self, x):
        a = torch.relu(self.pool(self.blob(x)))
        return torch.stack([a.amax(dim=(1, 2, 3, 4)) * 8.0 - 2.0, 2.0 - a.amax(dim=(1, 2, 3, 4)) * 8.0], 1)


# ---- tensor axis order (test_orientation) --------------------------------------------------------
class ZyxNet(nn.Module):
    """Conv features → flatten → linear on (D, H, W) tensors; non-cubic, so axis mix-ups change shapes."""

    def __init__(self, shape=(12, 16, 20)):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2))
        self.head = nn.Linear(4 * int(np.prod(np.asarray(shape) // 2)), 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Permute(nn.Module):
    """Swaps the first and last spatial axes: (B, C, Z, Y, X) ↔ (B, C, X, Y, Z)."""

    def forward(self, x):
        return x.permute(0, 1, 4, 3, 2)


class XyzTwin(nn.Module):
    """The same network fed (X, Y, Z) tensors; its target layer's output is in x, y, z order."""

    def __init__(self, zyx: ZyxNet):
        super().__init__()
        self.net = zyx
        self.to_xyz = Permute()

    def forward(self, x):
        features_xyz = self.to_xyz(self.net.features(x.permute(0, 1, 4, 3, 2)))
        return self.net.head(features_xyz.permute(0, 1, 4, 3, 2).flatten(1))


# ---- training with the mask loss (test_training) -------------------------------------------------
class MaskLossToy(nn.Module):
    """conv (``features``) → 1×1×1 conv (``head_map``, target layer, 2 channels) → flatten → linear."""

    def __init__(self, k=2, size=(2, 4, 4)):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU())
        self.head_map = nn.Conv3d(3, 2, 1)
        self.classifier = nn.Linear(2 * math.prod(size), k)

    def forward(self, x):
        return self.classifier(torch.flatten(self.head_map(self.features(x)), 1))


# ---- cross-checks against pytorch-grad-cam (test_cam_family) -------------------------------------
class PeerNet2d(nn.Module):
    """A 2-D classifier pytorch-grad-cam accepts: conv → BatchNorm → ReLU → strided conv → ReLU
    (``features``, 8 channels at 4×4 on 8×8 inputs) → 1×1 conv → Tanh (so y is not linear in the
    features: Shapley-CAM's Hessian term is not zero) → linear, 5 classes (Finer-CAM compares 3).
    Seeded; BatchNorm has non-trivial running statistics (FullGrad's effective bias)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 16, 5))
        with torch.no_grad():
            bn = self.features[1]
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        self.eval()

    def forward(self, x):
        return self.head(self.features(x))


class PeerNet3d(nn.Module):
    """The 3-D twin of :class:`PeerNet2d` for pytorch-grad-cam's 5-D path: conv3d → BatchNorm →
    ReLU → strided conv3d → ReLU (``features``, 6 channels at 3×4×5 on 6×8×10 inputs: no two
    axes equal, so a swapped axis shows) → 1×1×1 conv → Tanh → linear, 5 classes. Seeded."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.features = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                                      nn.Conv3d(4, 6, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.Conv3d(6, 6, 1), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 3 * 4 * 5, 5))
        with torch.no_grad():
            bn = self.features[1]
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x):
        return self.head(self.features(x))
