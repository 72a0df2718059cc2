"""Train a volumetric classifier on a cohort manifest: BCE, optionally + λ · HiResCAM mask loss.

Inputs go through the same preprocessing as inference (:func:`models.preprocess.preprocess`, the
card's input recipe), so a trained model explains the same tensors it was trained on. The mask
loss (:mod:`.mask_loss`) uses the HiResCAM map of the card's target layer computed inside the
training step by the explain engine itself (:func:`explain.cam.differentiable_cams`).

Augmentation rotates the patient by a few degrees (and optionally mirrors it) *in physical space*:
the input and its organ masks are resampled from a copy of the input grid turned about the field
of view's centre (:func:`preprocess.resample_tensor`), so the network still sees the body in the
card's orientation, only slightly turned. Mirroring swaps left and right, so it is off by default
(left/right classes would get the wrong label).

Deterministic on CPU for a given seed, torch version and thread count: two runs give identical
weights. The epochs and steps are the shared loop's (:func:`.engine.fit`). Each epoch is validated on the manifest's ``val`` split (BCE, ROC AUC per class); the
best epoch's weights are kept and training stops after ``patience`` epochs without improvement.
Outputs ``<name>.pt`` (state dict), ``<name>.json`` (model card with a ``training`` section) and
``<name>.pt2`` (a ``torch.export`` program).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .engine import adam_with_cosine, deterministic_torch, fit
from .mask_loss import LAMBDA, check_lambda, dilate_mm, mask_loss, to_feature_grid


@dataclass
class Examples:
    """Preprocessed cases: inputs (N, C, *input), labels (N, K), allowed regions (N, K, *input) on the
    input grid (None without organ masks), the input grid, and the case ids."""

    x: object
    y: object
    allowed: object
    grid: object
    case_ids: list


# ---- data ----------------------------------------------------------------------------------------
def class_organs_for(manifest_path, classes, class_organs=None) -> dict:
    """Which organ segments make up each class's allowed region: ``class_organs`` when given, else
    the ``class_organs`` of a ``cohort.json`` beside the manifest, else each class's own name."""
    if class_organs is None:
        card = Path(manifest_path).parent / "cohort.json"
        if card.is_file():
            class_organs = json.loads(card.read_text()).get("class_organs")
    class_organs = class_organs or {}
    return {c: tuple(class_organs.get(c, (c,))) for c in classes}


def load_examples(cases, card, classes, class_organs=None, dilation_mm=0.0, need_masks=True,
                  progress=None) -> Examples:
    """Read, check and preprocess manifest cases (CT through the card's recipe; organ masks
    dilated by ``dilation_mm`` on the CT grid, then resampled onto the input grid)."""
    import torch

    from ..io.segments import read_segments
    from ..io.volume import read_volume, resample_to
    from ..models.preprocess import preprocess

    xs, ys, allowed, ids, grid = [], [], [], [], None
    for n, case in enumerate(cases):
        where = f"manifest row {case.row} ({case.case_id})"
        missing = [c for c in classes if case.labels.get(c) is None]
        if missing:
            raise InputError(f"{where}: no label for {', '.join(missing)}; training needs a 0/1 label "
                             "for every class")
        try:
            ct = read_volume(case.ct)
            prepared = preprocess(ct, card.input)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        if grid is not None and tuple(prepared.tensor.shape) != tuple(xs[0].shape):
            raise InputError(f"{where}: its input tensor {tuple(prepared.tensor.shape)} differs from the "
                             f"first case's {tuple(xs[0].shape)}; give the card a fixed input.size")
        grid = prepared.grid if grid is None else grid
        xs.append(prepared.tensor)
        ys.append([float(case.labels[c]) for c in classes])
        if need_masks:
            organs_path = case.paths.get("organs")
            if organs_path is None:
                raise InputError(f"{where}: no organs mask; the mask loss needs each case's organ masks")
            try:
                organs = read_segments(organs_path, reference=ct)
            except InputError as err:
                raise InputError(f"{where}: {err}") from None
            masks = []
            for c in classes:
                absent = [o for o in class_organs[c] if o not in organs.names]
                if absent:
                    raise InputError(f"{where}: {organs_path.name} has no segment {absent[0]!r} for class "
                                     f"{c!r} (it has {', '.join(organs.names)}); map classes to organs "
                                     "with class_organs / --class-organs")
                mask = np.zeros(ct.shape, bool)
                for o in class_organs[c]:
                    mask |= organs.mask(o)
                mask = dilate_mm(mask, ct.spacing, dilation_mm)
                on_input = resample_to(ct.with_array(mask.astype(np.float32)), prepared.grid, "linear").array
                if card.input.axes == "xyz":
                    on_input = on_input.transpose(2, 1, 0)
                masks.append(on_input > 0.25)
            allowed.append(torch.from_numpy(np.stack(masks)))
        if progress and ((n + 1) % 25 == 0 or n + 1 == len(cases)):
            progress(f"  prepared {n + 1}/{len(cases)} cases")
    return Examples(torch.cat(xs).float().cpu(), torch.tensor(ys, dtype=torch.float32),
                    torch.stack(allowed) if need_masks else None, grid, [c.case_id for c in cases])


