"""The shipped demo classifier: which organs of a phantom CT hold a lesion.

A small 3D CNN (multi-label: left lung, right lung, liver, kidney) whose head is
conv 1×1×1 → sigmoid → flatten → linear, as in Draelos & Carin's AxialNet: the 1×1×1 convolution
turns the features into 8 per-cell lesion probability maps (``lesion_map``, the default CAM target
layer; channel k < 4 is "a lesion of class k in this cell", the other 4 are free) and one linear
layer reads every cell of them. The 1×1×1 convolution also sees each cell's position (three fixed
coordinate channels), which lets the left-lung channel ignore right-lung lesions. At ``lesion_map`` the gradient of a class score is the class's
linear weights reshaped to the feature grid (G = W^c exactly), so HiResCAM (Σ_k G_k ⊙ A_k) sums to
logit − bias and keeps *where* the class looks, while Grad-CAM averages G over space first (one
weight per channel): with several channels each class gets its own Grad-CAM picture, but a blurred
one.

Trained (:func:`saliency_inspector.training.demo_recipe.train_demo_model`) on phantom cases made
here (:func:`make_dataset`: inputs, labels, organ and lesion masks at the model's size) with BCE on
the labels plus a per-cell lesion BCE on the lesion map (deep supervision from the phantom's lesion
masks). Because the lesion maps are supervised, the maps are partly right by training: this model
is a known-answer model for checking the saliency pipeline (geometry, resampling, metrics), not
evidence that HiResCAM finds lesions in general.

Seeded and deterministic on CPU (same torch version and thread count → same weights):
``saliency-inspector train-demo --seed 0`` rewrites the shipped weights and model card.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..synth.cohort import CLASS_ORGANS, DISTRACTOR_ORGANS, LESION_SCALE  # noqa: F401 - re-exported
from .card import ModelCard
from .loaders import Classifier, build_network, register_architecture, register_source, resolve_device
from .weights import load_weights

DEMO_NAME = "demo-phantom-lesions"
MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
DEMO_WEIGHTS_PATH = MODELS_DIR / f"{DEMO_NAME}.pt"
DEMO_CARD_PATH = MODELS_DIR / f"{DEMO_NAME}.json"

DEMO_CLASSES = tuple(CLASS_ORGANS)  # lung_left, lung_right, liver, kidney

INPUT_SIZE = (32, 64, 64)  # model tensor (D, H, W)
# HU mapped linearly onto [0, 1], clipped. A soft-tissue window: liver and kidney lesions are only
# 40-150 HU darker than their organ, ~3% of a [-1000, 400] window's range (the network did not learn
# them in the CPU budget); lung lesions still stand out (lung clips to 0, lesions ~0.45).
WINDOW = (-200.0, 300.0)
TARGET_LAYER = "lesion_map"
DEFAULT_ARCH_KWARGS = {
    "in_channels": 1,
    "num_classes": len(DEMO_CLASSES),
    "channels": [8, 16, 32],
    "input_size": list(INPUT_SIZE),
    "map_channels": 8,  # ≥ 8 target-layer channels: Grad-CAM has a weight per channel to differ by
    "coordinates": True,
}
POOLING = 4  # two 2× max-poolings: (32, 64, 64) -> feature grid (8, 16, 16), cells of ~25×25×37 mm


# ---- network --------------------------------------------------------------------------------------
def build_demo_network(in_channels=1, num_classes=4, channels=(8, 16, 32), input_size=INPUT_SIZE,
                       map_channels=1, coordinates=False, gate=None):
    """The demo CNN: conv blocks (``features``) → 1×1×1 conv to ``map_channels`` + sigmoid
    (``lesion_map``, the CAM target layer) → flatten → linear (``classifier``).

    ``input_size`` (D, H, W) is fixed because the linear head sees every feature cell. With
    ``map_channels`` ≥ ``num_classes`` the first ``num_classes`` channels are trained as per-class
    lesion maps (one detector per class), so Grad-CAM's channel weights, and its maps, differ between
    classes; with one channel (the first shipped model) every class's Grad-CAM is the same picture.
    With ``coordinates`` the features end with three fixed channels, each cell's (z, y, x) position
    in [-1, 1], so the 1×1×1 lesion-map convolution can tell "a lesion in the *left* lung" from one in
    the right (3×3 convolutions see mirror images alike).
    ``gate``: optionally a function ``gate(channels, feature_size) -> (module, out_channels)``
    whose module sits between the features and the lesion map (``gate``; the self-explaining demo
    networks of :mod:`.attention_models`); the coordinates are then appended after it, so the gate
    sees only image features. Returns an ``nn.Module`` in training mode with (caller-seeded) random
    weights.
    """
    import torch
    from torch import nn

    if len(channels) != 3:
        raise ValueError(f"channels must list 3 widths, got {list(channels)}")
    input_size = tuple(int(n) for n in input_size)
    if any(n % POOLING for n in input_size):
        raise ValueError(f"input_size {input_size} must be divisible by {POOLING}")
    feature_size = tuple(n // POOLING for n in input_size)

    def block(i, o):
        # ReLU not in place: the CAM engine must not depend on it, but it keeps activations simple
        return [nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU()]

    c1, c2, c3 = (int(c) for c in channels)
    m = int(map_channels)
    if m < 1:
        raise ValueError(f"map_channels must be at least 1, got {map_channels}")

    class DemoNet(nn.Module):
        """AxialNet-like classifier; ``hirescam`` gives the exact class maps at ``lesion_map``."""

        def __init__(self):
            super().__init__()
            # max pooling, not strided convolution: a small lesion's response survives downsampling
            layers = [*block(in_channels, c1), nn.MaxPool3d(2), *block(c1, c2), nn.MaxPool3d(2),
                      *block(c2, c3), nn.Conv3d(c3, c3, 3, padding=1), nn.ReLU()]
            n_features = c3
            if gate is None:
                if coordinates:  # inside the features: the shipped demo model's module layout
                    layers.append(_coordinates_module(feature_size))
            else:
                self.gate, n_features = gate(c3, feature_size)
                self.coordinates = _coordinates_module(feature_size) if coordinates else nn.Identity()
            self.features = nn.Sequential(*layers)
            self.lesion_map = nn.Sequential(nn.Conv3d(n_features + (3 if coordinates else 0), m, 1), nn.Sigmoid())
            self.classifier = nn.Linear(m * math.prod(feature_size), num_classes)
            self.input_size = input_size
            self.feature_size = feature_size

        def forward(self, x):
            self._check(x)
            return self.classifier(torch.flatten(self.lesion_map(self._map_input(x)), 1))

        def _map_input(self, x):
            """What the lesion map reads: the features, gated where the network has a gate."""
            features = self.features(x)
            return features if gate is None else self.coordinates(self.gate(features))

        def hirescam(self, x, with_lesion_logits=False):
            """(logits, maps): maps (B, K, d, h, w) = Σ_channels W^c ⊙ lesion_map, signed, differentiable.

            With ``with_lesion_logits`` also the per-cell lesion logits (B, M, d, h, w), the lesion
            map before its sigmoid (training supervises them).
            """
            self._check(x)
            conv, sigmoid = self.lesion_map
            lesion_logits = conv(self._map_input(x))
            cells = sigmoid(lesion_logits)
            logits = self.classifier(torch.flatten(cells, 1))
            weights = self.classifier.weight.view(-1, cells.shape[1], *self.feature_size)  # (K, M, d, h, w)
            maps = (cells[:, None] * weights[None]).sum(2)
            return (logits, maps, lesion_logits) if with_lesion_logits else (logits, maps)

        def _check(self, x):
            if x.dim() != 5 or tuple(x.shape[2:]) != self.input_size:
                raise ValueError(f"the demo network takes (B, C, {', '.join(map(str, self.input_size))}) "
                                 f"tensors, got {tuple(x.shape)}; resize the CT to the model card's input.size")

    return DemoNet()


def _coordinates_module(size):
    """An ``nn.Module`` appending each voxel's position (3 channels) to its input of spatial ``size``.
    Built in a function so that importing this module does not import torch."""
    import torch
    from torch import nn

    class AppendCoordinates(nn.Module):
        """Appends 3 channels: each voxel's (z, y, x) index scaled to [-1, 1] (a fixed buffer, not in
        the state dict)."""

        def __init__(self, size):
            super().__init__()
            axes = [torch.linspace(-1.0, 1.0, int(n)) for n in size]
            self.register_buffer("grid", torch.stack(torch.meshgrid(*axes, indexing="ij"))[None], persistent=False)

        def forward(self, x):
            return torch.cat([x, self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1, -1)], 1)

    return AppendCoordinates(size)


# ---- preprocessing (the model card's recipe: window, then resize in physical space) ---------------
def input_spec(size=INPUT_SIZE, window=WINDOW):
    """The demo card's input recipe as an :class:`InputSpec`: ``size`` (D, H, W) voxels in LPS
    orientation over the CT's field of view, the soft-tissue ``window``, −1000 HU outside the CT."""
    from .card import InputSpec

    return InputSpec(size=tuple(int(n) for n in size), window=tuple(float(w) for w in window), orientation="LPS",
                     axes="zyx", pad_value=-1000.0, channels=1)


