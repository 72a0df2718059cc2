"""The self-explaining demo models' recipe (:func:`train_attention_model`): the demo recipe's data,
seeds, augmentation, optimiser, losses and determinism (:mod:`.demo_recipe`), fewer cases and epochs.

Every model: the demo's per-cell lesion BCE on the cell logits (channel k: "a lesion of class k
in this cell", positives weighted ×10) + BCE on the labels for the readout only (the pooled cells
detached) — with BCE alone both networks stayed at chance (mean validation ROC AUC 0.53 and 0.49
after 320 cases × 5 epochs), as the demo recipe found for its own network; with BCE through the
pooling too, a few cells stayed "on" in every case and the class logits were constant (0.52). So every model has seen lesion masks through its head; the gates and
the saliency map are not supervised by them, except:

- ``trainable_saliency`` with ``mask_fraction`` f > 0: + ``MASK_WEIGHT`` × the per-cell BCE of the
  saliency logits against "any lesion in this cell" (distractors included) on a fixed, seeded
  fraction f of the training cases (0, 0.1, 1: how much dense labelling of the map itself buys).

``saliency-inspector train-demo --arch attention_gated|trainable_saliency [--mask-fraction f]``.
Deterministic on CPU for a seed, torch version and thread count.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import finite
from ..models.demo_model import DEMO_CLASSES, INPUT_SIZE, LESION_SCALE, WINDOW, lesion_cells, make_dataset
from .engine import adam_with_cosine, deterministic_torch, fit

N_TRAIN = 320  # the demo recipe has 960 cases × 25 epochs; the shared, loaded CPU allowed ~15 minutes per model
EPOCHS = 16
N_VALIDATION = 64
BATCH_SIZE = 8
LEARNING_RATE = 4e-3
MASK_WEIGHT = 1.0
LESION_POS_WEIGHT = 10.0  # as the demo recipe: lesion cells are rare
TORCH_THREADS = 1  # one thread per model: two models trained side by side
GATES = {"attention_gated": ["gate1", "gate2"], "trainable_saliency": ["saliency_gate"]}


def model_name(arch: str, mask_fraction: float = 0.0, seed: int = 0) -> str:
    """``demo-attention-gated`` / ``demo-trainable-saliency-mask10`` (+ ``-seedN`` for seeds ≠ 0)."""
    name = "demo-attention-gated" if arch == "attention_gated" else \
        f"demo-trainable-saliency-mask{round(100 * mask_fraction)}"
    return name if int(seed) == 0 else f"{name}-seed{int(seed)}"


def attention_card(arch: str, name: str, training=None) -> dict:
    """The model card: the demo's input recipe, the architecture and its ``attention_gates``."""
    from ..models.attention_models import ATTENTION_KWARGS

    card = {"name": name, "classes": list(DEMO_CLASSES), "multilabel": True,
            "input": {"size": list(INPUT_SIZE), "spacing": None, "orientation": "LPS", "axes": "zyx",
                      "window": list(WINDOW), "pad_value": -1000.0, "channels": 1},
            "target_layer": "head.1",  # the cell head's ReLU: 16 channels on the 8×16×16 grid
            "architecture": {"name": arch, "kwargs": dict(ATTENTION_KWARGS)},
            "attention_gates": list(GATES[arch])}
    if training is not None:
        card["training"] = training
    return card


