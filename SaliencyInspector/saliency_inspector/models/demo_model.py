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

Training (:func:`train_demo_model`) on :func:`saliency_inspector.phantom.make_phantom` cases:
BCE on the labels plus a per-cell "is there a lesion of class k here?" BCE on lesion-map channel k
(deep supervision from the phantom's lesion masks), with the linear head initialised from the organ
atlas (the mean organ fraction of each cell) and trained 40× slower than the rest, so class c
stays "lesion evidence inside organ c" while the detectors learn. Plain BCE, BCE + Draelos's mask
loss, and one shared lesion channel stayed near chance for liver and kidney in a CPU budget of
minutes. Because the lesion maps are supervised, the maps are partly right by training: this model
is a known-answer model for checking the saliency pipeline (geometry, resampling, metrics), not
evidence that HiResCAM finds lesions in general.

Seeded and deterministic on CPU (same torch version and thread count → same weights):
``saliency-inspector train-demo --seed 0`` rewrites the shipped weights and model card.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import finite
from ..synth.cohort import CLASS_ORGANS, DISTRACTOR_ORGANS, LESION_SCALE  # noqa: F401 - re-exported
from .loading import (Classifier, ModelCard, build_network, load_weights, register_architecture,
                      register_source, resolve_device)

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

LESION_POS_WEIGHT = 10.0  # lesion cells are ~0.2% of all cells: weight them up in the per-cell loss
HEAD_INIT_SCALE = 4.0  # initial class weight of a cell fully inside the class's organ
N_TRAIN = 960
N_VALIDATION = 64
EPOCHS = 25
BATCH_SIZE = 8
LEARNING_RATE = 4e-3
# The linear head (64k weights, one per cell, channel and class) starts as the organ atlas; Adam
# moves every weight by about its rate each step whatever its gradient, so at the detectors' rate the
# atlas would fill with noise from a few hundred cases: the head learns 40x slower.
HEAD_LEARNING_RATE = 1e-4
TORCH_THREADS = 2
# Phantom seeds: training cases use 1_000_000*(seed+1)+i, validation cases 1_000_000*(seed+1)+500_000+i,
# so seeds below 1_000_000 (the tests', the demo's) are never seen in training.
_TRAIN_OFFSET = 0
_VALIDATION_OFFSET = 500_000


# ---- network --------------------------------------------------------------------------------------
def build_demo_network(in_channels=1, num_classes=4, channels=(8, 16, 32), input_size=INPUT_SIZE,
                       map_channels=1, coordinates=False):
    """The demo CNN: conv blocks (``features``) → 1×1×1 conv to ``map_channels`` + sigmoid
    (``lesion_map``, the CAM target layer) → flatten → linear (``classifier``).

    ``input_size`` (D, H, W) is fixed because the linear head sees every feature cell. With
    ``map_channels`` ≥ ``num_classes`` the first ``num_classes`` channels are trained as per-class
    lesion maps (one detector per class), so Grad-CAM's channel weights, and its maps, differ between
    classes; with one channel (the first shipped model) every class's Grad-CAM is the same picture.
    With ``coordinates`` the features end with three fixed channels, each cell's (z, y, x) position
    in [-1, 1], so the 1×1×1 lesion-map convolution can tell "a lesion in the *left* lung" from one in
    the right (3×3 convolutions see mirror images alike).
    Returns an ``nn.Module`` in training mode with (caller-seeded) random weights.
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
            if coordinates:
                layers.append(_coordinates_module(feature_size))
            self.features = nn.Sequential(*layers)
            self.lesion_map = nn.Sequential(nn.Conv3d(c3 + (3 if coordinates else 0), m, 1), nn.Sigmoid())
            self.classifier = nn.Linear(m * math.prod(feature_size), num_classes)
            self.input_size = input_size
            self.feature_size = feature_size

        def forward(self, x):
            self._check(x)
            return self.classifier(torch.flatten(self.lesion_map(self.features(x)), 1))

        def hirescam(self, x, with_lesion_logits=False):
            """(logits, maps): maps (B, K, d, h, w) = Σ_channels W^c ⊙ lesion_map, signed, differentiable.

            With ``with_lesion_logits`` also the per-cell lesion logits (B, M, d, h, w), the lesion
            map before its sigmoid (training supervises them).
            """
            self._check(x)
            conv, sigmoid = self.lesion_map
            lesion_logits = conv(self.features(x))
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


def init_head_from_atlas(model, organ_masks):
    """Class weights = HEAD_INIT_SCALE × the mean fraction of each feature cell inside the class's
    organ (masks (N, K, D, H, W)), on the class's own lesion-map channel (on the single channel of a
    one-channel map; other channels start at 0); lesion map biased towards "no lesion"; class bias
    negative."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        masks = torch.as_tensor(np.asarray(organ_masks), dtype=torch.float32)
        atlas = F.avg_pool3d(masks, POOLING).mean(0)  # (K, d, h, w)
        n_classes, n_maps = atlas.shape[0], model.lesion_map[0].out_channels
        weight = torch.zeros(n_classes, n_maps, *atlas.shape[1:])
        for k in range(n_classes):
            weight[k, k if n_maps >= n_classes else 0] = HEAD_INIT_SCALE * atlas[k]
        model.classifier.weight.copy_(weight.flatten(1))
        model.classifier.bias.fill_(-2.0)
        model.lesion_map[0].bias.fill_(-4.0)


