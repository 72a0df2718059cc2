"""What an estimator is given and what it gives back: :class:`EstimatorSettings` in, :class:`Attribution` out.

Every method of the registry (:mod:`.registry`) is a function ``(model, x, target, settings)``;
the settings are one frozen dataclass whose fields carry their own command-line option and help
(``metadata``), so the CLI's per-method options are generated from here, not restated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import InputError

BASELINES = ("air", "min", "blur")


def _option(option: str, help: str, metavar: str | None = None) -> dict:
    """Field metadata: the CLI option that sets the field (fields sharing one option are its
    ``nargs`` values, in field order) and its help."""
    return {"option": option, "help": help, "metavar": metavar}


@dataclass(frozen=True)
class EstimatorSettings:
    """Knobs of the estimators, plus what :func:`explain` knows of the input grid.

    ``noise``: SmoothGrad σ as a fraction of the input's range (max − min); ``samples``: noisy
    samples; ``steps``: IG steps (Gauss–Legendre, Captum's default rule); ``baseline``: ``air``
    (−1000 HU through the card's window), ``min`` (the windowed input's minimum) or ``blur`` (the
    input blurred with σ = ``blur_mm``); ``occlusion_window_mm``/``occlusion_stride_mm``: the 3D
    window and stride (mm, converted to voxels on the input grid); ``memory_gb``: the budget one
    batch of steps/samples must fit; ``seed``: noise seed; ``layer``: target layer for CAMs and
    Guided Grad-CAM (a list: CAM maps of several layers combined); ``eigen_smooth``/``aug_smooth``,
    ``fem_k``, ``kpca_kernel``/``kpca_gamma``, ``finer_alpha``/``finer_compare``: the CAM family's
    knobs (:mod:`.cam_family`); ``xrai_scales``: SLIC supervoxel counts; ``xrai_dilation``: voxels.
    Filled by :func:`explain` from the model card and the input grid: ``spacing_zyx`` (mm, tensor
    order), ``air_value`` (−1000 HU in input units), ``body`` (bool array on the input grid),
    ``attention_gates`` (the card's gate module paths).
    """

    noise: float = field(default=0.15,
                         metadata=_option("--noise", "SmoothGrad sigma as a fraction of the input range"))
    samples: int = field(default=25, metadata=_option("--samples", "SmoothGrad/VarGrad noisy samples"))
    steps: int = field(default=32, metadata=_option("--steps", "Integrated Gradients steps"))
    baseline: str = field(default="air",
                          metadata=_option("--baseline", "IG/occlusion baseline: air (-1000 HU), min, blur"))
    blur_mm: float = 10.0
    occlusion_window_mm: float = field(
        default=50.0, metadata=_option("--occlusion-mm", "occlusion window and stride in mm", "WINDOW"))
    occlusion_stride_mm: float = field(
        default=50.0, metadata=_option("--occlusion-mm", "occlusion window and stride in mm", "STRIDE"))
    memory_gb: float = field(default=2.0, metadata=_option("--memory-gb", "memory budget for one batch of steps/samples"))
    seed: int = field(default=0, metadata=_option("--seed", "noise seed"))
    layer: str | None = None  # or a list of names: their CAM maps combined (cam.combine_layers)
    eigen_smooth: bool = field(default=False, metadata=_option(
        "--eigen-smooth", "CAMs: first principal component of the channel terms instead of their sum"))
    aug_smooth: bool = field(default=False, metadata=_option(
        "--aug-smooth", "CAMs: average over flips/90° rotations of the voxel grid, each undone on the map"))
    fem_k: float = field(default=2.0, metadata=_option("--fem-k", "FEM: k of the mean + k·std threshold"))
    kpca_kernel: str = field(default="sigmoid", metadata=_option(
        "--kpca-kernel", "KPCA-CAM kernel: sigmoid, rbf, poly, linear, cosine"))
    kpca_gamma: float | None = None
    finer_alpha: float = field(default=1.0, metadata=_option("--finer-alpha", "Finer-CAM comparison strength"))
    finer_compare: int = field(default=3, metadata=_option("--finer-compare", "Finer-CAM: classes compared"))
    xrai_scales: tuple = (16, 32, 64, 128)
    xrai_dilation: int = 1
    spacing_zyx: tuple | None = None
    air_value: float | None = None
    body: object = field(default=None, repr=False, compare=False)
    progress: object = field(default=None, repr=False, compare=False)  # one-line messages (long estimators)
    attention_gates: tuple | None = None  # the card's gate module paths (the `attention` method)

    def check(self) -> "EstimatorSettings":
        """InputError for settings that cannot work; returns self."""
        if not self.noise >= 0:
            raise InputError(f"noise must be >= 0 (a fraction of the input range), got {self.noise}")
        for name in ("samples", "steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.baseline not in BASELINES:
            raise InputError(f"baseline {self.baseline!r} is not one of {', '.join(BASELINES)}")
        if not self.memory_gb > 0:
            raise InputError(f"memory budget must be positive (GB), got {self.memory_gb}")
        if not (self.occlusion_window_mm > 0 and self.occlusion_stride_mm > 0 and self.blur_mm > 0):
            raise InputError("occlusion window/stride and blur sigma must be positive millimetres")
        return self


def settings_from(options) -> EstimatorSettings:
    """EstimatorSettings from None, a dict of field names, or EstimatorSettings."""
    if options is None:
        return EstimatorSettings()
    if isinstance(options, EstimatorSettings):
        return options.check()
    known = {f for f in EstimatorSettings.__dataclass_fields__}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown estimator setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return EstimatorSettings(**dict(options)).check()


def hu_to_input(spec, hu: float) -> float:
    """The input value of a HU value under a card's input spec (window, then optional mean/std)."""
    lo, hi = spec.window
    value = min(1.0, max(0.0, (float(hu) - lo) / (hi - lo)))
    if getattr(spec, "mean", None) is not None or getattr(spec, "std", None) is not None:
        value = (value - (spec.mean or 0.0)) / (spec.std or 1.0)
    return value


def for_input(settings: EstimatorSettings, prepared, card=None, layer=None) -> EstimatorSettings:
    """``settings`` completed from a prepared input (its grid's voxel size in tensor order), the
    model card (the input value of air) and the explain layer."""
    spacing = tuple(float(v) for v in prepared.grid.spacing)
    spacing = spacing[::-1] if getattr(prepared, "axes", "zyx") == "zyx" else spacing
    air = settings.air_value
    if air is None and card is not None:
        air = hu_to_input(card.input, -1000.0)
    gates = settings.attention_gates or getattr(card, "attention_gates", None)
    return replace(settings, spacing_zyx=settings.spacing_zyx or spacing, air_value=air,
                   layer=settings.layer or layer or getattr(card, "target_layer", None),
                   attention_gates=tuple(gates) if gates else None)


@dataclass
class Attribution:
    """One method's raw map for one class: ``map`` (spatial dims, tensor order, on the input or
    feature grid), the seconds it took, what it reports (e.g. IG's completeness error) and, when
    the method's own pass made them, the logits (B, K) (CAMs: so no second forward is needed)."""

    map: object
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    logits: object = field(default=None, repr=False)
