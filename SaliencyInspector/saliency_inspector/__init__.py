"""SaliencyInspector core: CT volumes with true geometry, volumetric classifiers, HiResCAM/Grad-CAM
on the CT's own grid, agreement metrics against organ masks, pictures and reports.

No Slicer or Qt imports here; ``mrml.py`` is the only module that touches MRML (scene passed in).
Heavy modules (torch, VTK) are imported lazily, on first use of the names that need them.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access, so `import saliency_inspector` is fast)
_EXPORTS = {
    "InputError": "errors",
    "Volume": "volume", "read_volume": "volume", "write_volume": "volume", "resample_to": "volume",
    "to_sitk": "volume", "from_sitk": "volume", "volume_from_ijk_to_ras": "volume",
    "Segments": "segments", "Segment": "segments", "read_segments": "segments", "write_segments": "segments",
    "make_phantom": "phantom", "write_phantom_case": "phantom", "PhantomCase": "phantom",
    "ModelCard": "models", "Classifier": "models", "load_classifier": "models", "demo_classifier": "models",
    "explain": "explain", "Explanation": "explain",
    "evaluate": "metrics", "METRICS": "metrics",
    "render_overlay": "render",
    "write_report": "report",
    "run_demo": "demo",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saliency_inspector' has no attribute {name!r}")