def train_attention_model(out_dir, arch="attention_gated", seed=0, mask_fraction=0.0, progress=None, *,
                          n_train=N_TRAIN, n_validation=N_VALIDATION, epochs=EPOCHS, dataset=None):
    """Train a self-explaining demo model and write ``<name>.pt`` (state dict) + ``<name>.json`` (card).

    ``dataset``: optionally the (train, validation) tuples of :func:`make_dataset` already made
    for this seed (the recipe makes them itself otherwise). Returns ``{"weights", "card", "training"}``.
    """
    import torch

    from ..models.attention_models import ARCHITECTURES, ATTENTION_KWARGS
    from .demo_recipe import _TRAIN_OFFSET, _VALIDATION_OFFSET, _augment

    say = progress or (lambda message: None)
    if arch not in ARCHITECTURES:
        raise InputError(f"--arch {arch!r}: choose demo, {', '.join(ARCHITECTURES)}")
    if not 0.0 <= float(mask_fraction) <= 1.0:
        raise InputError(f"--mask-fraction {mask_fraction}: a fraction of the cases, between 0 and 1")
    if arch == "attention_gated" and mask_fraction:
        raise InputError("--mask-fraction is for --arch trainable_saliency (the gates learn from the labels)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    started = time.time()
    with deterministic_torch(TORCH_THREADS):
        base = 1_000_000 * (int(seed) + 1)
        if dataset is None:
            rng = np.random.default_rng(int(seed))
            say(f"generating {n_train} training phantoms (seeds {base + _TRAIN_OFFSET}...)")
            train = make_dataset(base + _TRAIN_OFFSET + np.arange(n_train), rng, progress=say)
            val = make_dataset(base + _VALIDATION_OFFSET + np.arange(n_validation), rng)
        else:
            train, val = dataset
        x, y, _, _, lesions = train
        torch.manual_seed(int(seed))
        model = ARCHITECTURES[arch](**ATTENTION_KWARGS)
        supervised = np.zeros(len(x), bool)
        supervised[np.random.default_rng(int(seed) + 1).permutation(len(x))[:round(mask_fraction * len(x))]] = True
        cells = lesion_cells(lesions)  # (N, K + 1, d, h, w): each class's lesions, then any lesion
        history = _fit(model, torch.from_numpy(x)[:, None], torch.from_numpy(y), cells, torch.from_numpy(supervised),
                       epochs, torch.Generator().manual_seed(int(seed)), say, _augment)
        model.eval()
        metrics = validate_gated(model, *val[:4])
        say(f"validation on {len(val[0])} unseen phantoms: ROC AUC " + ", ".join(
            f"{k} {v:.3f}" for k, v in metrics["roc_auc"].items() if v is not None))
    training = {"seed": int(seed), "arch": arch, "n_cases": int(len(x)), "epochs": int(epochs),
                "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "lse_sharpness": 5.0,
                "mask_fraction": float(mask_fraction), "mask_cases": int(supervised.sum()),
                "mask_weight": MASK_WEIGHT if arch == "trainable_saliency" else 0.0,
                "lesion_cell_pos_weight": LESION_POS_WEIGHT, "lesion_scale": LESION_SCALE,
                "torch_threads": TORCH_THREADS, "torch_version": torch.__version__,
                "train_seeds": [base + _TRAIN_OFFSET, base + _TRAIN_OFFSET + len(x) - 1],
                "validation_seeds": [base + _VALIDATION_OFFSET, base + _VALIDATION_OFFSET + len(val[0]) - 1],
                "data": "the demo recipe's phantoms (make_dataset) at the model size",
                "final_loss": history[-1], "seconds": round(time.time() - started, 1), "validation": metrics}
    name = model_name(arch, mask_fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    torch.save(model.state_dict(), weights_path)
    card_path.write_text(json.dumps(attention_card(arch, name, training), indent=2) + "\n")
    say(f"wrote {weights_path} and {card_path} in {training['seconds']:.0f} s")
    return {"weights": weights_path, "card": card_path, "training": training}


def _fit(model, x, y, cells, supervised, epochs, generator, say, augment):
    """Adam with a cosine rate on BCE + the demo's per-cell lesion BCE on the cell logits (channel k:
    "a lesion of class k in this cell") + for the saliency model the mask loss on the supervised cases."""
    import torch
    import torch.nn.functional as F

    from ..models.attention_models import lse_pool

    optimizer, schedule = adam_with_cosine(model, LEARNING_RATE, epochs * math.ceil(len(x) / BATCH_SIZE))
    pos_weight = torch.tensor(LESION_POS_WEIGHT)
    history = []

    def batch_loss(idx):
        _, cell_logits, saliency = model(augment(x[idx], generator), with_cells=True)
        # the labels train only the readout: through the pooling they would keep a few cells "on"
        # in every case to express the prevalence (both networks' class logits were then constant)
        logits = model.readout(lse_pool(cell_logits.detach()))
        bce = F.binary_cross_entropy_with_logits(logits, y[idx])
        target = cells[idx]
        cell_loss = F.binary_cross_entropy_with_logits(cell_logits, target[:, :-1], pos_weight=pos_weight)
        keep = supervised[idx]
        mask_loss = torch.zeros(())
        if saliency is not None and keep.any():  # "any lesion in this cell" for the saliency map
            mask_loss = F.binary_cross_entropy_with_logits(saliency[keep], target[keep][:, -1:], pos_weight=pos_weight)
        return bce + cell_loss + MASK_WEIGHT * mask_loss, bce, cell_loss, mask_loss

    def end_epoch(epoch, means, started):
        history.append(round(float(means[0]), 5))
        say(f"epoch {epoch + 1}/{epochs}: loss {means[0]:.4f} (BCE {means[1]:.4f}, cells {means[2]:.4f}, "
            f"saliency mask {means[3]:.4f}) {time.time() - started:.0f} s")
        return False

    fit(model, len(x), epochs, BATCH_SIZE, generator, optimizer, schedule, batch_loss, end_epoch)
    return history


def validate_gated(model, x, y, organ_masks, body) -> dict:
    """Accuracy and per-class ROC AUC on held-out examples (the demo's validation table)."""
    import torch
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(np.asarray(x, np.float32))[:, None])).numpy()
    truth = np.asarray(y) > 0.5
    aucs = {}
    for k, name in enumerate(DEMO_CLASSES):
        both = len(np.unique(truth[:, k])) == 2
        aucs[name] = finite(roc_auc_score(truth[:, k], prob[:, k])) if both else None
    known = [v for v in aucs.values() if v is not None]
    return {"n_cases": int(len(x)), "accuracy": float(((prob > 0.5) == truth).mean()),
            "exact_match": float(((prob > 0.5) == truth).all(axis=1).mean()), "roc_auc": aucs,
            "mean_roc_auc": float(np.mean(known)) if known else None}