# ---- augmentation in physical space ---------------------------------------------------------------
def turned_grid(grid, rotation):
    """``grid`` turned by ``rotation`` (3×3, proper or improper) about its field of view's centre."""
    from ..models.preprocess import geometry

    direction = np.asarray(grid.direction, float)
    center = grid.index_to_physical((np.asarray(grid.size_xyz, float) - 1) / 2)
    origin = center + rotation @ (np.asarray(grid.origin, float) - center)
    return geometry(grid.shape, grid.spacing, tuple(origin), rotation @ direction)


def random_rotation(rng, max_degrees, grid, flip_axes=()):
    """A random rotation about the three patient axes (each ≤ ``max_degrees``), optionally times a
    mirror across the grid's ``flip_axes`` (0 = x, 1 = y, 2 = z, each with probability ½)."""
    from scipy.spatial.transform import Rotation

    angles = rng.uniform(-max_degrees, max_degrees, size=3) if max_degrees > 0 else np.zeros(3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    signs = np.ones(3)
    for axis in flip_axes:
        if rng.random() < 0.5:
            signs[axis] = -1.0
    direction = np.asarray(grid.direction, float)
    return rotation @ direction @ np.diag(signs) @ direction.T


def augment(x, allowed, grid, rng, max_degrees, flip_axes=(), axes="zyx"):
    """Inputs (B, C, *s) and allowed masks (B, K, *s), each case turned by its own random rotation
    in physical space (resampled back onto ``grid``, border values extended)."""
    import torch

    from ..models.preprocess import resample_tensor

    if max_degrees <= 0 and not flip_axes:
        return x, allowed
    xs, ms = [], []
    for b in range(len(x)):
        source = turned_grid(grid, random_rotation(rng, max_degrees, grid, flip_axes))
        parts = [x[b]] + ([allowed[b].float()] if allowed is not None else [])
        stack = torch.cat(parts)
        if axes == "xyz":
            stack = stack.permute(0, 3, 2, 1)
        out = resample_tensor(stack.contiguous(), source, grid, as_numpy=False)
        if axes == "xyz":
            out = out.permute(0, 3, 2, 1)
        xs.append(out[:x.shape[1]])
        if allowed is not None:
            ms.append(out[x.shape[1]:] > 0.5)
    return torch.stack(xs), (torch.stack(ms) if allowed is not None else None)


# ---- model ---------------------------------------------------------------------------------------
def _card(card):
    from ..models.card import ModelCard

    if isinstance(card, ModelCard):
        return copy.deepcopy(card)
    if isinstance(card, dict):
        return ModelCard.from_dict(card)
    path = Path(card)
    if not path.is_file():
        raise InputError(f"{path}: model card not found (a JSON file with classes, input and architecture)")
    return ModelCard.from_json(path)


def build_model(card):
    """The card's architecture, freshly initialised (caller seeds torch)."""
    from ..models import demo_model  # noqa: F401 - registers the "demo" architecture
    from ..models.loaders import build_network

    if not card.architecture:
        raise InputError(f"model card {card.name!r} has no 'architecture' ({{\"name\": ..., \"kwargs\": ...}}); "
                         "training needs to know which network to build")
    return build_network(card.architecture, card)


# ---- training ------------------------------------------------------------------------------------
def train(manifest, out_dir, card, *, mask_loss_lambda=0.0, target_layer=None, dilation_mm=10.0,
          epochs=20, batch_size=8, learning_rate=2e-3, patience=5, seed=0, max_degrees=5.0,
          flip_axes=(), class_organs=None, device="cpu", name=None, export=True, threads=1,
          progress=None) -> dict:
    """Train ``card``'s architecture on the manifest's ``train`` split, validating on ``val``.

    ``card``: a :class:`ModelCard`, dict or JSON path with ``architecture``, ``input`` and
    ``classes`` (default: the manifest's label columns); ``mask_loss_lambda``: λ of the mask loss
    (0: plain BCE; Draelos's default is 1/3); ``target_layer``: the layer whose HiResCAM the mask
    loss constrains (default the card's); ``dilation_mm``: how far around each organ the map may
    still be positive. ``threads``: torch CPU threads during training (on a shared 2-core machine one
    thread ran ~10× faster than two; None keeps torch's setting). Returns ``{"weights", "card",
    "export", "training"}``.
    """
    import torch

    from ..explainers.cam import differentiable_cams, get_layer
    from ..io.manifest import read_manifest
    from ..models.loaders import resolve_device

    say = progress or (lambda message: None)
    lam = check_lambda(mask_loss_lambda)
    if dilation_mm < 0:
        raise InputError(f"--dilate-mm {dilation_mm}: the dilation must be ≥ 0 mm")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    card = _card(card)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder")
    data = read_manifest(manifest, classes=card.classes)
    classes = list(card.classes or data.classes)
    card.classes, card.multilabel = classes, True
    train_cases, val_cases = data.split("train"), data.split("val")
    if not train_cases:
        raise InputError(f"{manifest}: no case has split 'train'; add a split column (train / val / test)")
    layer = target_layer or card.target_layer
    if lam > 0 and not layer:
        raise InputError("the mask loss needs a target layer: give --layer or a card with target_layer")
    dev = resolve_device(device)
    organs = class_organs_for(manifest, classes, class_organs)

    started = time.time()
    with deterministic_torch(threads, warn_only=dev.type == "cuda"):
        torch.manual_seed(int(seed))
        model = build_model(card).to(dev)
        if layer:
            get_layer(model, layer)  # a missing layer is an error before any data is read
        say(f"preparing {len(train_cases)} training and {len(val_cases)} validation cases")
        need_masks = lam > 0
        train_set = load_examples(train_cases, card, classes, organs, dilation_mm, need_masks, say)
        val_set = load_examples(val_cases, card, classes, organs, dilation_mm, False, say) if val_cases else None
        feature_shape = None
        if need_masks:
            with torch.no_grad():
                model.eval()
                _, maps = differentiable_cams(model, train_set.x[:1].to(dev), layer)
                feature_shape = tuple(maps["hirescam"].shape[2:])
        history, best = _fit(model, train_set, val_set, lam, layer, feature_shape, epochs, batch_size,
                             learning_rate, patience, seed, max_degrees, flip_axes, card.input.axes, dev, say)
    model.load_state_dict(best["state"])
    model.eval()
    seconds = round(time.time() - started, 1)

    name = name or card.name
    card.name = name
    card.target_layer = layer or card.target_layer
    training = {
        "manifest": str(Path(manifest).resolve()), "seed": int(seed), "mask_loss_lambda": lam,
        "target_layer": layer, "dilation_mm": float(dilation_mm), "epochs_run": len(history),
        "max_epochs": int(epochs), "best_epoch": best["epoch"], "batch_size": int(batch_size),
        "learning_rate": float(learning_rate), "patience": int(patience), "augmentation": {
            "rotation_degrees": float(max_degrees), "flip_axes": [int(a) for a in flip_axes]},
        "class_organs": {c: list(o) for c, o in organs.items()}, "n_train": len(train_cases),
        "n_val": len(val_cases), "torch_version": torch.__version__, "torch_threads": threads,
        "device": str(dev), "history": history, "seconds": seconds,
        "validation": best["validation"],
    }
    card.extra = {**card.extra, "training": training}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights_path)
    card_path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    export_path = None
    if export:
        export_path = out_dir / f"{name}.pt2"
        cpu_model = model.to("cpu")
        # a clone: a view would make the program store the whole training tensor as its sample input
        program = torch.export.export(cpu_model, (train_set.x[:1].cpu().clone(),))
        torch.export.save(program, str(export_path))
    say(f"wrote {weights_path}, {card_path}" + (f" and {export_path}" if export_path else "")
        + f" in {seconds:.0f} s")
    return {"weights": weights_path, "card": card_path, "export": export_path, "training": training}


