"""Loading volumetric classifiers together with their model card.

Formats (:func:`load_classifier`):

- ``.pt2``: a ``torch.export`` program. Self-contained and safe to load (no pickle of code);
  ``torch.export.unflatten`` restores the submodule tree so forward hooks work on named layers.
- a MONAI bundle folder (``configs/`` + ``models/model.pt``): the network is built from the
  bundle's ``network_def`` and the state dict loaded with ``weights_only=True``.
- a state dict (``.pt``/``.pth``/``.ckpt``) plus an architecture: a MONAI network by name and
  keyword arguments (``DenseNet121``, ``resnet18`` … ``resnet50``, ``SEResNet50``,
  ``EfficientNetBN``…) or a registered architecture (``demo``).
- a registered source name such as ``"demo"`` (the shipped demo classifier).
- an ``nn.Module`` already in memory (with a card), for Python users and tests.

TorchScript files can predict but cannot be hooked (``register_forward_hook is not supported on
ScriptModules``), so they are refused with a pointer to ``.pt2``. Arbitrary pickles are refused:
only ``torch.load(..., weights_only=True)`` is ever used.
"""

from __future__ import annotations

import inspect
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .preprocess import check_orientation

STATE_DICT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

# Named networks and ready-made classifiers that live elsewhere in the project (the demo model
# registers itself in models/demo_model.py), so this generic loader knows none of them by import.
ARCHITECTURES: dict = {}  # name -> build(**kwargs) -> nn.Module
SOURCES: dict = {}  # name -> load(device) -> Classifier


def register_architecture(name: str, build) -> None:
    """Make ``build(**kwargs)`` available as architecture ``name`` (``--arch name``, card ``architecture``)."""
    ARCHITECTURES[name] = build


def register_source(name: str, load) -> None:
    """Make ``load(device)`` answer ``load_classifier(name)`` (e.g. ``"demo"``)."""
    SOURCES[name] = load


# ---- model card ---------------------------------------------------------------------------------
@dataclass
class InputSpec:
    """What the model expects as input.

    ``size`` is the tensor's spatial shape or None; ``axes`` the order of the tensor's spatial
    axes: "zyx" (numpy/SimpleITK arrays, the default) or "xyz" (MONAI/NiBabel arrays); ``spacing`` (x, y, z mm) resamples instead of
    resizing; both None keep the CT's spacing (in the card's orientation). ``window`` (lo, hi) maps HU linearly onto [0, 1]
    with clipping; ``mean``/``std`` optionally normalise after windowing. ``channels`` copies the
    windowed CT into that many channels. ``orientation`` is an orientation code naming where the
    input grid's i, j, k (x, y, z) axes point (``"LPS"``: ITK/DICOM identity direction, the default;
    ``"RAS"``: what MONAI's ``Orientation(axcodes="RAS")`` feeds a network; any of the 48 codes) or
    ``"stored"`` (the array as the file stores it: results then depend on how the CT was saved).
    ``pad_value`` (HU) fills the input outside the CT (an oblique CT's axis-aligned box).
    """

    size: tuple | None = None
    spacing: tuple | None = None
    window: tuple = (-1000.0, 1000.0)
    channels: int = 1
    mean: float | None = None
    std: float | None = None
    axes: str = "zyx"
    clip: bool = True  # clip the windowed values to [0, 1] (MONAI's ScaleIntensityRange clip)
    orientation: str = "LPS"  # where the grid's i, j, k axes point (see preprocess.ORIENTATION_FORM), or "stored"
    pad_value: float = -1000.0  # HU outside the CT (the axis-aligned box around an oblique CT)


