"""The demo classifier's training recipe (:func:`train_demo_model`), run by the shared training
loop (:func:`.engine.fit`).

Data: :func:`saliency_inspector.models.demo_model.make_dataset` phantoms, each made at a size drawn
from ``TRAINING_PHANTOM_SIZES`` (the model's own and larger CTs resized to it). Loss:
BCE on the labels plus a per-cell "is there a lesion of class k here?" BCE on lesion-map channel k
(deep supervision from the phantom's lesion masks). The linear head starts as the organ atlas (the
mean organ fraction of each cell) and learns 40× slower than the rest, so class c stays "lesion
evidence inside organ c" while the detectors learn. Plain BCE, BCE + Draelos's mask loss, and one
shared lesion channel stayed near chance for liver and kidney in a CPU budget of minutes.

The self-explaining demo networks (``--arch attention_gated|trainable_saliency``,
:mod:`..models.attention_models`) are the same network with a gate before the lesion map and are
trained by this same recipe; ``trainable_saliency`` adds, on a seeded fraction of the training
cases (``mask_fraction``), the BCE of its saliency logits against "any lesion in this cell".

Seeded and deterministic on CPU (same torch version and thread count → same weights):
``saliency-inspector train-demo --seed 0`` rewrites the shipped weights and model card.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..io.records import finite
from ..errors import InputError
from ..models.demo_model import (DEFAULT_ARCH_KWARGS, DEMO_CLASSES, DEMO_NAME, LESION_SCALE, MODELS_DIR, POOLING,
                                 TRAINING_PHANTOM_SIZES, build_demo_network, demo_card, lesion_cells, make_dataset)
from .engine import adam_with_cosine, deterministic_torch, fit

LESION_POS_WEIGHT = 10.0  # lesion cells are ~0.2% of all cells: weight them up in the per-cell loss
HEAD_INIT_SCALE = 4.0  # initial class weight of a cell fully inside the class's organ
N_TRAIN = 960
N_VALIDATION = 64
EPOCHS = 25
PROGRESS_EVERY_S = 5.0  # a progress line at least this often inside an epoch (no silence over ~10 s)
BATCH_SIZE = 8
LEARNING_RATE = 4e-3
# The linear head (64k weights, one per cell, channel and class) starts as the organ atlas; Adam
# moves every weight by about its rate each step whatever its gradient, so at the detectors' rate the
# atlas would fill with noise from a few hundred cases: the head learns 40x slower.
HEAD_LEARNING_RATE = 1e-4
TORCH_THREADS = 1  # a 2-thread run slowed ~8× whenever another process took one of the 2 cores
MASK_WEIGHT = 1.0  # trainable_saliency: weight of the saliency map's own mask loss
# Phantom seeds: training cases use 1_000_000*(seed+1)+i, validation cases 1_000_000*(seed+1)+500_000+i,
# so seeds below 1_000_000 (the tests', the demo's) are never seen in training.
_TRAIN_OFFSET = 0
_VALIDATION_OFFSET = 500_000


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



def train_demo_model(out_dir=None, seed=0, progress=None, *, n_train=N_TRAIN, n_validation=N_VALIDATION,
                     epochs=EPOCHS, shuffle_labels=False, arch="demo", mask_fraction=0.0, dataset=None,
                     workers=1):
    """Train the demo classifier from ``seed`` and write ``<name>.pt`` (state dict) + ``<name>.json`` (card).

    ``out_dir`` defaults to the shipped ``Resources/Models``. Deterministic on CPU for a given seed,
    torch version and thread count. Validation uses ``n_validation`` phantoms with seeds that
    training never saw, at the model's size; its accuracy, per-class ROC AUC and HiResCAM
    mass-in-organ are stored in the card's ``training`` section. Returns ``{"weights": Path,
    "card": Path, "training": dict}``.

    ``shuffle_labels``: the data-randomization control (Adebayo et al. 2018): every training case gets
    another case's supervision — its labels and its lesion cells, one seeded permutation — so the
    model can learn nothing true about the images; its maps must not look like the real model's
    (:func:`..workflows.randomization_checks.data_randomization_check`). Named ``…-shuffled-seed<N>``.
    ``arch`` "attention_gated" or "trainable_saliency" trains a self-explaining demo network
    (:mod:`..models.attention_models`) by the same recipe; ``mask_fraction`` (trainable_saliency):
    the fraction of training cases whose lesion masks also supervise the saliency map.
    ``dataset``: the (training, validation) tuples of :func:`make_dataset` for this seed and these
    counts, already made (several models trained on the same data); ``workers``: processes making them.
    """
    import torch

    from ..models.attention_models import ARCHITECTURES, GATES, model_name

    say = progress or (lambda message: None)
    if int(seed) < 0:
        raise InputError(f"--seed {seed}: the seed must be a non-negative integer")
    if arch != "demo" and arch not in ARCHITECTURES:
        raise InputError(f"--arch {arch!r}: choose demo, {', '.join(ARCHITECTURES)}")
    if not 0.0 <= float(mask_fraction) <= 1.0:
        raise InputError(f"--mask-fraction {mask_fraction}: a fraction of the cases, between 0 and 1")
    if mask_fraction and arch != "trainable_saliency":
        raise InputError("--mask-fraction is for --arch trainable_saliency (the other networks have no saliency map)")
    if shuffle_labels and arch != "demo":
        raise InputError("--shuffle-labels is for --arch demo (the data-randomization control of the demo model)")
    out_dir = MODELS_DIR if out_dir is None else Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder for the weights and card")

    started = time.time()
    with deterministic_torch(TORCH_THREADS):
        base = 1_000_000 * (int(seed) + 1)
        if dataset is None:
            dataset = training_data(seed, n_train, n_validation, say, workers)
        (x, y, masks, _, lesions), val = dataset

        cells = lesion_cells(lesions)
        permutation = None
        if shuffle_labels:  # the labels AND the per-cell lesion targets move together to other cases
            permutation = np.random.default_rng([int(seed), 0x5EED]).permutation(len(y))
            y, cells = y[permutation], cells[torch.as_tensor(permutation)]
            say(f"labels shuffled: {int((permutation != np.arange(len(y))).sum())} of {len(y)} cases get "
                "another case's labels and lesion cells")
        supervised = np.zeros(len(x), bool)  # the cases whose masks supervise the saliency map
        supervised[np.random.default_rng(int(seed) + 1).permutation(len(x))[:round(mask_fraction * len(x))]] = True
        torch.manual_seed(int(seed))
        model = (build_demo_network if arch == "demo" else ARCHITECTURES[arch])(**DEFAULT_ARCH_KWARGS)
        init_head_from_atlas(model, masks)
        history = _fit(model, torch.from_numpy(x)[:, None], torch.from_numpy(y), cells, epochs,
                       torch.Generator().manual_seed(int(seed)), say, torch.from_numpy(supervised))
        model.eval()
        metrics = validate(model, *val[:4])
        say(f"validation on {len(val[0])} unseen phantoms: " + ", ".join(
            f"{key.replace('_', ' ')} {value:.3f}" if value is not None else f"{key.replace('_', ' ')} n/a"
            for key, value in metrics.items() if key not in ("n_cases", "roc_auc")))

    training = {
        "seed": int(seed), "arch": arch, "n_cases": int(len(x)), "epochs": int(epochs), "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE, "head_learning_rate": HEAD_LEARNING_RATE,
        "lesion_cell_pos_weight": LESION_POS_WEIGHT,
        "head_init": f"organ atlas x {HEAD_INIT_SCALE}", "lesion_scale": LESION_SCALE,
        "torch_threads": TORCH_THREADS,
        "torch_version": torch.__version__, "train_seeds": [base + _TRAIN_OFFSET, base + _TRAIN_OFFSET + len(x) - 1],
        "validation_seeds": [base + _VALIDATION_OFFSET, base + _VALIDATION_OFFSET + len(val[0]) - 1],
        "data": "make_phantom at sizes (x, y, z) " + ", ".join(
            f"{'×'.join(map(str, size))} ({odds:.0%})" for size, odds in TRAINING_PHANTOM_SIZES)
            + " (15% of the larger ones oblique), each resized to the model input by the card's recipe; "
            "0-2 lesions among lung_left, lung_right, liver, kidney_left/right, plus a spleen lesion "
            "(negative for all classes) in ~20% of cases; validation phantoms at the model's size",
        "final_loss": history[-1], "seconds": round(time.time() - started, 1),
        "validation": metrics,
        "labels": ("shuffled: a seeded permutation of the training cases' labels and lesion cells "
                   "(data-randomization control)") if shuffle_labels else "true",
    }
    if arch == "trainable_saliency":
        training.update(mask_fraction=float(mask_fraction), mask_cases=int(supervised.sum()), mask_weight=MASK_WEIGHT)
    # seed 0 is the shipped model; other seeds get their own name so they never overwrite it
    if arch != "demo":
        name = model_name(arch, mask_fraction, seed)
    else:
        name = DEMO_NAME if int(seed) == 0 else f"{DEMO_NAME}-seed{int(seed)}"
    if shuffle_labels:
        name = f"{DEMO_NAME}-shuffled-seed{int(seed)}"
    card = demo_card(training, name)
    if arch != "demo":
        card["architecture"]["name"] = arch
        card["attention_gates"] = list(GATES[arch])
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    torch.save(model.state_dict(), weights_path)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    say(f"wrote {weights_path} and {card_path} in {training['seconds']:.0f} s")
    return {"weights": weights_path, "card": card_path, "training": training}


def training_data(seed=0, n_train=N_TRAIN, n_validation=N_VALIDATION, progress=None, workers=1):
    """The recipe's (training, validation) :func:`make_dataset` tuples for ``seed``: training phantoms
    at mixed sizes (seeds 1,000,000·(seed+1)…), validation phantoms at the model's size (… + 500,000)."""
    say = progress or (lambda message: None)
    base = 1_000_000 * (int(seed) + 1)
    rng = np.random.default_rng(int(seed))
    say(f"generating {n_train} training phantoms (seeds {base + _TRAIN_OFFSET}...)")
    train = make_dataset(base + _TRAIN_OFFSET + np.arange(n_train), rng, progress=say, mixed_sizes=True,
                         workers=workers)
    say(f"generating {n_validation} validation phantoms with unseen seeds")
    val = make_dataset(base + _VALIDATION_OFFSET + np.arange(n_validation), rng, progress=say, workers=workers)
    return train, val


