"""What every metric is computed from: one mask's view of the map's shared ranking.

A metric is a pure function of one :class:`MaskScores` (see :mod:`.metrics`); :func:`.evaluation.evaluate`
makes one per segment. An undefined value is NaN with its reason kept in :attr:`MaskScores.reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ranking import MaskCounts, Ranking
from .thresholds import Cut


@dataclass
class MaskScores:
    """Everything a metric needs about one mask: shared ranking + this mask's counts and geometry."""

    ranking: Ranking
    counts: MaskCounts
    cut: Cut | None                  # the map-wide threshold (None for topk/max: they depend on |M|)
    rule: str
    mass_in: float                   # Σ_{M∩V} S⁺
    mass_total: float                # Σ_V S⁺
    pointing_hits: float | None      # fraction of argmax voxels within tolerance of M (None: undefined)
    reasons: list = field(default_factory=list)
    peak_distance: float | None = None  # mm from the argmax voxel(s) to the nearest voxel of M (mean over ties)

    @property
    def positives(self) -> int:
        return self.counts.positives

    @property
    def n(self) -> int:
        return self.ranking.n

    def undefined(self, reason: str) -> float:
        """NaN, with ``reason`` noted for the row's ``note``."""
        if reason not in self.reasons:
            self.reasons.append(reason)
        return float("nan")

    def ranks_defined(self) -> bool:
        """Rank metrics need positives, negatives and a non-constant map."""
        if self.positives == 0:
            self.undefined("empty mask in the region")
            return False
        if self.positives == self.n:
            self.undefined("mask covers the whole region")
            return False
        if self.ranking.n_groups == 1:
            self.undefined("constant map in the region")
            return False
        return True

    def thresholded(self):
        """(kept voxels, kept voxels in M, lowest kept score) under this row's threshold rule."""
        if not hasattr(self, "_thresholded"):
            r, mc = self.ranking, self.counts
            if self.rule == "topk":
                hits, lowest = r.top_k_hits(mc, self.positives)
                self._thresholded = (float(self.positives), hits, lowest)
            elif self.rule == "max":
                _, kept, hits, lowest = r.best_dice(mc)
                self._thresholded = (float(kept), float(hits), lowest)
            else:
                groups = r.kept_groups(self.cut.value)
                lowest = float(r.values[groups - 1]) if groups > 0 else float("nan")
                self._thresholded = (float(r.voxels_in_top_groups(groups)),
                                     float(r.hits_in_top_groups(mc, groups)), lowest)
        return self._thresholded

