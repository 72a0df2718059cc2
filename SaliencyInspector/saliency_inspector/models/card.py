"""The model card: what a classifier expects as input (:class:`InputSpec`) and what it answers
(class names, multi-label or not, the default target layer, the architecture), read from and
written to JSON (DESIGN.md's model-card format)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .preprocess import check_orientation


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
    attention_gates: list | None = None  # module paths whose outputs are attention gates (the `attention` method)
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
            arch = parse_arch(arch, source)
        gates = data.pop("attention_gates", None)
        if gates is not None and (not isinstance(gates, (list, tuple)) or not gates
                                  or not all(isinstance(g, str) and g for g in gates)):
            raise InputError(f"{source}: 'attention_gates' must be a non-empty list of module paths, got {gates!r}")
        return cls(
            name=str(data.pop("name", "model")),
            classes=classes,
            multilabel=bool(data.pop("multilabel", False)),
            input=inp,
            target_layer=data.pop("target_layer", None),
            architecture=arch,
            attention_gates=list(gates) if gates else None,
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
        if self.attention_gates:
            out["attention_gates"] = list(self.attention_gates)
        out.update(self.extra)
        return out


def parse_arch(arch, source="--arch") -> dict:
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



def as_card(card, source) -> ModelCard | None:
    """``card`` as a :class:`ModelCard`: None and cards pass through, a dict is parsed, anything
    else is read as a JSON file; ``source`` names the model in error messages."""
    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, dict):
        return ModelCard.from_dict(card, source=f"model card for {source}")
    return ModelCard.from_json(card)