def model_grid(ct, size=INPUT_SIZE):
    """The Volume grid of the model input, as the card's preprocessing makes it for ``ct``:
    ``size`` (D, H, W) voxels, LPS-oriented, covering the CT's field of view (for an oblique CT,
    the axis-aligned box around it)."""
    from .preprocess import input_grid

    return input_grid(ct, tuple(int(n) for n in size), orientation="LPS")


def ct_to_input(ct, size=INPUT_SIZE, window=WINDOW) -> np.ndarray:
    """CT Volume (HU) → float32 array (D, H, W) in [0, 1]: exactly what inference feeds the network
    (:func:`..preprocess.preprocess` with the card's recipe). Training through anything else lets
    the two drift apart: with the CT's own direction instead of the card's LPS, an oblique training
    CT looked different from the same CT at inference (mean |difference| 0.085), and the models
    trained so lost kidney AUC on oblique CTs (0.45–0.64)."""
    from .preprocess import preprocess

    return preprocess(ct, input_spec(size, window)).tensor[0, 0].numpy().astype(np.float32)


# ---- data -----------------------------------------------------------------------------------------
def random_lesions(rng: np.random.Generator) -> list:
    """A random set of lesion organs for one training case: 0 to 2 demo-class lesions, sometimes a distractor."""
    n = rng.choice([0, 1, 2], p=[0.25, 0.4, 0.35])
    classes = rng.choice(len(DEMO_CLASSES), size=n, replace=False)
    organs = [str(rng.choice(CLASS_ORGANS[DEMO_CLASSES[c]])) for c in sorted(classes)]
    if rng.random() < 0.2:
        organs.append(str(rng.choice(DISTRACTOR_ORGANS)))
    return organs