def _fit(model, x, y, cells, epochs, generator, say, supervised=None):
    """:func:`fit` with the demo recipe: Adam with a cosine-decaying rate (the head at
    HEAD_LEARNING_RATE) on BCE (labels) + per-cell lesion BCE (lesion map) + for a saliency gate,
    on the ``supervised`` cases, BCE of its logits against "any lesion here"; returns the mean loss
    per epoch."""
    import torch
    import torch.nn.functional as F

    optimizer, schedule = adam_with_cosine(model, LEARNING_RATE, epochs * math.ceil(len(x) / BATCH_SIZE),
                                           slow=[model.classifier.weight], slow_learning_rate=HEAD_LEARNING_RATE)
    pos_weight = torch.tensor(LESION_POS_WEIGHT)
    history = []
    batches = math.ceil(len(x) / BATCH_SIZE)
    state = {"batch": 0, "epoch": 0, "said": time.time()}

    def batch_loss(idx):
        state["batch"] += 1
        if time.time() - state["said"] >= PROGRESS_EVERY_S:  # an epoch takes ~20 s on 2 cores: say so
            say(f"  epoch {state['epoch'] + 1}/{epochs}: batch {state['batch']}/{batches}")
            state["said"] = time.time()
        logits, _, lesion_logits = model.hirescam(_augment(x[idx], generator), with_lesion_logits=True)
        bce = F.binary_cross_entropy_with_logits(logits, y[idx])
        # channel k learns "a lesion of class k in this cell"; a one-channel map (the shipped
        # model) learns "any lesion here", distractors included
        target = cells[idx, :-1] if lesion_logits.shape[1] > 1 else cells[idx, -1:]
        cell_loss = F.binary_cross_entropy_with_logits(lesion_logits[:, :target.shape[1]], target,
                                                       pos_weight=pos_weight)
        loss = bce + cell_loss
        keep = supervised[idx] if supervised is not None else None
        if keep is not None and keep.any():  # the saliency map's own supervision (trainable_saliency)
            saliency = model.gate.logits
            loss = loss + MASK_WEIGHT * F.binary_cross_entropy_with_logits(
                saliency[keep], cells[idx][keep][:, -1:], pos_weight=pos_weight)
        return loss, bce

    def end_epoch(epoch, means, started):
        loss, bce = (float(m) for m in means)
        history.append(round(loss, 5))
        say(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} (BCE {bce:.4f}) {time.time() - started:.0f} s")
        state.update(batch=0, epoch=epoch + 1, said=time.time())
        return False

    fit(model, len(x), epochs, BATCH_SIZE, generator, optimizer, schedule, batch_loss, end_epoch)
    return history


def _augment(xb, generator):
    """A small per-case intensity gain. No noise (the liver lesions are only ~3 noise SDs from the
    liver), no flips (they would swap left and right), no shifts (organs would leave their cells)."""
    import torch

    gain = 1 + 0.02 * (2 * torch.rand(len(xb), 1, 1, 1, 1, generator=generator) - 1)
    return (xb * gain).clamp(0, 1)


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

