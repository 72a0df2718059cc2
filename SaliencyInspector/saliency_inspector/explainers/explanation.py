"""explain(): CT + classifier → one raw saliency map per (method, class), put on the CT's own grid
one at a time when asked (raw maps stay at feature resolution)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.names import safe_name
from ..io.volume import Volume, write_volume


class CTMaps(Mapping):
    """``(method, class) -> Volume`` on the CT grid, each computed from its raw map when asked.

    Iterating ``items()`` puts one map at a time on the CT; nothing is kept, so a loop over all
    maps holds one CT-sized map at a time (keep the ones you need).
    """

    def __init__(self, explanation: "Explanation"):
        self._explanation = explanation

    def __getitem__(self, key) -> Volume:
        if key not in self._explanation.raw:
            raise KeyError(key)
        return self._explanation.map(*key)

    def __iter__(self):
        return iter(list(self._explanation.raw))

    def __len__(self) -> int:
        return len(self._explanation.raw)


@dataclass
class Explanation:
    """Saliency maps for one CT.

    ``raw[(method, class_name)]`` is the RAW, SIGNED, un-normalised map as computed, a float32
    Volume on its own physical grid (the feature grid for CAMs, the model-input grid for gradient
    estimators: small). :meth:`map` puts one on the CT's exact grid (``grid``) when asked, and
    ``maps`` offers all of them that way (lazily). ``logits`` and ``probabilities`` cover every
    class of the model. A new kind of map joins through :meth:`add_raw`.
    """

    raw: dict
    grid: Volume  # the CT's geometry (a zero-memory Volume: maps go there)
    logits: np.ndarray
    probabilities: np.ndarray
    class_names: list
    methods: list
    classes: list  # the explained class names (a subset of class_names)
    layer: str
    multilabel: bool = False
    model: str = "model"
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        """A short summary (no arrays): model, layer, methods, classes with their probabilities, grid."""
        probs = ", ".join(f"{c} {float(self.probabilities[self.class_names.index(c)]):.2f}" for c in self.classes)
        return (f"Explanation(model {self.model!r}, layer {self.layer!r}, methods {list(self.methods)}, "
                f"p: {probs}; {len(self.raw)} maps for the CT grid {self.grid.describe_grid()})")

    @property
    def maps(self) -> CTMaps:
        """Every map on the CT grid, computed one at a time when accessed (see :class:`CTMaps`)."""
        return CTMaps(self)

    def add_raw(self, method: str, class_name: str, raw: Volume) -> None:
        """Add a raw map living on any physical grid covering the CT (e.g. the model-input grid of a
        gradient estimator: ``Prepared.raw_volume(tensor_map)`` makes it); it is put on the CT grid
        like the CAMs, one at a time when asked."""
        if not isinstance(raw, Volume):
            raise TypeError("a raw map is a Volume on its own physical grid (see Prepared.raw_volume)")
        if class_name not in self.class_names:
            raise InputError(f"class {class_name!r} is not one of the model's classes: {', '.join(self.class_names)}")
        self.raw[(method, class_name)] = Volume(np.asarray(raw.array, dtype=np.float32), raw.spacing,
                                                raw.origin, raw.direction)
        if method not in self.methods:
            self.methods.append(method)
        if class_name not in self.classes:
            self.classes.append(class_name)

    def map(self, method: str, class_name, out: np.ndarray | None = None) -> Volume:
        """The map for (method, class) on the CT's grid, float32, computed now from the raw map
        (``class_name`` may also be the class index). ``out`` (float32, the CT's shape) is reused as
        the result's array when given."""
        from ..models.preprocess import resample_map

        if not isinstance(class_name, str) or class_name not in self.class_names:
            class_name = class_name_of(self.class_names, class_name)
        key = (method, class_name)
        if key not in self.raw:
            raise InputError(f"no map for method {method!r} and class {class_name!r}; computed: "
                             + ", ".join(f"{m}/{c}" for m, c in self.raw))
        return resample_map(self.raw[key], self.grid, out=out)

    def predictions(self) -> dict:
        """Class names, logits and probabilities as a JSON-ready dict."""
        return {
            "model": self.model,
            "class_names": list(self.class_names),
            "logits": [float(v) for v in self.logits],
            "probabilities": [float(v) for v in self.probabilities],
            "multilabel": self.multilabel,
            "activation": "sigmoid" if self.multilabel else "softmax",
            "methods": list(self.methods),
            "explained_classes": list(self.classes),
            "target_layer": self.layer,
            **self.info,
        }

    def save(self, out_dir) -> list:
        """Write ``<method>_<class>.nrrd`` per map (the CT's grid) and ``predictions.json``.

        Maps are put on the CT grid one at a time into one reused buffer."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        buffer = np.empty(self.grid.shape, dtype=np.float32)
        for method, name in self.raw:
            volume = self.map(method, name, out=buffer)
            written.append(write_volume(volume, out_dir / f"{method}_{safe_name(name)}.nrrd", compression_level=1))
        del buffer
        path = out_dir / "predictions.json"
        path.write_text(json.dumps(self.predictions(), indent=2) + "\n")
        written.append(path)
        return written


def class_name_of(names, wanted) -> str:
    """The class name ``wanted`` names in ``names``: itself, or a class index (int or digits);
    InputError when there is none."""
    if isinstance(wanted, (int, np.integer)) or (isinstance(wanted, str) and wanted.lstrip("-").isdigit()
                                                 and wanted not in names):
        index = int(wanted)
        if not 0 <= index < len(names):
            raise InputError(f"class index {index} out of range; the model has {len(names)} classes")
        return names[index]
    if wanted not in names:
        raise InputError(f"class {wanted!r} is not one of the model's classes: {', '.join(names)}")
    return wanted


def select_classes(names, classes) -> list:
    """The class names chosen by ``classes`` ("all"/None, a name or index, or a list), in order, once each."""
    if classes is None or (isinstance(classes, str) and classes == "all"):
        return list(names)
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    return list(dict.fromkeys(class_name_of(names, c) for c in classes))


def explain(classifier, ct: Volume, methods=("hirescam", "gradcam"), classes="all", layer=None,
            progress=None, settings=None) -> Explanation:
    """Saliency maps for every (method, class) on the CT's own grid, from one forward pass.

    ``classifier``: a :class:`models.Classifier`; ``ct``: a Volume in HU; ``methods``: names in
    the method registry (:data:`registry.METHODS`: the CAMs hirescam, gradcam, gradcampp, computed
    together in one engine pass, and the estimators gradient, smoothgrad, ig, occlusion, xrai3d, …)
    or callables (see :func:`registry.register_method`); ``classes``: "all", a class name or index,
    or a list; ``layer``: module name, or a list of names whose CAM maps are combined (default: the
    card's target layer, else the last layer with a spatial output); ``progress``: optional callable taking one-line messages; ``settings``: the
    estimators' :class:`settings.EstimatorSettings` (or a dict of its fields). The model card is
    not changed (a card-less model's outputs are named "0", "1", … in the result only).
    """
    from .cam import compute_cams
    from ..models.preprocess import geometry, preprocess

    from .registry import get_method, method_names
    from .settings import settings_from

    say = progress or (lambda _msg: None)
    methods = [methods] if isinstance(methods, str) or callable(methods) else list(methods)
    entries = [get_method(m) for m in methods]  # InputError when unknown
    if not entries:
        raise InputError(f"unknown method(s) (none given); choose from {', '.join(method_names())}")
    estimators = {e.name: m for e, m in zip(entries, methods) if not e.is_cam}  # name -> name or callable
    cam_methods = [e.name for e in entries if e.is_cam]  # all in the one engine pass
    methods = [e.name for e in entries]
    settings = settings_from(settings)
    card = classifier.card
    say(f"preprocessing CT ({ct.describe_grid()}) for the model, in orientation {card.input.orientation}")
    if card.extra.get("input_notes"):
        say(f"model input {card.extra['input_notes']}")
    prepared = preprocess(ct, card.input, device=classifier.device)
    x = prepared.tensor
    layer = layer or card.target_layer
    if isinstance(layer, (list, tuple)):
        layer = layer[0] if len(layer) == 1 else list(layer)
    names = card.classes
    indices = None
    if names is not None:
        indices = [names.index(c) for c in select_classes(names, classes)]
    if cam_methods:
        say(f"forward pass and gradients at layer {layer or '(automatic)'} for "
            f"{'all classes' if indices is None else len(indices)} ({', '.join(cam_methods)})")
    try:
        if cam_methods:
            result = compute_cams(classifier.module, x, methods=cam_methods, class_indices=indices, layer=layer,
                                  settings=settings)
        else:
            result = _logits_only(classifier, x, indices, layer)
    except InputError:
        raise
    except (RuntimeError, ValueError) as err:  # the network refused the input (channels, dims, size)
        raise InputError(_model_input_message(classifier, x, err)) from None
    n_out = result.logits.shape[1]
    if names is None:  # a card-less .pt2: class names are the output indices (the card stays as it is)
        names = [str(i) for i in range(n_out)]
        if classes not in (None, "all"):
            keep = [names.index(c) for c in select_classes(names, classes)]
            result.maps = {m: v[:, keep] for m, v in result.maps.items()}
            result.class_indices = keep
    elif len(names) != n_out:
        raise InputError(f"the model card lists {len(names)} classes but the model has {n_out} outputs; "
                         "fix the card's 'classes'")
    explained = [names[i] for i in result.class_indices]
    if cam_methods and all(int(n) == 1 for n in result.activation_shape[2:]):
        raise InputError(f"the target layer {result.layer!r} has a 1×1×1 output, so every CAM there is one "
                         "constant value over the whole CT; choose a layer with a spatial output (--layer, or "
                         "the card's target_layer)")
    warnings = []
    if cam_methods and result.activation_shape[1] == 1 and any(m in ("gradcam", "gradcampp") for m in cam_methods):
        warnings.append(single_channel_warning(result.layer))
        say("warning: " + warnings[-1])
    fgrid = prepared.feature_grid(result.activation_shape[2:])
    raw = {}
    for method in cam_methods:
        feature_maps = result.maps[method][0]  # (C, *spatial), batch of one
        for n, name in enumerate(explained):
            raw[(method, name)] = prepared.raw_volume(feature_maps[n])
    info = {"warnings": warnings}
    if cam_methods:
        info["feature_cell_mm"] = [float(v) for v in fgrid.spacing]
        if result.notes:  # eigen_smooth, aug_smooth, several layers combined
            info["cam_notes"] = list(result.notes)
    if estimators:  # input-grid maps: kept raw like the CAMs, put on the CT grid when used
        from .attribution import run_estimators

        from dataclasses import replace

        done = run_estimators(classifier, prepared, estimators, dict(zip(explained, result.class_indices)),
                              replace(settings, progress=settings.progress or say), layer, say)
        raw.update(done["maps"])
        info["estimators"] = done["info"]
    logits = result.logits[0].detach().cpu()
    probabilities = classifier.probabilities(logits).numpy()
    info = {"input_grid": prepared.grid.describe_grid(), "feature_grid": fgrid.describe_grid(),
            **orientation_info(prepared, ct), **info}
    if card.extra.get("input_notes"):  # e.g. which input fields came from a MONAI bundle's config
        info["card_input"] = card.extra["input_notes"]
    if prepared.orientation == "stored":
        say(info["orientation_note"])
    say(f"done ({len(raw)} maps kept at feature resolution {'×'.join(map(str, fgrid.size_xyz))}; "
        "each is put on the CT grid when used)")
    return Explanation(raw=raw, grid=geometry(ct.shape, ct.spacing, ct.origin, ct.direction),
                       logits=logits.numpy(), probabilities=probabilities,
                       class_names=list(names), methods=methods, classes=explained, layer=result.layer,
                       multilabel=card.multilabel or len(names) == 1, model=card.name, info=info)


def _logits_only(classifier, x, indices, layer):
    """A CamResult without maps when no CAM was asked for: one no-grad forward for the logits."""
    import torch

    from .cam import CamResult

    logits = classifier.predict(x)
    if not torch.is_tensor(logits) or logits.ndim != 2:
        raise InputError(f"the model's output has shape {tuple(getattr(logits, 'shape', ()))}; "
                         "a classifier must return logits (B, K)")
    chosen = list(range(logits.shape[1])) if indices is None else list(indices)
    bad = [c for c in chosen if not 0 <= c < logits.shape[1]]
    if bad:
        raise InputError(f"class index {bad[0]} out of range: the model has {logits.shape[1]} outputs")
    return CamResult(maps={}, logits=logits.detach(), layer=layer or "", class_indices=chosen,
                     activation_shape=tuple(x.shape))


def single_channel_warning(layer: str) -> str:
    """Why Grad-CAM says nothing class-specific at a one-channel layer."""
    return (f"target layer {layer!r} has a single channel, so Grad-CAM (and Grad-CAM++) is that channel "
            "times one number per class: the same picture for every class, up to scale and sign. "
            "HiResCAM is still class-specific; for a Grad-CAM contrast choose a layer with many channels")


def orientation_info(prepared, ct: Volume) -> dict:
    """What predictions.json and the report say about the orientation the model saw."""
    from ..models.preprocess import STORED, orientation_code

    stored = orientation_code(ct.direction)
    if prepared.orientation == STORED:
        return {"orientation": STORED,
                "orientation_note": f"the model saw the CT as its file stores it (axes {stored}); results "
                                    "depend on how the CT was saved (the card says 'stored', not an orientation)"}
    oblique = not np.allclose(np.abs(ct.direction), np.round(np.abs(ct.direction)), atol=1e-6)
    text = f"the model saw the CT in {prepared.orientation} orientation (file stored as {stored}" + \
        (", oblique: resampled into the axis-aligned box around it)" if oblique else ")")
    return {"orientation": prepared.orientation, "orientation_note": text}


def _model_input_message(classifier, x, err) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return (f"model {classifier.card.name!r} rejected its input of shape {tuple(x.shape)} "
            f"(batch, channels, {'D, H, W' if classifier.card.input.axes == 'zyx' else 'x, y, z'}): "
            f"{text[:200]}. Check the model card's input.channels/size, and that the model is 3D")