def labels_for(lesion_organs) -> np.ndarray:
    """Multi-label target (float32, one per demo class) for a list of lesion organs."""
    return np.array([float(any(o in CLASS_ORGANS[c] for o in lesion_organs)) for c in DEMO_CLASSES],
                    dtype=np.float32)


def make_example(seed: int, lesions, size=INPUT_SIZE, phantom_size=None, oblique=False):
    """One phantom case as model data: input (D,H,W), labels (K,), class organ masks (K,D,H,W), body
    mask (D,H,W) and lesion masks (K+1,D,H,W): each class's (distractor lesions belong to no class),
    then the union of all lesions.

    The phantom is made at ``phantom_size`` (x, y, z voxels; default: the model's size, same field
    of view), optionally ``oblique``, then goes through :func:`ct_to_input` like any CT, so training
    sees exactly what inference sees — including the smoother input a larger CT gives once resized
    (the trilinear resize averages neighbouring voxels: the noise SD drops from 0.029 to ~0.017).
    """
    from ..synth.phantom import make_phantom
    from ..io.volume import resample_to

    phantom_size = tuple(int(n) for n in size[::-1]) if phantom_size is None else tuple(int(n) for n in phantom_size)
    case = make_phantom(seed=seed, size=phantom_size, lesions=list(lesions), oblique=bool(oblique),
                        lesion_scale=LESION_SCALE)
    x = ct_to_input(case.ct, size)
    grid = model_grid(case.ct, size)
    organs = case.organs

    def on_grid(mask):
        return resample_to(organs.grid.with_array(mask), grid, "nearest").array

    organ_masks = []
    for name in DEMO_CLASSES:
        mask = np.zeros(size, bool)
        for organ in CLASS_ORGANS[name]:
            if organ in organs.names:
                mask |= on_grid(organs.mask(organ))
        organ_masks.append(mask)
    body = on_grid(organs.mask("body"))
    lesion = np.zeros((len(DEMO_CLASSES) + 1, *size), bool)
    for segment, info in zip(case.lesions, case.info["lesions"]):
        mask = on_grid(segment.mask)
        lesion[-1] |= mask
        for k, name in enumerate(DEMO_CLASSES):
            if info["organ"] in CLASS_ORGANS[name]:
                lesion[k] |= mask
    return x, labels_for(lesions), np.stack(organ_masks), body, lesion


# The phantom sizes (x, y, z voxels, same field of view) a training case is made at, with their
# odds: the model's own size (noisy input) and larger CTs resized to it (smoother input). A model
# trained on the first alone lost liver and kidney AUC on 160×160×80 and 256×256×100 CTs (0.73-0.89).
TRAINING_PHANTOM_SIZES = (((64, 64, 32), 0.4), ((96, 96, 40), 0.2), ((128, 128, 60), 0.2),
                          ((160, 160, 80), 0.1), ((256, 256, 100), 0.1))
OBLIQUE_FRACTION = 0.15  # of the cases made larger than the model input: tilted voxel axes


