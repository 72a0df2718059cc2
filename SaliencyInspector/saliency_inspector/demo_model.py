"""The shipped demo classifier: which organs of a phantom CT hold a lesion.

A small 3D CNN (multi-label: left lung, right lung, liver, kidney) whose head is
conv 1×1×1 → flatten → linear, as in Draelos & Carin's AxialNet. With that head the gradient of a
class score with respect to the target layer is the class's linear weights, reshaped to the
feature grid (G = W^c exactly), so HiResCAM (Σ_k G_k ⊙ A_k) is faithful and differs from
Grad-CAM, which averages G over space first.

It is trained on :func:`saliency_inspector.phantom.make_phantom` cases with BCE plus Draelos's
mask loss (HiResCAM mass outside the organ a present label belongs to, λ = 1/3). Training is
seeded and deterministic on CPU (same torch version and thread count → same weights):
``saliency-inspector train-demo --seed 0`` rewrites the shipped weights and model card.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .errors import InputError

DEMO_NAME = "demo-phantom-lesions"
MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
DEMO_WEIGHTS_PATH = MODELS_DIR / f"{DEMO_NAME}.pt"
DEMO_CARD_PATH = MODELS_DIR / f"{DEMO_NAME}.json"

DEMO_CLASSES = ("lung_left", "lung_right", "liver", "kidney")
# organs (phantom segment names) whose lesion makes each class present
CLASS_ORGANS = {
    "lung_left": ("lung_left",),
    "lung_right": ("lung_right",),
    "liver": ("liver",),
    "kidney": ("kidney_left", "kidney_right"),
}
# lesions in these organs are negatives for every class: they teach the model that *where* matters
DISTRACTOR_ORGANS = ("spleen",)

INPUT_SIZE = (32, 64, 64)  # model tensor (D, H, W)
WINDOW = (-1000.0, 400.0)  # HU mapped linearly onto [0, 1], clipped
TARGET_LAYER = "features"
DEFAULT_ARCH_KWARGS = {
    "in_channels": 1,
    "num_classes": len(DEMO_CLASSES),
    "channels": [8, 16, 32, 32],
    "reduced_channels": 8,
    "input_size": list(INPUT_SIZE),
}
# strides of the feature blocks (D, H, W): (32, 64, 64) -> (8, 8, 8)
_STRIDES = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1))

MASK_LOSS_WEIGHT = 1.0 / 3.0  # λ in Draelos et al.
N_TRAIN = 480
N_VALIDATION = 32
EPOCHS = 24
BATCH_SIZE = 8
LEARNING_RATE = 2e-3
TORCH_THREADS = 2
# Phantom seeds: training cases use 1_000_000*(seed+1)+i, validation cases 1_000_000*(seed+1)+500_000+i,
# so seeds below 1_000_000 (the tests', the demo's) are never seen in training.
_TRAIN_OFFSET = 0
_VALIDATION_OFFSET = 500_000


# ---- network --------------------------------------------------------------------------------------
def build_demo_network(in_channels=1, num_classes=4, channels=(8, 16, 32, 32), reduced_channels=8,
                       input_size=INPUT_SIZE):
    """The demo CNN: conv blocks (``features``, the CAM target layer) → 1×1×1 conv → flatten → linear.

    ``input_size`` (D, H, W) is fixed because the linear head sees every feature voxel.
    Returns an ``nn.Module`` in training mode with deterministic (seeded by the caller) weights.
    """
    import torch
    from torch import nn

    if len(channels) != len(_STRIDES):
        raise ValueError(f"channels must list {len(_STRIDES)} widths, got {list(channels)}")
    input_size = tuple(int(n) for n in input_size)
    feature_size = _feature_size(input_size)

    class DemoNet(nn.Module):
        """AxialNet-like classifier; ``hirescam`` gives the exact class maps at ``features``."""

        def __init__(self):
            super().__init__()
            blocks, width = [], in_channels
            for out, stride in zip(channels, _STRIDES):
                blocks.append(nn.Sequential(
                    nn.Conv3d(width, out, 3, stride=stride, padding=1, bias=False),
                    nn.GroupNorm(4, out),
                    nn.ReLU(),  # not in place: the target layer's output is kept for CAMs
                ))
                width = out
            self.features = nn.Sequential(*blocks)
            # no bias and no ReLU after it: features -> logits is linear, so G = W^c exactly and
            # the pre-ReLU HiResCAM map at `features` sums to y^c - b^c.
            self.reduce = nn.Conv3d(width, reduced_channels, 1, bias=False)
            self.classifier = nn.Linear(reduced_channels * math.prod(feature_size), num_classes)
            self.input_size = input_size
            self.feature_size = feature_size

        def forward(self, x):
            self._check(x)
            return self.classifier(torch.flatten(self.reduce(self.features(x)), 1))

        def hirescam(self, x):
            """(logits, maps): maps (B, K, *feature_size) = Σ_k W^c_k ⊙ reduce(A)_k, signed, differentiable."""
            self._check(x)
            reduced = self.reduce(self.features(x))
            logits = self.classifier(torch.flatten(reduced, 1))
            weights = self.classifier.weight.view(-1, *reduced.shape[1:])  # (K, C, d, h, w)
            maps = torch.einsum("bcdhw,kcdhw->bkdhw", reduced, weights)
            return logits, maps

        def _check(self, x):
            if x.dim() != 5 or tuple(x.shape[2:]) != self.input_size:
                raise ValueError(f"the demo network takes (B, C, {', '.join(map(str, self.input_size))}) "
                                 f"tensors, got {tuple(x.shape)}; resize the CT to the model card's input.size")

    return DemoNet()


def _feature_size(input_size) -> tuple:
    size = list(input_size)
    for stride in _STRIDES:
        size = [(n - 1) // s + 1 for n, s in zip(size, stride)]  # conv k=3, padding 1
    return tuple(size)


# ---- preprocessing (the model card's recipe: window, then resize in physical space) ---------------
def model_grid(ct, size=INPUT_SIZE):
    """The Volume grid of the model input: the CT's field of view and direction, ``size`` (D, H, W) voxels.

    Voxel boxes cover the same physical extent as the CT's (edges aligned, not centres).
    """
    from .volume import Volume

    size_xyz = np.asarray(size[::-1], dtype=float)
    spacing = np.asarray(ct.spacing) * np.asarray(ct.size_xyz) / size_xyz
    origin = np.asarray(ct.origin) + ct.direction @ ((spacing - np.asarray(ct.spacing)) / 2)
    return Volume(np.zeros(tuple(int(n) for n in size), np.uint8), tuple(spacing), tuple(origin), ct.direction)


def ct_to_input(ct, size=INPUT_SIZE, window=WINDOW) -> np.ndarray:
    """CT Volume (HU) → float32 array (D, H, W) in [0, 1]: resized in physical space, then windowed."""
    from .volume import resample_to

    grid = model_grid(ct, size)
    resized = resample_to(ct.with_array(ct.array.astype(np.float32)), grid, "linear", default_value=window[0])
    lo, hi = window
    return np.clip((resized.array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


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
    """One phantom case as model data: (input (D,H,W), labels (K,), class organ masks (K,D,H,W), body mask).

    The phantom is generated straight at the model's size (same field of view), then goes through
    :func:`ct_to_input` like any CT, so training sees exactly what inference sees.
    """
    from .phantom import make_phantom
    from .volume import resample_to

    case = make_phantom(seed=seed, size=tuple(int(n) for n in size[::-1]), lesions=list(lesions))
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
    return x, labels_for(lesions), np.stack(organ_masks), body


def make_dataset(seeds, rng, size=INPUT_SIZE, progress=None):
    """Inputs, labels and class-organ masks for phantoms with these seeds and random lesion sets."""
    xs, ys, ms, bodies, lesion_sets = [], [], [], [], []
    for i, seed in enumerate(seeds):
        lesions = random_lesions(rng)
        x, y, m, body = make_example(int(seed), lesions, size)
        xs.append(x), ys.append(y), ms.append(m), bodies.append(body), lesion_sets.append(lesions)
        if progress and (i + 1) % 50 == 0:
            progress(f"  phantoms {i + 1}/{len(seeds)}")
    return np.stack(xs), np.stack(ys), np.stack(ms), np.stack(bodies), lesion_sets


def allowed_regions(organ_masks, feature_size):
    """Class-organ masks (B, K, D, H, W) → feature-grid masks (B, K, d, h, w): cells touching the organ, dilated by one."""
    import torch
    import torch.nn.functional as F

    masks = torch.as_tensor(organ_masks, dtype=torch.float32)
    kernel = tuple(n // f for n, f in zip(masks.shape[2:], feature_size))
    cells = F.max_pool3d(masks, kernel_size=kernel, stride=kernel)
    # one cell of slack: strided convolutions shift cell centres by up to half a cell
    return F.max_pool3d(cells, kernel_size=3, stride=1, padding=1) > 0


# ---- training -------------------------------------------------------------------------------------
def train_demo_model(out_dir=None, seed=0, progress=None, *, n_train=N_TRAIN, n_validation=N_VALIDATION,
                     epochs=EPOCHS, mask_loss_weight=MASK_LOSS_WEIGHT):
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
        x, y, masks, _, _ = make_dataset(base + _TRAIN_OFFSET + np.arange(n_train), rng, progress=say)
        say(f"generating {n_validation} validation phantoms with unseen seeds")
        val = make_dataset(base + _VALIDATION_OFFSET + np.arange(n_validation), rng)

        torch.manual_seed(int(seed))
        model = build_demo_network(**DEFAULT_ARCH_KWARGS)
        allowed = allowed_regions(masks, model.feature_size)
        history = _fit(model, torch.from_numpy(x)[:, None], torch.from_numpy(y), allowed, epochs,
                       mask_loss_weight, torch.Generator().manual_seed(int(seed)), say)
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
        "learning_rate": LEARNING_RATE, "mask_loss_weight": mask_loss_weight, "torch_threads": TORCH_THREADS,
        "torch_version": torch.__version__, "train_seeds": [base + _TRAIN_OFFSET, base + _TRAIN_OFFSET + n_train - 1],
        "validation_seeds": [base + _VALIDATION_OFFSET, base + _VALIDATION_OFFSET + n_validation - 1],
        "data": "make_phantom at the model size; 0-2 lesions among lung_left, lung_right, liver, "
                "kidney_left/right, plus a spleen lesion (negative for all classes) in ~20% of cases",
        "final_loss": history[-1], "seconds": round(time.time() - started, 1),
        "validation": metrics,
    }
    card = demo_card(training)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = out_dir / DEMO_WEIGHTS_PATH.name, out_dir / DEMO_CARD_PATH.name
    torch.save(model.state_dict(), weights_path)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    say(f"wrote {weights_path} and {card_path} in {training['seconds']:.0f} s")
    return {"weights": weights_path, "card": card_path, "training": training}


def demo_card(training=None) -> dict:
    """The demo model's card (DESIGN.md's model-card format), with an optional ``training`` section."""
    card = {
        "name": DEMO_NAME,
        "classes": list(DEMO_CLASSES),
        "multilabel": True,
        "input": {"size": list(INPUT_SIZE), "spacing": None, "window": list(WINDOW), "channels": 1},
        "target_layer": TARGET_LAYER,
        "architecture": {"name": "demo", "kwargs": dict(DEFAULT_ARCH_KWARGS)},
    }
    if training is not None:
        card["training"] = training
    return card


def _fit(model, x, y, allowed, epochs, mask_loss_weight, generator, say):
    """Adam + cosine schedule on BCE (+ mask loss); returns the mean loss per epoch."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=steps,
                                                   pct_start=0.15)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total, bce_total, mask_total = 0.0, 0.0, 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            xb = _augment(x[idx], generator)
            logits, maps = model.hirescam(xb)
            bce = F.binary_cross_entropy_with_logits(logits, y[idx])
            # Draelos's mask loss: positive HiResCAM outside the organ of each *present* label
            outside = (~allowed[idx]) & (y[idx] > 0)[..., None, None, None]
            mask_loss = (F.relu(maps) * outside).sum() / outside.sum().clamp(min=1)
            loss = bce + mask_loss_weight * mask_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            bce_total += bce.item() * len(idx)
            mask_total += mask_loss.item() * len(idx)
        history.append(round(total / len(x), 5))
        say(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} (BCE {bce_total / len(x):.4f}, "
            f"mask {mask_total / len(x):.4f})")
    return history


def _augment(xb, generator):
    """Intensity jitter only: flips would swap left and right, shifts would move organs off their labels' cells."""
    import torch

    gain = 1 + 0.05 * (2 * torch.rand(len(xb), 1, 1, 1, 1, generator=generator) - 1)
    noise = 0.01 * torch.randn(xb.shape, generator=generator)
    return (xb * gain + noise).clamp(0, 1)


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
    def finite(value):  # JSON has no NaN: undefined values (a class never present) become null
        return float(value) if np.isfinite(value) else None

    return {
        "n_cases": int(len(x)),
        "accuracy": float((pred == truth).mean()),
        "exact_match": float((pred == truth).all(axis=1).mean()),
        "roc_auc": {name: finite(auc) for name, auc in aucs.items()},
        "mean_roc_auc": finite(np.nanmean(list(aucs.values()))) if any(np.isfinite(list(aucs.values()))) else None,
        "hirescam_mass_in_organ": finite(np.mean(masses)) if masses else None,
        "uniform_mass_in_organ": finite(np.mean(uniforms)) if uniforms else None,
    }
