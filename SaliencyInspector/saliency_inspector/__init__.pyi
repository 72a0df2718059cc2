# The public surface of saliency_inspector, in one place, typed (PEP 561; `py.typed` ships beside it).
# `Testing/Python/test_public_api.py` checks that these names are exactly `__all__`, that every
# function here has the code's parameters and defaults, and that `mypy --strict` accepts this file.
# Names are imported lazily at run time (see __init__.py); here they are declared.
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from .errors import InputError as InputError
from .explainers.explanation import Explanation as Explanation
from .explainers.registry import Method as Method
from .explainers.settings import Attribution as Attribution
from .explainers.settings import EstimatorSettings as EstimatorSettings
from .io.manifest import Manifest as Manifest
from .io.segments import Segment as Segment
from .io.segments import Segments as Segments
from .io.volume import Volume as Volume
from .models.card import ModelCard as ModelCard
from .models.loaders import Classifier as Classifier
from .models.preprocess import Prepared as Prepared
from .scoring.evaluation import EvaluationTable as EvaluationTable
from .scoring.fidelity import Chance as Chance
from .scoring.fidelity import FidelityResult as FidelityResult
from .scoring.fidelity import RoadResult as RoadResult
from .scoring.fixations import Fixations as Fixations
from .scoring.gaze import GazeResult as GazeResult
from .scoring.similarity import Similarity as Similarity
from .synth.phantom import PhantomCase as PhantomCase
from .workflows.batch import BatchResult as BatchResult
from .workflows.compare import Comparison as Comparison
from .workflows.compare_cohort import CohortComparison as CohortComparison
from .workflows.demo import DemoResult as DemoResult
from .workflows.trust import TrustResult as TrustResult

StrPath = Union[str, "PathLike[str]"]
Progress = Union[Callable[[str], None], None]
MethodSpec = Union[str, Callable[..., Any]]
Masks = Union[Segments, Mapping[str, "np.ndarray[Any, Any]"]]

__version__: str
__all__: list[str] = [
    "Attribution", "BatchResult", "Classifier", "CohortComparison", "Comparison", "DemoResult", "ESTIMATORS",
    "EstimatorSettings",
    "EvaluationTable", "Explanation", "FidelityResult", "Fixations", "GazeResult", "InputError", "METHODS",
    "METRICS", "Manifest", "Method", "ModelCard", "ORIENTATION_CODES", "PhantomCase", "Prepared", "Segment",
    "Segments", "Similarity", "TrustResult", "Volume", "attribute", "batch", "bootstrap_mean_ci",
    "check_same_body", "cohort_statistics", "compare_cohort", "compare_estimators", "compare_maps", "compare_methods",
    "compare_with_gaze", "demo_classifier", "evaluate", "explain", "fidelity", "from_sitk", "get_method",
    "importance_transform", "load_classifier",
    "make_phantom", "mask_loss", "orientation_direction", "phantom_cohort", "preprocess", "read_fixations",
    "read_manifest", "read_segments", "read_volume", "register_estimator", "register_method",
    "render_overlay", "resample_map", "road", "resample_to", "run_demo", "run_shortcut_demo", "run_trust",
    "to_sitk", "train", "volume_from_ijk_to_ras", "write_phantom_case", "write_report", "write_segments",
    "write_volume", "__version__",
]

# ---- registries ---------------------------------------------------------------------------------
METHODS: dict[str, Method]
ESTIMATORS: dict[str, Method]  # deprecated name of METHODS
METRICS: dict[str, Any]
ORIENTATION_CODES: tuple[str, ...]

# ---- io ------------------------------------------------------------------------------------------
def read_volume(path: StrPath, series: str | None = None, note: Progress = None, strict_geometry: bool = False,
                provenance: dict[str, Any] | None = None) -> Volume: ...
def write_volume(volume: Volume, path: StrPath, compression_level: int = -1) -> Path: ...
def resample_to(volume: Volume, reference: Volume, interpolation: str = "linear",
                default_value: float = 0.0) -> Volume: ...
def to_sitk(volume: Volume) -> Any: ...
def from_sitk(image: Any, source: str = "image") -> Volume: ...
def volume_from_ijk_to_ras(array: np.ndarray[Any, Any], ijk_to_ras: Any) -> Volume: ...
def read_segments(path: StrPath, reference: Volume | None = None, names: Any = None,
                  note: Progress = None) -> Segments: ...
def write_segments(segments: Segments, path: StrPath) -> Path: ...
def read_manifest(path: StrPath, classes: Sequence[str] | None = None,
                  require: Sequence[str] = ("ct",)) -> Manifest: ...

# ---- synthetic data ------------------------------------------------------------------------------
def make_phantom(seed: int = 0, size: Sequence[int] | None = None, lesions: Sequence[str] | None = None,
                 oblique: bool = False, lesion_scale: float = 1.0, progress: Progress = None) -> PhantomCase: ...
