"""The MONAI bundle reader: a folder with ``configs/`` and ``models/model.pt``.

The network is built from the bundle's ``network_def`` and its state dict loaded with
``weights_only=True``. Without a model card, one is made from the bundle's ``metadata.json``
(channels, spatial shape, class names) and its inference config's preprocessing transforms
(orientation, spacing or size, intensity window), with a note of what was found and what defaulted.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .card import ModelCard
from .preprocess import check_orientation
from .weights import first_line, load_state, read_state_dict


def load_bundle(folder: Path, card: ModelCard | None):
    """(network with the bundle's weights loaded, card): ``card`` when given, else one made from the
    bundle's metadata and preprocessing config."""
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
        raise InputError(f"{folder}: cannot build the bundle's network_def ({first_line(err)})") from None
    if card is None:
        card = _card_from_bundle_metadata(folder, parser)
    load_state(network, read_state_dict(weights), weights)
    return network, card


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
