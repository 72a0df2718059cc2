"""SaliencyInspector core: CT volumes with true geometry, volumetric classifiers, HiResCAM/Grad-CAM
on the CT's own grid, agreement metrics against organ masks, pictures and reports.

Subpackages by concern: ``io`` (volumes, segmentations), ``models`` (loading, preprocessing, the
demo model), ``explain`` (CAMs, ``explain()``), ``evaluate`` (metrics, ranking), ``view`` (pictures,
report), ``synth`` (phantom), ``training`` (BCE + HiResCAM mask loss).
The public names are listed, typed, in ``__init__.pyi``. No Slicer or Qt imports here; ``mrml.py`` is the only module that
touches MRML (scene passed in). Heavy modules (torch, VTK) are imported lazily, on first use of the
names that need them, so Slicer's start-up does not import torch.
"""

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
    "ModelCard": "models.card", "Classifier": "models.loaders", "load_classifier": "models.loaders",
    "demo_classifier": "models.demo_model",
    "preprocess": "models.preprocess", "resample_map": "models.preprocess",
    "ORIENTATION_CODES": "models.preprocess", "orientation_direction": "models.preprocess",
    "explain": "explainers.explanation", "Explanation": "explainers.explanation",
    "register_method": "explainers.registry", "METHODS": "explainers.registry", "Method": "explainers.registry",
    "get_method": "explainers.registry",
    "register_estimator": "explainers.registry", "ESTIMATORS": "explainers.registry",  # deprecated names
    "EstimatorSettings": "explainers.settings", "attribute": "explainers.attribution",
    "evaluate": "scoring.evaluation", "METRICS": "scoring.metrics",
    "check_same_body": "scoring.consistency",
    "fidelity": "scoring.fidelity", "road": "scoring.fidelity",
    "importance_transform": "scoring.importance", "compare_methods": "scoring.paired_tests",
    "render_overlay": "view.render",
    "write_report": "view.report",
    "run_demo": "workflows.demo",
    "compare_estimators": "workflows.compare",
    "compare_cohort": "workflows.compare_cohort", "CohortComparison": "workflows.compare_cohort",
    "batch": "workflows.batch", "BatchResult": "workflows.batch",
    "cohort_statistics": "cohort.stats", "bootstrap_mean_ci": "cohort.stats",
    "compare_maps": "scoring.similarity",
    "read_fixations": "scoring.fixations", "compare_with_gaze": "scoring.gaze",
    "run_trust": "workflows.trust",
    "train": "training.loop", "mask_loss": "training.mask_loss",
    "run_shortcut_demo": "workflows.shortcut",
    # result types (typed, documented in __init__.pyi)
    "Attribution": "explainers.settings", "Prepared": "models.preprocess", "Manifest": "io.manifest",
    "EvaluationTable": "scoring.evaluation", "FidelityResult": "scoring.fidelity", "Fixations": "scoring.fixations",
    "GazeResult": "scoring.gaze", "Similarity": "scoring.similarity", "Comparison": "workflows.compare",
    "DemoResult": "workflows.demo", "TrustResult": "workflows.trust",
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
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saliency_inspector' has no attribute {name!r}")
