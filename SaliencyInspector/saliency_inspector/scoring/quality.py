"""The registry of map-quality metrics by family (Quantus's families, in 3D): one entry per metric.

Beside :data:`.metrics.METRICS` (agreement with a mask, every row of ``evaluate``), this registry
describes the metrics Quantus groups into faithfulness, robustness, localisation, complexity,
randomisation and axiomatic families, plus Captum's two robustness figures: key (JSON/CSV column),
label, family, direction, whether it calls the model (those cost forwards: opt-in in ``compare``,
``--quantus``) and the Quantus/Captum file it follows. Reports, tables and the Slicer module read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QualityMetric:
    """One metric of a family: key, label, family, higher-is-better, needs-model, per (segment or map),
    its source (the peer's file it was read from) and a one-line meaning."""

    key: str
    label: str
    family: str
    higher_is_better: bool
    needs_model: bool
    per: str  # "segment": one value per mask (evaluate's rows); "map": one per map
    source: str
    meaning: str


QUALITY_METRICS: dict = {m.key: m for m in [
    # localisation (mask-only, per segment; evaluate)
    QualityMetric("top_k_intersection", "Top-k intersection", "localisation", True, False, "segment",
                  "quantus/metrics/localisation/top_k_intersection.py", "share of the 1000 highest voxels in the mask"),
    QualityMetric("relevance_rank_accuracy", "Relevance rank accuracy", "localisation", True, False, "segment",
                  "quantus/metrics/localisation/relevance_rank_accuracy.py", "share of the |M| highest voxels in the mask"),
    QualityMetric("relevance_mass_accuracy", "Relevance mass accuracy", "localisation", True, False, "segment",
                  "quantus/metrics/localisation/relevance_mass_accuracy.py", "share of the map's mass in the mask"),
    # complexity (mask-only, per map; evaluate)
    QualityMetric("sparseness", "Sparseness (Gini)", "complexity", True, False, "map",
                  "quantus/metrics/complexity/sparseness.py", "Gini index of the map in the region (1 = one voxel)"),
    QualityMetric("complexity", "Complexity (entropy)", "complexity", False, False, "map",
                  "quantus/metrics/complexity/complexity.py", "entropy of the map's shares in nats (ln n = uniform)"),
    # faithfulness (model calls; compare --quantus)
    QualityMetric("faithfulness_correlation", "Faithfulness correlation", "faithfulness", True, True, "map",
                  "quantus/metrics/faithfulness/faithfulness_correlation.py",
                  "Pearson r of a random subset's mass vs the score drop when it is removed"),
    QualityMetric("monotonicity", "Monotonicity (share)", "faithfulness", True, True, "map",
                  "quantus/metrics/faithfulness/monotonicity.py",
                  "share of steps where adding voxels back (least important first) did not lower the score"),
    QualityMetric("region_perturbation_aopc", "Region perturbation AOPC", "faithfulness", True, True, "map",
                  "quantus/metrics/faithfulness/region_perturbation.py", "mean score drop as top cubes are removed"),
    QualityMetric("irof", "IROF", "faithfulness", True, True, "map", "quantus/metrics/faithfulness/irof.py",
                  "area over the score curve as supervoxels are removed by mean attribution"),
    QualityMetric("selectivity_auc", "Selectivity AUC", "faithfulness", False, True, "map",
                  "quantus/metrics/faithfulness/selectivity.py", "area under the score as every cube is removed in order"),
    # robustness
    QualityMetric("max_sensitivity", "Max-sensitivity", "robustness", False, True, "map",
                  "quantus/metrics/robustness/max_sensitivity.py", "largest relative map change under small noise"),
    QualityMetric("avg_sensitivity", "Avg-sensitivity", "robustness", False, True, "map",
                  "quantus/metrics/robustness/avg_sensitivity.py", "mean relative map change under small noise"),
    QualityMetric("local_lipschitz", "Local Lipschitz", "robustness", False, True, "map",
                  "quantus/metrics/robustness/local_lipschitz_estimate.py", "largest map change per input change"),
    QualityMetric("captum_infidelity", "Infidelity (Captum)", "robustness", False, True, "map",
                  "captum/metrics/_core/infidelity.py", "squared error of the map's linear prediction of noise effects"),
    QualityMetric("captum_sensitivity_max", "Sensitivity max (Captum)", "robustness", False, True, "map",
                  "captum/metrics/_core/sensitivity.py", "largest relative map change under uniform noise"),
    # randomisation, axiomatic
    QualityMetric("random_logit", "Random logit (SSIM)", "randomisation", False, True, "map",
                  "quantus/metrics/randomisation/random_logit.py", "SSIM of the map and another class's map"),
    QualityMetric("completeness_gap", "Completeness gap", "axiomatic", False, True, "map",
                  "quantus/metrics/axiomatic/completeness.py", "|Σ map − (f(x) − f(baseline))| / |f(x) − f(baseline)|"),
]}

SEGMENT_KEYS = tuple(k for k, m in QUALITY_METRICS.items() if m.per == "segment")
MAP_KEYS = tuple(k for k, m in QUALITY_METRICS.items() if m.per == "map" and not m.needs_model)
MODEL_KEYS = tuple(k for k, m in QUALITY_METRICS.items() if m.needs_model)


def quality_metric(key: str) -> QualityMetric:
    """The registry entry of ``key`` (KeyError with the known keys otherwise)."""
    if key not in QUALITY_METRICS:
        raise KeyError(f"{key!r} is not a quality metric; known: {', '.join(QUALITY_METRICS)}")
    return QUALITY_METRICS[key]
