"""SaliencyInspector core: CT volumes with true geometry, volumetric classifiers, HiResCAM/Grad-CAM
on the CT's own grid, agreement metrics against organ masks, pictures and reports.

Subpackages by concern: ``io`` (volumes, segmentations), ``models`` (loading, preprocessing, the
demo model), ``explain`` (CAMs, ``explain()``), ``evaluate`` (metrics, ranking), ``view`` (pictures,
report), ``synth`` (phantom), ``training`` (BCE + HiResCAM mask loss).
No Slicer or Qt imports here; ``mrml.py`` is the only module that
touches MRML (scene passed in). Heavy modules (torch, VTK) are imported lazily, on first use of the
names that need them, so Slicer's start-up does not import torch.
"""

import sys
import types
from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access, so `import saliency_inspector` is fast)
_EXPORTS = {
    "InputError": "errors",
    "Volume": "io.volume", "read_volume": "io.volume", "write_volume": "io.volume",
    "resample_to": "io.volume", "to_sitk": "io.volume", "from_sitk": "io.volume",
    "volume_from_ijk_to_ras": "io.volume",
    "Segments": "io.segments", "Segment": "io.segments", "read_segments": "io.segments",
    "write_segments": "io.segments",
    "read_manifest": "io.manifest",
    "phantom_cohort": "synth.cohort",
    "make_phantom": "synth.phantom", "write_phantom_case": "synth.phantom", "PhantomCase": "synth.phantom",
    "ModelCard": "models.loading", "Classifier": "models.loading", "load_classifier": "models.loading",
    "demo_classifier": "models.demo_model",
    "preprocess": "models.preprocess", "resample_map": "models.preprocess",
    "ORIENTATION_CODES": "models.preprocess", "orientation_direction": "models.preprocess",
    "explain": "explain.explanation", "Explanation": "explain.explanation",
    "register_estimator": "explain.attribution", "EstimatorSettings": "explain.attribution",
    "ESTIMATORS": "explain.attribution", "attribute": "explain.attribution",
    "evaluate": "evaluate.metrics", "METRICS": "evaluate.metrics",
    "check_same_body": "evaluate.consistency",
    "fidelity": "evaluate.fidelity",
    "render_overlay": "view.render",
    "write_report": "view.report",
    "run_demo": "demo",
    "compare_estimators": "compare",
    "batch": "cohort.batch", "BatchResult": "cohort.batch",
    "cohort_statistics": "cohort.stats", "bootstrap_mean_ci": "cohort.stats",
    "compare_maps": "evaluate.similarity",
    "read_fixations": "evaluate.gaze", "compare_with_gaze": "evaluate.gaze",
    "run_trust": "trust_card",
    "train": "training.loop", "mask_loss": "training.mask_loss",
    "run_shortcut_demo": "shortcut",
}
# Models shipped with the project register themselves with the generic loader when imported;
# `si.load_classifier("demo")` should work without the caller knowing that.
_BUILTIN_MODELS = ("models.demo_model",)

__all__ = sorted(_EXPORTS) + ["__version__"]


def _load(name):
    module = _EXPORTS[name]
    if module.startswith("models."):
        for builtin in _BUILTIN_MODELS:
            import_module(f".{builtin}", __name__)
    return getattr(import_module(f".{module}", __name__), name)


def __getattr__(name):
    if name in _EXPORTS:
        value = _load(name)
        if name not in _SHARED_NAMES:
            globals()[name] = value
        return value
    raise AttributeError(f"module 'saliency_inspector' has no attribute {name!r}")


# `explain` and `evaluate` are both subpackages and public functions. Importing a subpackage makes
# Python set the package attribute of that name to the subpackage, which would hide the function;
# a property on the package's class wins over that attribute, so `si.explain` stays the function.
# (Import submodules with `from saliency_inspector.explain import cam`, not `import ... as`.)
_SHARED_NAMES = ("explain", "evaluate")


class _Package(types.ModuleType):
    pass


for _name in _SHARED_NAMES:
    setattr(_Package, _name, property(lambda self, _n=_name: _load(_n), lambda self, value: None))
sys.modules[__name__].__class__ = _Package