# ---- preprocessing (the model card's recipe: window, then resize in physical space) ---------------
def model_grid(ct, size=INPUT_SIZE):
    """The Volume grid of the model input: the CT's field of view and direction, ``size`` (D, H, W) voxels.

    Voxel boxes cover the same physical extent as the CT's (edges aligned, not centres), exactly as
    :func:`saliency_inspector.preprocess.covering_grid` makes it for any model.
    """
    from .preprocess import covering_grid

    return covering_grid(ct, tuple(int(n) for n in size))


def ct_to_input(ct, size=INPUT_SIZE, window=WINDOW) -> np.ndarray:
    """CT Volume (HU) → float32 array (D, H, W) in [0, 1]: resized in physical space, then windowed."""
    from .preprocess import window as preprocess_window
    from ..io.volume import resample_to

    grid = model_grid(ct, size)
    resized = resample_to(ct.with_array(ct.array.astype(np.float32)), grid, "linear", default_value=window[0])
    return preprocess_window(resized.array, *window).astype(np.float32)


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


def make_example(seed: int, lesions, size=INPUT_SIZE):
    """One phantom case as model data: input (D,H,W), labels (K,), class organ masks (K,D,H,W), body
    mask (D,H,W) and lesion masks (K+1,D,H,W): each class's (distractor lesions belong to no class),
    then the union of all lesions.

    The phantom is generated straight at the model's size (same field of view), then goes through
    :func:`ct_to_input` like any CT, so training sees exactly what inference sees.
    """
    from ..synth.phantom import make_phantom
    from ..io.volume import resample_to

    case = make_phantom(seed=seed, size=tuple(int(n) for n in size[::-1]), lesions=list(lesions),
                        lesion_scale=LESION_SCALE)
    x = ct_to_input(case.ct, size)
    grid = model_grid(case.ct, size)
    organs = case.organs
    organ_masks = []
    for name in DEMO_CLASSES:
        mask = np.zeros(size, bool)
        for organ in CLASS_ORGANS[name]:
            if organ in organs.names:
                mask |= resample_to(organs.grid.with_array(organs.mask(organ)), grid, "nearest").array
        organ_masks.append(mask)
    body = resample_to(organs.grid.with_array(organs.mask("body")), grid, "nearest").array
    lesion = np.zeros((len(DEMO_CLASSES) + 1, *size), bool)
    for segment, info in zip(case.lesions, case.info["lesions"]):
        on_grid = resample_to(case.lesions.grid.with_array(segment.mask), grid, "nearest").array
        lesion[-1] |= on_grid
        for k, name in enumerate(DEMO_CLASSES):
            if info["organ"] in CLASS_ORGANS[name]:
                lesion[k] |= on_grid
    return x, labels_for(lesions), np.stack(organ_masks), body, lesion