def write_phantom_case(case: PhantomCase, out_dir: StrPath, progress: Progress = None) -> dict[str, Path]: ...
def phantom_cohort(out_dir: StrPath, n_cases: int, *, seed: int = 0, size: Sequence[int] = (96, 96, 64),
                   prevalence: float = 0.4, distractor_probability: float = 0.2, confounder: str | None = None,
                   q_train: float = 0.95, q_test: float = 0.5, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                   lesion_scale: float = ..., marker_radius_mm: float = 10.0, oblique: bool = False,
                   progress: Progress = None) -> Path: ...

# ---- models --------------------------------------------------------------------------------------
def load_classifier(source: StrPath | Any, card: ModelCard | StrPath | Mapping[str, Any] | None = None,
                    arch: str | Mapping[str, Any] | None = None, device: str = "auto") -> Classifier: ...
def demo_classifier(device: str = "auto") -> Classifier: ...
def preprocess(ct: Volume, spec: Any, device: str = "cpu") -> Prepared: ...
def resample_map(raw: Volume, target: Volume, out: np.ndarray[Any, Any] | None = None) -> Volume: ...
def orientation_direction(code: str) -> np.ndarray[Any, Any]: ...

# ---- methods -------------------------------------------------------------------------------------
def register_method(name: str, function: Callable[..., Any], *, label: str | None = None,
                    family: str = "custom", meaning: str = "signed", importance: str = "signed",
                    description: str = "", cam: bool = False, needs_layer: bool = False,
                    cost: str = "user-defined", replace: bool = False) -> Method: ...
def register_estimator(name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Method: ...
def get_method(method: MethodSpec | Method) -> Method: ...
def explain(classifier: Classifier, ct: Volume, methods: MethodSpec | Sequence[MethodSpec] = ("hirescam", "gradcam"),
            classes: str | int | Sequence[str | int] = "all", layer: str | Sequence[str] | None = None, progress: Progress = None,
            settings: EstimatorSettings | Mapping[str, Any] | None = None) -> Explanation: ...
def attribute(name: MethodSpec, model: Any, x: Any, target: int,
              settings: EstimatorSettings | Mapping[str, Any] | None = None) -> Attribution: ...

# ---- scoring -------------------------------------------------------------------------------------
def evaluate(saliency: Volume, segments: Masks, region: Any = "auto", threshold: str = "topk",
             ct: Volume | None = None, tolerance_mm: float = ..., note: Progress = None,
             device: str = "auto", importance: str = "relu") -> EvaluationTable: ...
def check_same_body(segments: Segments, image: Volume, ct: Volume | None = None, *, allow_mismatch: bool = False,
                    warn: Progress = None, source: str = "masks") -> dict[str, Any]: ...
def fidelity(classifier: Any, x: Any, saliency: Any, target: int, *, steps: int = 20, replacement: str = "blur",
             air_value: float | None = None, body: np.ndarray[Any, Any] | None = None, blur_mm: float = 10.0,
             spacing_zyx: tuple[float, ...] | None = None, impute_noise: float = 0.01, seed: int = 0,
             random_baseline: bool = True, batch_size: int = 8, importance: str = "signed",
             random_maps: int = ..., chance: Chance | None = None) -> FidelityResult: ...
def road(classifier: Any, x: Any, saliency: Any, target: int, *, fractions: Sequence[float] = ...,
         importance: str = "signed", noise: float = 0.01, seed: int = 0, batch_size: int = 8) -> RoadResult: ...
def importance_transform(saliency: Any, importance: str) -> Any: ...
def compare_methods(values: Mapping[str, Mapping[str, Any]], measure: str = "", higher_is_better: bool = True,
                    alpha: float = ..., seed: int = 0) -> list[dict[str, Any]]: ...
def compare_maps(a: Any, b: Any, normalisation: str = "abs", region: np.ndarray[Any, Any] | str | None = None,
                 top_k_percent: float = ..., win_size: int = ...) -> Similarity: ...
def read_fixations(path: StrPath, space: str | None = None) -> Fixations: ...
def compare_with_gaze(saliency: Volume, fixations: Fixations | Volume, body: np.ndarray[Any, Any] | None = None,
                      sigma_mm: float = ..., normalisation: str = "relu", centre_bias: Any = None, seed: int = 0,
                      n_bootstrap: int = ..., negatives: Fixations | None = None) -> GazeResult: ...
def cohort_statistics(metric_rows: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]],
                      metrics: Sequence[str], resamples: int = ..., seed: int = 0,
                      confidence: float = ...) -> list[dict[str, Any]]: ...
def bootstrap_mean_ci(values: Any, resamples: int = ..., seed: int = 0,
                      confidence: float = ...) -> tuple[float, float]: ...

# ---- pictures ------------------------------------------------------------------------------------
def render_overlay(ct: Volume, saliency: Volume, segments: Segments | None, out_png: StrPath,
                   title: str | None = None, *, point: Sequence[float] | None = None, window: Sequence[float] = ...,
                   threshold: float = ..., panel_px: int = 384, with_3d: bool = True, scale: float | None = None,
                   point_label: str | None = None, signed: bool = False, banner: str | None = None) -> Path: ...
