"""The metric registry: agreement of a saliency map with organ masks (Dice, ROC AUC, AUPRC, IoA,
mass, pointing game, peak distance, rank accuracy), each with its description.

Definitions (``/work/shared/notes/saliency.md``): S is the display map S⁺ = ReLU(raw map), M a
mask, V the evaluation region (default: the body, not the whole field of view); every metric is
computed over V only (M means M ∩ V). The scores of V are ranked once (:mod:`.ranking`) and that
ranking is shared by every mask, so many organs cost little more than one.

Each metric is a pure function of one :class:`~.mask_scores.MaskScores` (the map's ranking and one
mask's counts; :mod:`.overlap`, :mod:`.localisation`) plus its description in :data:`METRICS` (key,
name, one-line meaning, range, higher-is-better, unit, terminal column head); the terminal table,
the JSON/CSV keys, the HTML report and the Slicer table all come from that registry. An undefined
value (empty mask, mask covering the whole region, constant map) is NaN with its reason in the row's
``note``, never a crash and never a silent 0.5. :func:`.evaluation.evaluate` computes them all.

Tie rules (stated, since ReLU makes many equal zeros): ROC AUC gives ties their average rank; the
``topk`` threshold, relevance rank accuracy and the pointing game share a tie group at the cut as a
uniformly random tie-break would on average (so no voxel order is favoured and a constant map does
not score by accident).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .localisation import POINTING_TOLERANCE_MM, peak_distance_mm, pointing_game
from .overlap import auprc, auprc_chance, dice, ioa, mass_baseline, mass_in_mask, rank_accuracy, roc_auc


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: key (JSON/CSV column), display name, one-line meaning, range, direction,
    function, the key of its chance level (if any), its unit ("" for a ratio) and the short head of
    its column in the terminal table (default: the name)."""

    key: str
    name: str
    meaning: str
    range: str
    higher_is_better: bool
    function: Callable = field(repr=False, compare=False, default=None)
    baseline_key: str | None = None  # the column holding its chance level, if any
    unit: str = ""
    short: str = ""

    @property
    def head(self) -> str:
        """The terminal table's column head: short name and unit (e.g. "Peak mm")."""
        return " ".join(part for part in (self.short or self.name, self.unit) if part)


METRICS: dict = {info.key: info for info in [
    MetricInfo("dice", "Dice", "overlap of the thresholded map with the mask (threshold rule in the row)",
               "0..1", True, dice),
    MetricInfo("roc_auc", "ROC AUC", "probability that a mask voxel outranks a non-mask voxel (0.5 = chance)",
               "0..1", True, roc_auc),
    MetricInfo("auprc", "AUPRC", "average precision of ranking mask voxels first; compare with its chance level",
               "0..1", True, auprc, baseline_key="auprc_chance"),
    MetricInfo("auprc_chance", "AUPRC chance", "AUPRC of an uninformative map: mask share of the region |M|/|V|",
               "0..1", True, auprc_chance, short="chance"),
    MetricInfo("ioa", "IoA", "share of the thresholded map inside the mask (Draelos's OrganIOU; a precision)",
               "0..1", True, ioa),
    MetricInfo("mass_in_mask", "Mass in mask",
               "share of the map's positive mass inside the mask (energy pointing game)",
               "0..1", True, mass_in_mask, baseline_key="mass_baseline", short="Mass"),
    MetricInfo("mass_baseline", "Mass baseline", "mass in mask of a uniform map: |M|/|V|",
               "0..1", True, mass_baseline, short="uniform"),
    MetricInfo("pointing_game", "Pointing game",
               f"1 if the map's maximum lies within {POINTING_TOLERANCE_MM:g} mm of the mask "
               "(ties for the maximum: the fraction that hit)", "0..1", True, pointing_game, short="Pointing"),
    MetricInfo("peak_distance_mm", "Peak distance", "distance from the map's maximum to the nearest mask "
               "voxel in mm (0 inside): how far a pointing-game miss is", "0.. mm", False, peak_distance_mm,
               unit="mm", short="Peak"),
    MetricInfo("rank_accuracy", "Rank accuracy", "fraction of the |M| highest voxels inside the mask",
               "0..1", True, rank_accuracy, short="RankAcc"),
]}

# Columns that are reference levels for another metric (what an uninformative map scores), not scores.
REFERENCE_KEYS = {info.baseline_key for info in METRICS.values() if info.baseline_key}

# The scores shown in tables (terminal, HTML report), in registry order; each shows its reference level.
TABLE_KEYS = tuple(key for key in METRICS if key not in REFERENCE_KEYS)

# Columns of every row, in order (metrics from the registry, then context).
ROW_KEYS = (["segment"] + list(METRICS) +
            ["threshold", "threshold_value", "region", "importance", "mask_voxels", "pointing_tolerance_mm", "note"])


def column_head(key: str) -> str:
    """The terminal table's head of a metric's column, with its reference level's short name in
    brackets when it has one (e.g. "AUPRC (chance)")."""
    info = METRICS[key]
    return f"{info.head} ({METRICS[info.baseline_key].head})" if info.baseline_key else info.head