def make_dataset(seeds, rng, size=INPUT_SIZE, progress=None):
    """Inputs, labels and class-organ masks for phantoms with these seeds and random lesion sets."""
    xs, ys, ms, bodies, lesion_masks = [], [], [], [], []
    for i, seed in enumerate(seeds):
        x, y, m, body, lesion = make_example(int(seed), random_lesions(rng), size)
        xs.append(x), ys.append(y), ms.append(m), bodies.append(body), lesion_masks.append(lesion)
        if progress and (i + 1) % 50 == 0:
            progress(f"  phantoms {i + 1}/{len(seeds)}")
    return np.stack(xs), np.stack(ys), np.stack(ms), np.stack(bodies), np.stack(lesion_masks)


def lesion_cells(lesion_masks):
    """Lesion masks (N, K+1, D, H, W) → (N, K+1, d, h, w) float: 1 where a feature cell holds lesion
    voxels of that class (the last channel: of any lesion)."""
    import torch
    import torch.nn.functional as F

    return F.max_pool3d(torch.as_tensor(np.asarray(lesion_masks), dtype=torch.float32), POOLING)


# ---- training -------------------------------------------------------------------------------------
def train_demo_model(out_dir=None, seed=0, progress=None, *, n_train=N_TRAIN, n_validation=N_VALIDATION,
                     epochs=EPOCHS):
    """Train the demo classifier from ``seed`` and write ``<name>.pt`` (state dict) + ``<name>.json`` (card).

    ``out_dir`` defaults to the shipped ``Resources/Models``. Deterministic on CPU for a given seed,
    torch version and thread count. Validation uses ``n_validation`` phantoms with seeds that
    training never saw; its accuracy, per-class ROC AUC and HiResCAM mass-in-organ are stored in
    the card's ``training`` section. Returns ``{"weights": Path, "card": Path, "training": dict}``.
    """
    import torch

    say = progress or (lambda message: None)
    if int(seed) < 0:
        raise InputError(f"--seed {seed}: the seed must be a non-negative integer")
    out_dir = MODELS_DIR if out_dir is None else Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder for the weights and card")

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(TORCH_THREADS)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    try:
        base = 1_000_000 * (int(seed) + 1)
        rng = np.random.default_rng(int(seed))
        say(f"generating {n_train} training phantoms (seeds {base + _TRAIN_OFFSET}...)")
        x, y, masks, _, lesions = make_dataset(base + _TRAIN_OFFSET + np.arange(n_train), rng, progress=say)
        say(f"generating {n_validation} validation phantoms with unseen seeds")
        val = make_dataset(base + _VALIDATION_OFFSET + np.arange(n_validation), rng)

        torch.manual_seed(int(seed))
        model = build_demo_network(**DEFAULT_ARCH_KWARGS)
        init_head_from_atlas(model, masks)
        history = _fit(model, torch.from_numpy(x)[:, None], torch.from_numpy(y), lesion_cells(lesions), epochs,
                       torch.Generator().manual_seed(int(seed)), say)
        model.eval()
        metrics = validate(model, *val[:4])
        say(f"validation on {n_validation} unseen phantoms: " + ", ".join(
            f"{key.replace('_', ' ')} {value:.3f}" if value is not None else f"{key.replace('_', ' ')} n/a"
            for key, value in metrics.items() if key not in ("n_cases", "roc_auc")))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

    training = {
        "seed": int(seed), "n_cases": int(n_train), "epochs": int(epochs), "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE, "head_learning_rate": HEAD_LEARNING_RATE,
        "lesion_cell_pos_weight": LESION_POS_WEIGHT,
        "head_init": f"organ atlas x {HEAD_INIT_SCALE}", "lesion_scale": LESION_SCALE,
        "torch_threads": TORCH_THREADS,
        "torch_version": torch.__version__, "train_seeds": [base + _TRAIN_OFFSET, base + _TRAIN_OFFSET + n_train - 1],
        "validation_seeds": [base + _VALIDATION_OFFSET, base + _VALIDATION_OFFSET + n_validation - 1],
        "data": "make_phantom at the model size; 0-2 lesions among lung_left, lung_right, liver, "
                "kidney_left/right, plus a spleen lesion (negative for all classes) in ~20% of cases",
        "final_loss": history[-1], "seconds": round(time.time() - started, 1),
        "validation": metrics,
    }
    # seed 0 is the shipped model; other seeds get their own name so they never overwrite it
    name = DEMO_NAME if int(seed) == 0 else f"{DEMO_NAME}-seed{int(seed)}"
    card = demo_card(training, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    torch.save(model.state_dict(), weights_path)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    say(f"wrote {weights_path} and {card_path} in {training['seconds']:.0f} s")
    return {"weights": weights_path, "card": card_path, "training": training}


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


def _fit(model, x, y, cells, epochs, generator, say):
    """Adam with a cosine-decaying learning rate on BCE (labels) + per-cell lesion BCE (lesion map);
    returns the mean loss per epoch."""
    import torch
    import torch.nn.functional as F

    head = model.classifier.weight
    rest = [p for p in model.parameters() if p is not head]
    optimizer = torch.optim.Adam([{"params": rest, "lr": LEARNING_RATE},
                                  {"params": [head], "lr": HEAD_LEARNING_RATE}])
    steps = epochs * math.ceil(len(x) / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    pos_weight = torch.tensor(LESION_POS_WEIGHT)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total, bce_total = 0.0, 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            logits, _, lesion_logits = model.hirescam(_augment(x[idx], generator), with_lesion_logits=True)
            bce = F.binary_cross_entropy_with_logits(logits, y[idx])
            # channel k learns "a lesion of class k in this cell"; a one-channel map (the shipped
            # model) learns "any lesion here", distractors included
            target = cells[idx, :-1] if lesion_logits.shape[1] > 1 else cells[idx, -1:]
            cell_loss = F.binary_cross_entropy_with_logits(lesion_logits[:, :target.shape[1]], target,
                                                           pos_weight=pos_weight)
            loss = bce + cell_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            bce_total += bce.item() * len(idx)
        history.append(round(total / len(x), 5))
        say(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} (BCE {bce_total / len(x):.4f})")
    return history


def _augment(xb, generator):
    """A small per-case intensity gain. No noise (the liver lesions are only ~3 noise SDs from the
    liver), no flips (they would swap left and right), no shifts (organs would leave their cells)."""
    import torch

    gain = 1 + 0.02 * (2 * torch.rand(len(xb), 1, 1, 1, 1, generator=generator) - 1)
    return (xb * gain).clamp(0, 1)


# ---- validation -----------------------------------------------------------------------------------
def validate(model, x, y, organ_masks, body) -> dict:
    """Accuracy, exact match, per-class ROC AUC and HiResCAM mass-in-organ on held-out examples.

    Mass in organ: Σ_organ ReLU(HiResCAM) / Σ_body ReLU(HiResCAM) for each present label, with the
    feature-resolution map upsampled (trilinear) to the input grid; a uniform map scores |organ|/|body|.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        logits, maps = model.hirescam(torch.from_numpy(np.asarray(x, np.float32))[:, None])
        maps = F.relu(F.interpolate(maps, size=tuple(x.shape[1:]), mode="trilinear", align_corners=False))
    prob = torch.sigmoid(logits).numpy()
    pred = prob > 0.5
    truth = np.asarray(y) > 0.5
    aucs = {}
    for k, name in enumerate(DEMO_CLASSES):
        both = len(np.unique(truth[:, k])) == 2
        aucs[name] = float(roc_auc_score(truth[:, k], prob[:, k])) if both else float("nan")
    masses, uniforms = [], []
    for b, k in zip(*np.nonzero(truth)):
        region, organ = body[b], organ_masks[b, k] & body[b]
        s = maps[b, k].numpy()
        total = s[region].sum()
        masses.append(float(s[organ].sum() / total) if total > 0 else 0.0)
        uniforms.append(float(organ.sum() / region.sum()))
    return {
        "n_cases": int(len(x)),
        "accuracy": float((pred == truth).mean()),
        "exact_match": float((pred == truth).all(axis=1).mean()),
        "roc_auc": {name: finite(auc) for name, auc in aucs.items()},
        "mean_roc_auc": finite(np.nanmean(list(aucs.values()))) if any(np.isfinite(list(aucs.values()))) else None,
        "hirescam_mass_in_organ": finite(np.mean(masses)) if masses else None,
        "uniform_mass_in_organ": finite(np.mean(uniforms)) if uniforms else None,
    }


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