def case_plan(seeds, rng, mixed_sizes=True):
    """For each seed: (seed, lesion organs, phantom size (x, y, z) or None, oblique), drawn from ``rng``
    in order (so a plan, and the dataset made from it, depend only on the seeds and ``rng``)."""
    sizes = [s for s, _ in TRAINING_PHANTOM_SIZES]
    odds = np.array([p for _, p in TRAINING_PHANTOM_SIZES])
    plan = []
    for seed in seeds:
        lesions = random_lesions(rng)
        if not mixed_sizes:
            plan.append((int(seed), lesions, None, False))
            continue
        size = sizes[rng.choice(len(sizes), p=odds / odds.sum())]
        oblique = size != sizes[0] and rng.random() < OBLIQUE_FRACTION
        plan.append((int(seed), lesions, size, bool(oblique)))
    return plan


def _example_from_plan(item, size=INPUT_SIZE):
    seed, lesions, phantom_size, oblique = item
    return make_example(seed, lesions, size, phantom_size, oblique)


def make_dataset(seeds, rng, size=INPUT_SIZE, progress=None, mixed_sizes=False, workers=1):
    """Inputs, labels, class-organ, body and lesion masks for phantoms with these seeds and random
    lesion sets (:func:`make_example`), stacked. ``mixed_sizes``: each case made at a size drawn
    from :data:`TRAINING_PHANTOM_SIZES` (the training recipe), else at the model's size.
    ``workers`` > 1 makes the phantoms in that many processes (same result: the plan is drawn first)."""
    import functools
    import time

    plan = case_plan(seeds, rng, mixed_sizes)
    make = functools.partial(_example_from_plan, size=tuple(int(n) for n in size))
    pool = None
    if int(workers) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(int(workers))
    examples = pool.imap(make, plan, chunksize=4) if pool is not None else map(make, plan)
    xs, ys, ms, bodies, lesion_masks = [], [], [], [], []
    said = time.time()
    try:
        for i, (x, y, m, body, lesion) in enumerate(examples):
            xs.append(x), ys.append(y), ms.append(m), bodies.append(body), lesion_masks.append(lesion)
            if progress and (time.time() - said >= 5.0 or i + 1 == len(plan)):  # a line at least every ~5 s
                progress(f"  phantoms {i + 1}/{len(plan)}")
                said = time.time()
    finally:
        if pool is not None:
            pool.terminate()
    return np.stack(xs), np.stack(ys), np.stack(ms), np.stack(bodies), np.stack(lesion_masks)


def lesion_cells(lesion_masks):
    """Lesion masks (N, K+1, D, H, W) → (N, K+1, d, h, w) float: 1 where a feature cell holds lesion
    voxels of that class (the last channel: of any lesion)."""
    import torch
    import torch.nn.functional as F

    return F.max_pool3d(torch.as_tensor(np.asarray(lesion_masks), dtype=torch.float32), POOLING)


def demo_card(training=None, name=DEMO_NAME) -> dict:
    """The demo model's card (DESIGN.md's model-card format), with an optional ``training`` section."""
    card = {
        "name": name,
        "classes": list(DEMO_CLASSES),
        "multilabel": True,
        # trained on phantoms stored with the identity direction: the network knows LPS-ordered arrays
        "input": {"size": list(INPUT_SIZE), "spacing": None, "orientation": "LPS", "axes": "zyx",
                  "window": list(WINDOW), "pad_value": -1000.0, "channels": 1},
        "target_layer": TARGET_LAYER,
        "architecture": {"name": "demo", "kwargs": dict(DEFAULT_ARCH_KWARGS)},
    }
    if training is not None:
        card["training"] = training
    return card


def demo_classifier(device="auto") -> Classifier:
    """The shipped demo classifier (multi-label lesion classes), weights and card from Resources/Models."""
    dev = resolve_device(device)
    weights, card_path = Path(DEMO_WEIGHTS_PATH), Path(DEMO_CARD_PATH)
    if not weights.is_file() or not card_path.is_file():
        raise InputError(f"{weights}: the demo model is not there; create it with "
                         "`saliency-inspector train-demo`")
    card = ModelCard.from_json(card_path)
    spec = card.architecture or {"name": "demo", "kwargs": {}}
    module = build_network({"name": "demo", "kwargs": spec.get("kwargs") or {}}, card)
    load_weights(module, weights)
    return Classifier(module.to(dev), card, dev, source="demo", kind="demo")


# The generic loader knows the demo only through these entries: `--arch demo`, a card whose
# architecture is "demo", and `load_classifier("demo")` work once this module is imported.
register_architecture("demo", build_demo_network)
register_source("demo", demo_classifier)

from . import attention_models  # noqa: E402,F401 - registers the self-explaining demo networks and models