@dataclass
class ModelCard:
    """Model card: class names, multi-label or not, the input recipe and the default target layer."""

    name: str = "model"
    classes: list | None = None  # None: "0".."K-1" once the output size is known
    multilabel: bool = False
    input: InputSpec = field(default_factory=InputSpec)
    target_layer: str | None = None
    architecture: dict | None = None  # {"name": ..., "kwargs": {...}}
    extra: dict = field(default_factory=dict)  # anything else the card carries (kept, not used)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model card") -> "ModelCard":
        """Build a card from its JSON object; InputError naming ``source`` when a field is wrong."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: a model card must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        spec = data.pop("input", None) or {}
        if not isinstance(spec, dict):
            raise InputError(f"{source}: 'input' must be an object with size/spacing/window/channels")
        try:
            size = spec.get("size")
            spacing = spec.get("spacing")
            window = tuple(float(v) for v in spec.get("window") or (-1000.0, 1000.0))
            norm = spec.get("normalization") or spec.get("normalisation") or {}
            inp = InputSpec(
                size=tuple(int(n) for n in size) if size is not None else None,
                spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
                window=window,
                channels=int(spec.get("channels", 1)),
                mean=None if norm.get("mean") is None else float(norm["mean"]),
                std=None if norm.get("std") is None else float(norm["std"]),
                axes=str(spec.get("axes", "zyx")),
                orientation=str(spec.get("orientation", "LPS")),
                pad_value=float(spec.get("pad_value", -1000.0)),
                clip=bool(spec.get("clip", True)),
            )
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: bad 'input' section ({err}); expected "
                             '{"size": [D, H, W] or null, "spacing": [x, y, z] or null, '
                             '"orientation": "LPS", "window": [lo, hi], "channels": 1}') from None
        inp.orientation = check_orientation(inp.orientation, f"{source}: input.orientation")
        if inp.size is not None and (len(inp.size) != 3 or min(inp.size) < 1):
            raise InputError(f"{source}: input.size must be three positive integers (D, H, W), got {size}")
        if inp.spacing is not None and (len(inp.spacing) != 3 or min(inp.spacing) <= 0):
            raise InputError(f"{source}: input.spacing must be three positive numbers (x, y, z mm), got {spacing}")
        if len(window) != 2 or not window[0] < window[1]:
            raise InputError(f"{source}: input.window must be [lo, hi] HU with lo < hi, got {list(window)}")
        if inp.axes not in ("zyx", "xyz"):
            raise InputError(f"{source}: input.axes must be 'zyx' or 'xyz', got {inp.axes!r}")
        if inp.channels < 1:
            raise InputError(f"{source}: input.channels must be at least 1, got {inp.channels}")
        if inp.std is not None and inp.std <= 0:
            raise InputError(f"{source}: input normalization std must be positive, got {inp.std}")
        classes = data.pop("classes", None)
        if classes is not None:
            if not isinstance(classes, (list, tuple)) or not classes:
                raise InputError(f"{source}: 'classes' must be a non-empty list of class names")
            classes = [str(c) for c in classes]
            if len(set(classes)) != len(classes):
                raise InputError(f"{source}: class names must be unique, got {classes}")
        arch = data.pop("architecture", None)
        if arch is not None:
            arch = _parse_arch(arch, source)
        return cls(
            name=str(data.pop("name", "model")),
            classes=classes,
            multilabel=bool(data.pop("multilabel", False)),
            input=inp,
            target_layer=data.pop("target_layer", None),
            architecture=arch,
            extra=data,
        )

    @classmethod
    def from_json(cls, path) -> "ModelCard":
        """Read a card from a JSON file."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: model card not found")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: the model card is not valid JSON ({err})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """The card as a JSON-ready object (the same layout :meth:`from_dict` reads)."""
        inp = {"size": list(self.input.size) if self.input.size else None,
               "spacing": list(self.input.spacing) if self.input.spacing else None,
               "window": list(self.input.window), "channels": self.input.channels}
        if self.input.axes != "zyx":
            inp["axes"] = self.input.axes
        inp["orientation"] = self.input.orientation
        inp["pad_value"] = self.input.pad_value
        if not self.input.clip:
            inp["clip"] = False
        if self.input.mean is not None or self.input.std is not None:
            inp["normalization"] = {"mean": self.input.mean, "std": self.input.std}
        out = {"name": self.name, "classes": self.classes, "multilabel": self.multilabel,
               "input": inp, "target_layer": self.target_layer}
        if self.architecture:
            out["architecture"] = self.architecture
        out.update(self.extra)
        return out


def _parse_arch(arch, source="--arch") -> dict:
    """An architecture spec: a name ('DenseNet121'), a JSON string or a dict {name, kwargs}."""
    if isinstance(arch, str):
        text = arch.strip()
        if text.startswith("{"):
            try:
                arch = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"{source}: the architecture is not valid JSON ({err})") from None
        else:
            arch = {"name": text, "kwargs": {}}
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise InputError(f"{source}: an architecture is a name like 'DenseNet121' or "
                         '{"name": "DenseNet121", "kwargs": {...}}')
    kwargs = arch.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise InputError(f"{source}: architecture kwargs must be an object")
    return {"name": arch["name"], "kwargs": dict(kwargs)}


def _as_card(card, source) -> ModelCard | None:
    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, dict):
        return ModelCard.from_dict(card, source=f"model card for {source}")
    return ModelCard.from_json(card)