def write_report(out_html: StrPath, *, title: str = "SaliencyInspector report", ct: Volume | None = None,
                 case_info: Mapping[str, Any] | None = None, predictions: Sequence[Any] = (),
                 images: Any = None, tables: Any = None, class_segments: Any = None,
                 focus_classes: Sequence[str] = (), roc_images: Sequence[Any] = (), notes: Sequence[str] = (),
                 methods: Sequence[str] | None = None,
                 slice_note: str = "every method of a class is sliced at the same point",
                 class_notes: Mapping[str, str] | None = None) -> Path: ...

# ---- workflows -----------------------------------------------------------------------------------
def run_demo(out_dir: StrPath = "demo-output", device: str = "auto", progress: Progress = None, *,
             size: Sequence[int] | None = None, seed: int = 0, lesions: Sequence[str] | None = None,
             classifier: Classifier | None = None, methods: Sequence[str] = ("hirescam", "gradcam"),
             panel_px: int = 384, shared_scale: bool = False, at: Sequence[float] | None = None) -> DemoResult: ...
def compare_estimators(classifier: Classifier, ct: Volume, masks: Masks, class_name: str | int,
                       methods: MethodSpec | Sequence[MethodSpec] = ("hirescam", "gradcam", "gradient", "smoothgrad", "ig"),
                       segment: str | None = None, settings: EstimatorSettings | Mapping[str, Any] | None = None,
                       steps: int = 20, replacement: str = "blur", blur_mm: float = 10.0, seed: int = 0,
                       progress: Progress = None, allow_mismatch: bool = False, quantus: bool = False,
                       random_maps: int | None = None) -> Comparison: ...
def compare_cohort(classifier: Classifier, manifest: StrPath | Manifest, class_name: str | int,
                   methods: MethodSpec | Sequence[MethodSpec] = ("hirescam", "gradcam", "gradient", "smoothgrad", "ig"),
                   segment: str | None = None, settings: EstimatorSettings | Mapping[str, Any] | None = None,
                   steps: int = 20, replacement: str = "blur", blur_mm: float = 10.0, seed: int = 0,
                   random_maps: int | None = None, progress: Progress = None) -> CohortComparison: ...
def run_trust(ct: Volume, models: Sequence[Classifier],
              methods: MethodSpec | Sequence[MethodSpec] = ("hirescam", "gradcam"),
              class_name: str | None = None, masks: Segments | None = None, segment: str | None = None,
              fixations: StrPath | Fixations | Volume | None = None, fixations_space: str | None = None,
              sigma_mm: float = 10.0, out_dir: StrPath | None = None, mode: str = "cascading", seed: int = 0,
              cohort: Sequence[Volume | tuple[Volume, Segments | None]] | None = None, n_baseline: int = 4,
              layer: str | None = None, normalisation: str | None = None, randomize: bool = True,
              progress: Progress = None, allow_mismatch: bool = False, emprt_seeds: int = 3,
              shuffled_model: Classifier | None = None) -> TrustResult: ...
def batch(manifest: StrPath, model: StrPath | Classifier, out_dir: StrPath, *,
          methods: str | Sequence[str] = ("hirescam", "gradcam"), classes: str | Sequence[str] = "all",
          keep_maps: str = "none", card: StrPath | ModelCard | None = None, arch: str | None = None,
          device: str = "auto", threshold: str = "topk", region: str = "auto", workers: int | None = None,
          ray: str | None = None, executor: Any = None, resamples: int = ..., seed: int = 0,
          progress: bool | Callable[[str], None] = True,
          on_result: Callable[[dict[str, Any]], None] | None = None, dicom_out: bool = False,
          dicomweb: str | None = None, push: bool = False) -> BatchResult: ...
def run_shortcut_demo(out_dir: StrPath = "shortcut-output", device: str = "cpu", progress: Progress = None, *,
                      n_cases: int = 24, seed: int = 1014, models_dir: StrPath | None = None,
                      seeds: int = 5) -> dict[str, Any]: ...

# ---- training ------------------------------------------------------------------------------------
def train(manifest: StrPath, out_dir: StrPath, card: ModelCard | StrPath | Mapping[str, Any], *,
          mask_loss_lambda: float = 0.0, target_layer: str | None = None, dilation_mm: float = 10.0,
          epochs: int = 20, batch_size: int = 8, learning_rate: float = 2e-3, patience: int = 5, seed: int = 0,
          max_degrees: float = 5.0, flip_axes: Sequence[int] = (), class_organs: Mapping[str, Any] | None = None,
          device: str = "cpu", name: str | None = None, export: bool = True, threads: int = 1,
          progress: Progress = None) -> dict[str, Any]: ...
def mask_loss(maps: Any, allowed: Any, labels: Any) -> Any: ...
