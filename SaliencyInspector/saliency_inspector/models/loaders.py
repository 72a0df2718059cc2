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
only ``torch.load(..., weights_only=True)`` is ever used (:mod:`.weights`). The card lives in
:mod:`.card`, the MONAI bundle reader in :mod:`.bundle`; the registries here let shipped models
(the demo) plug in without this generic loader importing them.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path

from ..errors import InputError
from .bundle import load_bundle
from .card import InputSpec, ModelCard, as_card, parse_arch
from .weights import first_line, load_state, read_state_dict


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
        """Sigmoid (multi-label) or softmax (single-label) of logits, as the card says; a model with
        one output is always read with a sigmoid (softmax over one logit is 1.0 whatever the input)."""
        import torch

        logits = torch.as_tensor(logits)
        if self.card.multilabel or logits.shape[-1] == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)

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
        card = as_card(card, "module") or ModelCard()
        module = unwrap_parallel(source)
        if arch is not None:
            raise InputError("arch is only used with a state dict file, not with a module")
        return Classifier(module.to(dev), card, dev, source=type(module).__name__, kind="module")
    if isinstance(source, str) and source in SOURCES:
        classifier = SOURCES[source](dev)
        if card is not None:  # e.g. the demo model with another orientation or window
            classifier.card = as_card(card, source)
        return classifier
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: model not found (give a .pt2 export, a MONAI bundle folder, "
                         "a state dict with --arch, or 'demo')")
    card = as_card(card, path) or _card_beside(path)
    if path.is_dir():
        network, card = load_bundle(path, card)
        return Classifier(network.to(dev), card, dev, source=str(path), kind="monai_bundle")
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
        raise InputError(f"{path}: cannot be read as a torch.export program ({first_line(err)}); "
                         "save one with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')") from None
    finally:
        logger.setLevel(level)
    module = torch.export.unflatten(program)
    if card is None:
        card = ModelCard(name=path.stem)
        # A program exported with static shapes only accepts that shape: use it as the input size.
        shape = static_input_shape(program)
        if shape is not None and len(shape) == 5:
            card.input = InputSpec(size=tuple(shape[2:]), channels=int(shape[1]))
        elif shape is not None and len(shape) >= 2:
            card.input = InputSpec(channels=int(shape[1]))
    return Classifier(module.to(dev), card, dev, source=str(path), kind="pt2")


def static_input_shape(program):
    """The example input's shape when every dimension is a plain integer (static export), else None.

    ``program``: an ``ExportedProgram``, or any module carrying an exported graph (what
    ``torch.export.unflatten(program)`` and ``program.module()`` return: their placeholders keep
    the export's example value under ``meta["val"]``).
    """
    if not hasattr(program, "graph_signature"):  # a module: its first placeholder with a value is x
        for node in getattr(getattr(program, "graph", None), "nodes", ()):
            if node.op == "placeholder" and "val" in node.meta and hasattr(node.meta["val"], "shape"):
                shape = tuple(node.meta["val"].shape)
                return shape if all(isinstance(n, int) for n in shape) else None
        return None
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names and "val" in node.meta:
            shape = tuple(node.meta["val"].shape)
            if all(isinstance(n, int) for n in shape):
                return shape
            return None
    return None


def static_batch(module) -> int | None:
    """The batch size an exported module insists on, or None when any batch is accepted.

    ``torch.export.export(model, (x,))`` without ``dynamic_shapes`` fixes every dimension of x, the
    batch included: the loaded program then refuses any other batch ("Expected input at
    *args[0].shape[0] to be equal to 1"). Estimators that batch steps or samples internally (IG,
    SmoothGrad, occlusion, ScoreCAM…) send batches of this size instead (:mod:`explainers.memory`).
    """
    shape = static_input_shape(module)
    return int(shape[0]) if shape else None


def _load_state_dict_file(path: Path, card: ModelCard | None, arch, dev) -> Classifier:
    spec = parse_arch(arch) if arch is not None else (card.architecture if card else None)
    state = read_state_dict(path)  # first: a file that is not a state dict is told so, with or without --arch
    if spec is None:
        raise InputError(f"{path}: a state dict holds only weights; say which network it belongs to with "
                         "--arch (e.g. DenseNet121 or '{\"name\": \"resnet18\", \"kwargs\": {...}}') or an "
                         "'architecture' entry in the model card")
    card = card or ModelCard(name=path.stem)
    card.architecture = spec
    module = build_network(spec, card)
    load_state(module, state, path)
    return Classifier(module.to(dev), card, dev, source=str(path), kind="state_dict")


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
        raise InputError(f"architecture {name!r} with {kwargs}: cannot be built ({first_line(err)})") from None