def training_step_loss(model, xb, yb, allowed_b, lam, layer, feature_shape):
    """(total loss, BCE, mask loss) of one batch; the mask loss uses HiResCAM at ``layer``."""
    import torch
    import torch.nn.functional as F

    from ..explainers.cam import differentiable_cams

    if lam > 0:
        logits, maps = differentiable_cams(model, xb, layer)
        allowed = to_feature_grid(allowed_b, feature_shape)
        ml = mask_loss(maps["hirescam"], allowed, yb)
    else:
        logits, ml = model(xb), torch.zeros(())
    bce = F.binary_cross_entropy_with_logits(logits, yb)
    return bce + lam * ml, bce, ml


def _fit(model, train_set, val_set, lam, layer, feature_shape, epochs, batch_size, learning_rate, patience,
         seed, max_degrees, flip_axes, axes, dev, say):
    """:func:`fit` with this trainer's recipe: rotation augmentation, BCE (+ λ · mask loss), validation
    after each epoch, the best epoch's weights kept, early stop after ``patience`` epochs."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    n = len(train_set.x)
    optimizer, schedule = adam_with_cosine(model, learning_rate, int(epochs) * math.ceil(n / batch_size))
    history, epoch_times = [], []
    best, waited = None, 0

    def batch_loss(idx):
        allowed = train_set.allowed[idx] if train_set.allowed is not None else None
        xb, allowed = augment(train_set.x[idx], allowed, train_set.grid, rng, max_degrees, flip_axes, axes)
        return training_step_loss(model, xb.to(dev), train_set.y[idx].to(dev),
                                  None if allowed is None else allowed.to(dev), lam, layer, feature_shape)

    def end_epoch(epoch, means, started):
        nonlocal best, waited
        validation = evaluate_split(model, val_set, dev) if val_set is not None else {"bce": means[1]}
        record = {"epoch": epoch + 1, "loss": round(means[0], 5), "bce": round(means[1], 5),
                  "mask_loss": round(means[2], 5), "val_bce": round(validation["bce"], 5),
                  "val_mean_roc_auc": validation.get("mean_roc_auc")}
        history.append(record)
        if best is None or validation["bce"] < best["score"] - 1e-6:
            best = {"score": validation["bce"], "epoch": epoch + 1, "validation": validation,
                    "state": copy.deepcopy(model.state_dict())}
            waited = 0
        else:
            waited += 1
        epoch_times.append(time.time() - started)
        eta = np.mean(epoch_times) * (int(epochs) - epoch - 1)
        auc = validation.get("mean_roc_auc")
        say(f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} (BCE {record['bce']:.4f}, mask "
            f"{record['mask_loss']:.4f}), val BCE {record['val_bce']:.4f}"
            + (f", val mean AUC {auc:.3f}" if auc is not None else "")
            + f" [{epoch_times[-1]:.0f} s/epoch, ETA {eta / 60:.1f} min]")
        if waited >= patience:
            say(f"early stop: no better validation BCE for {patience} epochs (best epoch {best['epoch']})")
            return True
        return False

    fit(model, n, epochs, batch_size, generator, optimizer, schedule, batch_loss, end_epoch)
    return history, best


def evaluate_split(model, examples, dev, batch_size=16) -> dict:
    """BCE and per-class ROC AUC (None where a class has one label only) on preprocessed examples."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(examples.x[i:i + batch_size].to(dev)).cpu()
                            for i in range(0, len(examples.x), batch_size)])
    bce = float(F.binary_cross_entropy_with_logits(logits, examples.y))
    prob, truth = torch.sigmoid(logits).numpy(), examples.y.numpy() > 0.5
    aucs = [float(roc_auc_score(truth[:, k], prob[:, k])) if len(np.unique(truth[:, k])) == 2 else None
            for k in range(truth.shape[1])]
    known = [a for a in aucs if a is not None]
    return {"bce": bce, "roc_auc": aucs, "mean_roc_auc": float(np.mean(known)) if known else None}