# ---- classifier ---------------------------------------------------------------------------------
class Classifier:
    """A network in eval mode on its device, with its model card.

    ``module`` is the hookable ``nn.Module``; ``predict(x)`` returns logits without gradients.
    """

    def __init__(self, module, card: ModelCard, device, source: str = "model", kind: str = "module"):
        self.module = module.eval()
        self.card = card
        self.device = device
        self.source = source
        self.kind = kind

    @property
    def class_names(self) -> list | None:
        """Class names from the card (None until known for a card-less ``.pt2``)."""
        return self.card.classes

    def predict(self, x):
        """Logits for an input tensor (B, C, D, H, W), computed under ``torch.no_grad``."""
        import torch

        with torch.no_grad():
            return self.module(x.to(self.device))

    def probabilities(self, logits):
        """Sigmoid (multi-label) or softmax (single-label) of logits, as the card says."""
        import torch

        logits = torch.as_tensor(logits)
        return torch.sigmoid(logits) if self.card.multilabel else torch.softmax(logits, dim=-1)

    def __repr__(self):
        return (f"Classifier({self.card.name!r}, {self.kind}, classes={self.class_names}, "
                f"device={self.device})")


def resolve_device(device="auto"):
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is an InputError."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here; use --device auto or cpu")
    return device


def unwrap_parallel(module):
    """The inner module of DataParallel / DistributedDataParallel wrappers (any depth)."""
    from torch import nn

    while isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    return module


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove a DataParallel/DDP key prefix ("module.") when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


# ---- loading ------------------------------------------------------------------------------------
def load_classifier(source, card=None, arch=None, device="auto") -> Classifier:
    """Load a classifier and its model card.

    ``source``: a ``.pt2`` export, a MONAI bundle folder, a state dict file (with ``arch`` or an
    ``architecture`` in the card), a registered source name (``"demo"`` once
    ``saliency_inspector.models.demo_model`` is imported), or an ``nn.Module``. ``card``: a path, dict or
    :class:`ModelCard`; by default ``<model>.json`` beside the model. ``arch``: a MONAI network
    name, a JSON spec ``{"name", "kwargs"}`` or a registered architecture name. ``device``: "auto", "cpu" or "cuda".
    """
    from torch import nn

    dev = resolve_device(device)
    if isinstance(source, nn.Module):
        card = _as_card(card, "module") or ModelCard()
        module = unwrap_parallel(source)
        if arch is not None:
            raise InputError("arch is only used with a state dict file, not with a module")
        return Classifier(module.to(dev), card, dev, source=type(module).__name__, kind="module")
    if isinstance(source, str) and source in SOURCES:
        classifier = SOURCES[source](dev)
        if card is not None:  # e.g. the demo model with another orientation or window
            classifier.card = _as_card(card, source)
        return classifier
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: model not found (give a .pt2 export, a MONAI bundle folder, "
                         "a state dict with --arch, or 'demo')")
    card = _as_card(card, path) or _card_beside(path)
    if path.is_dir():
        return _load_bundle(path, card, dev)
    if path.suffix == ".pt2":
        return _load_export(path, card, dev)
    if path.suffix in (".ts", ".torchscript") or _is_torchscript(path):
        raise InputError(f"{path}: is a TorchScript file; TorchScript models can predict but cannot be "
                         "hooked (register_forward_hook is not supported on ScriptModules), so no CAM is "
                         "possible. Export the model with torch.export.export(model, (x,)) and "
                         "torch.export.save(program, 'model.pt2') instead")
    if path.suffix in (".onnx",):
        raise InputError(f"{path}: ONNX models cannot be hooked for gradients; export a .pt2 with torch.export")
    return _load_state_dict_file(path, card, arch, dev)


def _card_beside(path: Path) -> ModelCard | None:
    candidates = [path.with_suffix(".json")] if path.is_file() else [
        path.parent / f"{path.name}.json", path / "model_card.json"]
    for candidate in candidates:
        if candidate.is_file():
            return ModelCard.from_json(candidate)
    return None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their Python code under ``<name>/code/``; state dicts do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _load_export(path: Path, card: ModelCard | None, dev) -> Classifier:
    import logging

    import torch

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: is not a torch.export program (a .pt2 is a ZIP archive; this file is "
                         "not); save one with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')")
    # torch.export.load logs the whole traceback of a failed load as a warning before raising it
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # noqa: BLE001 - any failure here means "not a readable export"
        raise InputError(f"{path}: cannot be read as a torch.export program ({_first_line(err)}); "
                         "save one with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')") from None
    finally:
        logger.setLevel(level)
    module = torch.export.unflatten(program)
    if card is None:
        card = ModelCard(name=path.stem)
        # A program exported with static shapes only accepts that shape: use it as the input size.
        shape = _static_input_shape(program)
        if shape is not None and len(shape) == 5:
            card.input = InputSpec(size=tuple(shape[2:]), channels=int(shape[1]))
        elif shape is not None and len(shape) >= 2:
            card.input = InputSpec(channels=int(shape[1]))
    return Classifier(module.to(dev), card, dev, source=str(path), kind="pt2")


def _static_input_shape(program):
    """The example input's shape when every dimension is a plain integer (static export), else None."""
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names and "val" in node.meta:
            shape = tuple(node.meta["val"].shape)
            if all(isinstance(n, int) for n in shape):
                return shape
            return None
    return None


def _load_weights(path: Path) -> dict:
    """``torch.load(weights_only=True)``; refuse arbitrary pickles with an explanation."""
    import torch

    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a ZIP archive (since torch 1.6) or, in the legacy format, a pickle stream
    # (protocol 2+ starts with byte 0x80); anything else is not a torch file and must not reach the
    # unpickler, whose complaint about it ("invalid load key") reads like a refused pickle.
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise InputError(f"{path}: is not a PyTorch weights file (neither a torch.save ZIP archive nor a "
                         "legacy pickle); give the file written by torch.save(model.state_dict(), ...)")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{path}: refused to load: the file holds pickled Python objects, not only tensors "
            f"({_pickle_reason(err)}). Unpickling can run arbitrary code, so only weights_only "
            "state dicts are read; save model.state_dict() instead, or export a .pt2") from None
    except Exception as err:  # noqa: BLE001 - corrupt zip, truncated file, not a torch file
        raise InputError(f"{path}: cannot be read as PyTorch weights ({_first_line(err)}); "
                         "the file may be corrupt or not a torch.save file") from None
    if isinstance(data, dict):
        for key in ("state_dict", "model_state_dict", "model", "network", "net"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(hasattr(v, "shape") for v in data.values()):
        raise InputError(f"{path}: does not hold a state dict (a dict of tensor names to tensors)")
    return strip_prefix(dict(data))


def _load_state_dict_file(path: Path, card: ModelCard | None, arch, dev) -> Classifier:
    spec = _parse_arch(arch) if arch is not None else (card.architecture if card else None)
    state = _load_weights(path)  # first: a file that is not a state dict is told so, with or without --arch
    if spec is None:
        raise InputError(f"{path}: a state dict holds only weights; say which network it belongs to with "
                         "--arch (e.g. DenseNet121 or '{\"name\": \"resnet18\", \"kwargs\": {...}}') or an "
                         "'architecture' entry in the model card")
    card = card or ModelCard(name=path.stem)
    card.architecture = spec
    module = build_network(spec, card)
    _load_state(module, state, path)
    return Classifier(module.to(dev), card, dev, source=str(path), kind="state_dict")


def load_weights(module, path) -> None:
    """Load a state dict file (``weights_only=True``, never a pickle of code) into ``module``, strictly."""
    path = Path(path)
    _load_state(module, _load_weights(path), path)


def _load_state(module, state: dict, path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        missing = [k for k in module.state_dict() if k not in state]
        unexpected = [k for k in state if k not in module.state_dict()]
        detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else \
            _first_line(err)
        raise InputError(f"{path}: the weights do not fit the architecture ({detail}); check --arch "
                         "and its kwargs (spatial_dims, in_channels, number of classes)") from None


def build_network(spec: dict, card: ModelCard | None = None):
    """Build a network from ``{"name", "kwargs"}``: a registered architecture or a MONAI network class/function.

    For MONAI networks, ``spatial_dims`` defaults to 3 and the input channels / number of classes
    come from the card when the kwargs do not give them.
    """
    name, kwargs = spec["name"], dict(spec.get("kwargs") or {})
    if name in ARCHITECTURES:
        return ARCHITECTURES[name](**kwargs)
    import monai.networks.nets as nets

    factory = getattr(nets, name, None)
    if factory is None:
        lower = {n.lower(): n for n in dir(nets) if not n.startswith("_")}
        factory = getattr(nets, lower.get(name.lower(), ""), None)
    if factory is None or not callable(factory):
        known = ", ".join(["DenseNet121", "resnet18", "resnet34", "resnet50", "SEResNet50", "EfficientNetBN",
                           *sorted(ARCHITECTURES)])
        raise InputError(f"architecture {name!r}: not a MONAI network; use one of e.g. {known}")
    params = inspect.signature(factory).parameters
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())

    # Factories taking **kwargs for an inner class (MONAI's resnet10..200 -> ResNet, SEResNet50 ->
    # SENet) accept that class's names, which their own signature does not show.
    forwarded = {"spatial_dims"} if has_kwargs else set()
    if has_kwargs and name.lower().startswith("resnet"):
        forwarded |= {"n_input_channels", "num_classes"}
    elif has_kwargs and name.lower().startswith("se"):
        forwarded |= {"in_channels", "num_classes"}

    def default(key, value):
        if (key in params or key in forwarded) and key not in kwargs and value is not None:
            kwargs[key] = value

    default("spatial_dims", 3)
    channels = card.input.channels if card else None
    n_classes = len(card.classes) if card and card.classes else None
    for key in ("in_channels", "n_input_channels"):
        default(key, channels)
    for key in ("out_channels", "num_classes"):
        default(key, n_classes)
    if "pretrained" in params and "pretrained" not in kwargs:
        kwargs["pretrained"] = False  # never download weights
    try:
        return factory(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise InputError(f"architecture {name!r} with {kwargs}: cannot be built ({_first_line(err)})") from None


def _load_bundle(folder: Path, card: ModelCard | None, dev) -> Classifier:
    configs = folder / "configs"
    weights = folder / "models" / "model.pt"
    if not configs.is_dir():
        raise InputError(f"{folder}: a folder model must be a MONAI bundle with configs/ and models/model.pt")
    if not weights.is_file():
        ts = folder / "models" / "model.ts"
        hint = " (only models/model.ts, TorchScript, is there; it cannot be hooked)" if ts.is_file() else ""
        raise InputError(f"{folder}: MONAI bundle has no models/model.pt state dict{hint}")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    config_files = [p for p in sorted(configs.iterdir()) if p.suffix in (".json", ".yaml", ".yml")
                    and p.stem in ("inference", "train", "training")]
    if not config_files:
        raise InputError(f"{folder}: no configs/inference.json (or .yaml) in the MONAI bundle")
    try:
        parser.read_config([str(p) for p in config_files])
        metadata = configs / "metadata.json"
        if metadata.is_file():
            parser.read_meta(str(metadata))
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as err:  # noqa: BLE001 - bundle configs can fail in many ways
        raise InputError(f"{folder}: cannot build the bundle's network_def ({_first_line(err)})") from None
    if card is None:
        card = _card_from_bundle_metadata(folder, parser)
    _load_state(network, _load_weights(weights), weights)
    return Classifier(network.to(dev), card, dev, source=str(folder), kind="monai_bundle")


def _card_from_bundle_metadata(folder: Path, parser) -> ModelCard:
    """A card from the bundle's metadata.json (network_data_format: channels, shape, class names)
    and its inference config's preprocessing transforms (:func:`_input_from_bundle_config`)."""
    card = ModelCard(name=folder.name)
    card.input.axes = "xyz"  # MONAI's LoadImage gives arrays indexed (i, j, k)
    try:
        fmt = parser.get("_meta_#network_data_format", {}) or {}
    except Exception:  # noqa: BLE001
        fmt = {}
    image = (fmt.get("inputs") or {}).get("image") or {}
    pred = (fmt.get("outputs") or {}).get("pred") or {}
    if image.get("num_channels"):
        card.input.channels = int(image["num_channels"])
    shape = image.get("spatial_shape")
    metadata_size = None
    if isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(n, int) for n in shape):
        metadata_size = tuple(int(n) for n in shape)  # tensor order, which for MONAI is x, y, z
    defs = pred.get("channel_def")
    if isinstance(defs, dict) and defs:
        card.classes = [str(defs[k]) for k in sorted(defs, key=lambda k: int(k))]
    _input_from_bundle_config(card, parser, metadata_size)
    return card


# The MONAI dictionary transforms whose arguments make a card's input section (names and argument
# names as in monai/transforms/{spatial,intensity,croppad,utility}/dictionary.py).
_BUNDLE_TRANSFORMS = ("EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged", "Resized",
                      "SpatialPadd")


def _bundle_transforms(config) -> dict:
    """name -> argument dict of the first of :data:`_BUNDLE_TRANSFORMS` found in a (raw) bundle config."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str):
                name = target.lstrip("$").rsplit(".", 1)[-1]
                if name in _BUNDLE_TRANSFORMS and name not in found:
                    found[name] = node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def _literal(value):
    """A config value usable as it is (not a '@reference' or '$expression'), else None."""
    if isinstance(value, str) and value[:1] in ("@", "$", "%"):
        return None
    return value


def _input_from_bundle_config(card: ModelCard, parser, metadata_size=None) -> None:
    """Fill ``card.input`` from the bundle's preprocessing transforms (Orientationd axcodes, Spacingd
    pixdim, ScaleIntensityRanged a_min/a_max/b_min/b_max/clip, Resized spatial_size, EnsureChannelFirstd)
    and record in ``card.extra["input_notes"]`` which fields were found and which defaulted."""
    try:
        config = parser.get("preprocessing") or parser.get()
    except Exception:  # noqa: BLE001 - a bundle without a preprocessing section
        config = parser.get()
    transforms = _bundle_transforms(config)
    spec, found, defaulted = card.input, [], []

    orientation = transforms.get("Orientationd", {}).get("axcodes")
    if isinstance(_literal(orientation), str) and len(orientation) == 3:
        spec.orientation = check_orientation(orientation, "the bundle's Orientationd axcodes")
        found.append(f"orientation {spec.orientation} (Orientationd)")
    else:
        spec.orientation = "stored"  # LoadImage alone feeds the array as the file stores it
        defaulted.append("orientation: stored (no Orientationd: the network saw arrays as files store them)")

    resized = _literal(transforms.get("Resized", {}).get("spatial_size"))
    pixdim = _literal(transforms.get("Spacingd", {}).get("pixdim"))
    if isinstance(resized, (list, tuple)) and len(resized) == 3 and all(isinstance(n, int) and n > 0 for n in resized):
        spec.size = tuple(resized)
        found.append(f"size {list(resized)} (Resized)")
    elif isinstance(pixdim, (list, tuple)) and len(pixdim) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in pixdim):
        spec.spacing, spec.size = tuple(float(v) for v in pixdim), None
        found.append(f"spacing {list(spec.spacing)} mm (Spacingd)")
    elif metadata_size is not None:
        spec.size = metadata_size
        found.append(f"size {list(metadata_size)} (metadata spatial_shape)")
    else:
        defaulted.append("size/spacing: the CT's own spacing (no Resized, Spacingd or spatial_shape)")
    if "SpatialPadd" in transforms:
        found.append("SpatialPadd (noted, not reproduced: the input grid covers the CT itself)")

    scale = transforms.get("ScaleIntensityRanged", {})
    a_min, a_max = _literal(scale.get("a_min")), _literal(scale.get("a_max"))
    if isinstance(a_min, (int, float)) and isinstance(a_max, (int, float)) and a_min < a_max:
        spec.window = (float(a_min), float(a_max))
        b_min, b_max = _literal(scale.get("b_min")), _literal(scale.get("b_max"))
        if isinstance(b_min, (int, float)) and isinstance(b_max, (int, float)) and b_max != b_min:
            # b_min + (b_max - b_min) * w  ==  (w - mean) / std
            spec.std = 1.0 / (float(b_max) - float(b_min))
            spec.mean = -float(b_min) * spec.std
            if (spec.mean, spec.std) == (0.0, 1.0):
                spec.mean = spec.std = None
        spec.clip = bool(_literal(scale.get("clip", False)))
        found.append(f"window {list(spec.window)} HU, clip {str(spec.clip).lower()} (ScaleIntensityRanged)")
    else:
        defaulted.append(f"window {list(spec.window)} HU (no ScaleIntensityRanged with literal a_min/a_max)")
    if "EnsureChannelFirstd" in transforms:
        found.append(f"channels {spec.channels} (EnsureChannelFirstd)")
    else:
        defaulted.append(f"channels {spec.channels}")
    card.extra["input_notes"] = ("from the bundle's config: " + ("; ".join(found) or "nothing") +
                                 ". Defaulted: " + ("; ".join(defaulted) or "nothing"))


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return _quote(lines[0] if lines else type(err).__name__, 200)


def _pickle_reason(err: Exception) -> str:
    """The line of torch's weights_only refusal that names what was refused (without ANSI colours)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    named = [line for line in lines if "WeightsUnpickler error" in line or "Unsupported global" in line]
    return _quote((named or [line for line in lines if line] or [type(err).__name__])[0], 160)


def _quote(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` characters at a word boundary, with '…' when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
