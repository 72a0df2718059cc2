"""Can this map be trusted? The trust criteria, each a function plus what it measures, its baseline
and its pass rule, and the trust card they fill (one row per method, one column per criterion).

After Arun et al. (Radiology: AI 2021, QTIM-Lab/Assessing-Saliency-Maps; ``/work/shared/notes/
trust.md``) a map is trustworthy for localization only if it (1) localizes better than simple
baselines, (2) changes when the model's weights are randomized, (3) is repeatable (same architecture
trained twice) and (4) reproducible (another architecture); plus (5) agreement with readers' gaze
beyond the centre bias (Bigolin Lanfredi et al.).

Like :data:`metrics.METRICS`, :data:`CRITERIA` is the one registry the trust card's JSON keys, the
terminal table, the HTML report and the Slicer table are generated from. This module compares maps
and judges; it never runs a model (``explainers/randomization.py`` makes the maps, the caller passes
them in as :class:`Evidence`), so ``scoring`` keeps depending on ``io`` only. Every result here is a
frozen dataclass; ``to_dict()`` gives its JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .similarity import Similarity, compare_maps

if TYPE_CHECKING:
    from .gaze import GazeResult

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"


@dataclass(frozen=True)
class Verdict:
    """One criterion for one method: value, baseline, verdict and the rule that decided it.
    ``details``: the criterion's supporting numbers, as they appear in the JSON."""

    key: str
    value: float | None = None
    baseline: float | None = None
    verdict: str = NOT_MEASURED
    rule: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, NaN as None."""
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class Criterion:
    """A trust criterion: key (JSON), name, what it measures, its baseline and pass rule in words, and
    ``judge(evidence) -> Verdict``."""

    key: str
    name: str
    measures: str
    baseline: str
    rule: str
    judge: Callable[[Evidence], Verdict] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def not_measured(self, why: str) -> Verdict:
        """This criterion's verdict when it could not be measured, saying why."""
        return Verdict(self.key, rule=self.rule, note=why)


# ---- randomization ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomizationCurve:
    """Similarity to the original map after each randomization step (``blocks[0]`` = "original")."""

    method: str
    mode: str
    blocks: list[str]
    ssim: list[float]
    spearman: list[float]
    maps: list[Volume] = field(default_factory=list, repr=False)  # kept for the slice grid
    normalisation: str = "relu"
    blank: list[bool] = field(default_factory=list)  # per step: the map is all zero after normalisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: method, mode, normalisation and one entry per step."""
        return {"method": self.method, "mode": self.mode, "normalisation": self.normalisation,
                "steps": [{"block": b, "ssim": s, "spearman": r, "blank": z}
                          for b, s, r, z in zip(self.blocks, self.ssim, self.spearman, self.blank)]}


def randomization_curve(maps: Iterable[tuple[str, Any]], method: str, mode: str = "cascading",
                        normalisation: str = "relu", region: np.ndarray | None = None, keep_maps: bool = True,
                        progress: Callable[[str], None] | None = None) -> RandomizationCurve:
    """SSIM and Spearman of each randomized map to the first one. ``maps``: iterable of (block name,
    Volume or object with ``.volume``), the first the trained model's map (as
    :func:`explainers.randomization.randomized_maps` yields them)."""
    blocks: list[str] = []
    ssims: list[float] = []
    spearmans: list[float] = []
    blank: list[bool] = []
    kept: list[Volume] = []
    original = None
    for block, item in maps:
        volume = getattr(item, "volume", item)
        if original is None:
            original = volume
        s = compare_maps(original, volume, normalisation, region)
        blocks.append(block)
        ssims.append(s.ssim)
        spearmans.append(s.spearman)
        raw = np.asarray(volume.array)
        blank.append(not bool((np.abs(raw) if normalisation == "abs" else np.maximum(raw, 0)).any()))
        if keep_maps:
            kept.append(volume)
        if progress and block != "original":
            progress(f"  {method}: randomized {block}: SSIM {s.ssim:.3f}, Spearman {s.spearman:.3f}")
    if original is None:
        raise InputError("no maps to compare")
    return RandomizationCurve(method, mode, blocks, ssims, spearmans, kept, normalisation, blank)


# ---- the baseline: how similar are maps of different cases anyway -------------------------------------
@dataclass(frozen=True)
class Baseline:
    """Mean SSIM and Spearman over pairs of maps of different cases, the pairs' SSIMs and their source."""

    ssim: float
    spearman: float
    n_pairs: int
    ssim_values: list[float]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, fields in order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def baseline_similarity(pairs: Iterable[tuple[Volume, Volume]], normalisation: str = "relu",
                        source: str = "") -> Baseline:
    """Mean SSIM and Spearman over pairs of maps of *different* cases (Volumes; resampled when their
    grids differ), with the number of pairs and where they came from."""
    ssims, rhos = [], []
    for a, b in pairs:
        s = compare_maps(a, b, normalisation)
        ssims.append(s.ssim)
        rhos.append(s.spearman)
    if not ssims:
        raise InputError("no pairs of maps for the baseline")
    return Baseline(float(np.mean(ssims)), float(np.mean(rhos)), len(ssims), [float(v) for v in ssims], source)


# ---- localization ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Auprc:
    """Area under the precision-recall curve two ways (see :func:`auprc_pair`)."""

    average_precision: float
    trapezoid: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"average_precision": self.average_precision, "trapezoid": self.trapezoid}


LOCALIZATION_BASELINES = ("uniform", "ct_intensity", "location_prior")


@dataclass(frozen=True)
class Localization:
    """AUPRC of the map against the finding's mask and of the baselines (None: not computed), and the
    mask's share of the region (``prevalence``)."""

    map: Auprc
    uniform: Auprc
    prevalence: float
    ct_intensity: Auprc | None = None
    location_prior: Auprc | None = None

    @property
    def baselines(self) -> dict[str, Auprc]:
        """The baselines that were computed, in :data:`LOCALIZATION_BASELINES` order."""
        found = {name: getattr(self, name) for name in LOCALIZATION_BASELINES}
        return {name: value for name, value in found.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``map``, each computed baseline, then ``prevalence``."""
        out: dict[str, Any] = {"map": self.map.to_dict()}
        out.update({name: value.to_dict() for name, value in self.baselines.items()})
        out["prevalence"] = self.prevalence
        return out


def auprc_pair(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(average precision, trapezoid area under the PR curve) of ``scores`` for boolean ``labels``.

    Average precision is scikit-learn's ``average_precision_score``; the trapezoid is
    ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve`` as the reference code of
    Arun et al. computes it (it interpolates linearly, so a constant map scores (1 + prevalence) / 2:
    the reason average precision is given beside it). Both from one exact sort (:mod:`.ranking`).
    """
    from .ranking import Ranking

    ranking = Ranking(np.asarray(scores, np.float64).ravel())
    counts = ranking.counts_for(np.flatnonzero(np.asarray(labels, bool).ravel()))
    precision, recall, _ = ranking.pr_curve(counts)
    # the trapezoid rule written out: np.trapezoid is numpy >= 2 only (Slicer 5.8 ships numpy 1.26.4)
    # and np.trapz is deprecated there
    area = np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0)
    return float(ranking.average_precision(counts)), float(abs(area))


def location_prior(target_body: np.ndarray, others: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean of other cases' masks moved onto this case by their body boxes. ``others``: iterable of
    (mask, body) boolean arrays on each case's own grid."""
    from .gaze import align_by_body_box

    acc, n = None, 0
    for mask, body in others:
        moved = align_by_body_box(np.asarray(mask, np.float64), body, target_body, order=1)
        acc = moved if acc is None else acc + moved
        n += 1
    if not n:
        raise InputError("a location prior needs at least one other case with masks")
    return acc / n


def localization(saliency: Volume, mask: np.ndarray, region: np.ndarray, ct: Volume | None = None,
                 prior: np.ndarray | None = None, normalisation: str = "relu") -> Localization:
    """AUPRC (average precision and trapezoid) of the map against ``mask`` over ``region``, next to
    the baselines: a uniform map, the CT intensity itself (a map that ignores the model) and a
    location prior (when given). All arrays on the map's grid."""
    mask, region = np.asarray(mask, bool), np.asarray(region, bool)
    if mask.shape != saliency.shape or region.shape != saliency.shape:
        raise InputError("the mask and region must be on the map's grid")
    labels = mask[region]
    if not labels.any() or labels.all():
        raise InputError("the mask is empty or covers the whole region: AUPRC is undefined")
    raw = np.asarray(saliency.array, np.float64)
    score = np.abs(raw) if normalisation == "abs" else np.maximum(raw, 0)
    ct_auprc = prior_auprc = None
    if ct is not None:
        if not ct.same_grid(saliency):
            raise InputError("the CT must be on the map's grid for the CT-intensity baseline")
        ct_auprc = Auprc(*auprc_pair(np.asarray(ct.array, np.float64)[region], labels))
    if prior is not None:
        prior_auprc = Auprc(*auprc_pair(np.asarray(prior, np.float64)[region], labels))
    return Localization(map=Auprc(*auprc_pair(score[region], labels)),
                        uniform=Auprc(*auprc_pair(np.zeros(labels.size), labels)), prevalence=float(labels.mean()),
                        ct_intensity=ct_auprc, location_prior=prior_auprc)


# ---- what a method's judges read ---------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """What was measured for one method; each criterion's judge reads its part (None: not measured,
    ``*_why`` says why when the caller knows)."""

    baseline: Baseline | None = None
    curve: RandomizationCurve | None = None
    repeatability: Similarity | None = None
    reproducibility: Similarity | None = None
    repeatability_why: str | None = None
    reproducibility_why: str | None = None
    models: list[str] | None = None  # the two models compared for repeatability/reproducibility
    localization: Localization | None = None
    localization_why: str | None = None
    mask_name: str | None = None
    gaze: GazeResult | None = None
    emprt: Any = None  # randomization_tests.Emprt: the entropy-ratio randomization test over seeds


# ---- the judges: evidence -> verdict, one per criterion ---------------------------------------------
def _judge_randomization(evidence: Evidence) -> Verdict:
    curve, base = evidence.curve, evidence.baseline
    c = CRITERIA["randomization"]
    if curve is None or len(curve.blocks) < 2:
        return c.not_measured("no randomization run")
    if base is None:
        return c.not_measured("no baseline (maps of other cases) to compare with")
    last = curve.ssim[-1]
    below = [b for b, s in zip(curve.blocks[1:], curve.ssim[1:]) if s < base.ssim]
    blank = [b for b, z in zip(curve.blocks[1:], curve.blank[1:]) if z]
    note = (f"the randomized map is blank (all zero after {curve.normalisation}) at {len(blank)} of "
            f"{len(curve.blocks) - 1} steps, from {blank[0]}: its SSIM is that of an empty map") if blank else ""
    return Verdict("randomization", value=last, baseline=base.ssim,
                   verdict=PASS if last < base.ssim else FAIL, rule=c.rule,
                   details={"spearman_last": curve.spearman[-1], "spearman_baseline": base.spearman,
                            "first_block_below_baseline": below[0] if below else None,
                            "blocks": len(curve.blocks) - 1, "mode": curve.mode, "baseline_source": base.source},
                   note=note)


def _judge_agreement(key: str) -> Callable[[Evidence], Verdict]:
    def judge(evidence: Evidence) -> Verdict:
        c = CRITERIA[key]
        sim, base = getattr(evidence, key), evidence.baseline
        if sim is None:
            return c.not_measured(getattr(evidence, f"{key}_why") or "needs a second model (--model A --model B)")
        if base is None:
            return c.not_measured("no baseline (maps of other cases) to compare with")
        return Verdict(key, value=sim.ssim, baseline=base.ssim, verdict=PASS if sim.ssim > base.ssim else FAIL,
                       rule=c.rule, details={"spearman": sim.spearman, "top_k_overlap": sim.top_k_overlap,
                                             "top_k_percent": sim.top_k_percent, "pearson": sim.pearson,
                                             "models": evidence.models, "baseline_source": base.source},
                       note=sim.note)
    return judge


def _judge_localization(evidence: Evidence) -> Verdict:
    c = CRITERIA["localization"]
    loc = evidence.localization
    if loc is None:
        return c.not_measured(evidence.localization_why or "needs masks of the finding (--masks)")
    value = loc.map.average_precision
    rivals = {k: v.average_precision for k, v in loc.baselines.items()}
    best = max(rivals, key=lambda k: rivals[k])
    flags = []
    if "ct_intensity" in rivals and value <= rivals["ct_intensity"]:
        flags.append("worse than the CT intensity itself (a map that ignores the model)")
    return Verdict("localization", value=value, baseline=rivals[best], verdict=PASS if value > rivals[best] else FAIL,
                   rule=c.rule, details={**loc.to_dict(), "strongest_baseline": best, "mask": evidence.mask_name},
                   note="; ".join(flags))


def _judge_gaze(evidence: Evidence) -> Verdict:
    c = CRITERIA["gaze"]
    g = evidence.gaze
    if g is None:
        return c.not_measured("needs readers' fixations (--fixations)")
    base = g.inter_observer["sauc"] if g.inter_observer else 0.5
    return Verdict("gaze", value=g.metrics["sauc"], baseline=base, verdict=g.verdict, rule=c.rule,
                   details={**g.to_dict(), "baseline_kind": "inter-observer sAUC" if g.inter_observer else "chance (0.5)"},
                   note="; ".join([g.verdict_why, *g.notes]))


def _judge_emprt(evidence: Evidence) -> Verdict:
    c = CRITERIA["emprt"]
    e = evidence.emprt
    if e is None:
        return c.not_measured("no randomization run")
    return Verdict("emprt", value=e.mean, baseline=0.0, verdict=e.verdict, rule=c.rule, details=e.to_dict(),
                   note="; ".join([e.why, *e.notes]))


CRITERIA = {c.key: c for c in (
    Criterion("localization", "Localization",
              "AUPRC of the map against the finding's mask over the body (average precision; the trapezoid area "
              "of the reference code beside it)",
              "the best of: a uniform map, the CT intensity itself, a location prior (mean mask of other cases)",
              "passes when its average precision beats every baseline; flagged when the CT intensity does as well",
              _judge_localization),
    Criterion("randomization", "Randomization",
              "SSIM of the map to the trained model's map after re-initialising the blocks from the output down "
              "(cascading; Spearman beside it)",
              "mean SSIM between maps of different cases under the trained model",
              "passes when the SSIM after the last block is below the baseline (the map depends on the weights)",
              _judge_randomization),
    Criterion("emprt", "eMPRT",
              "relative rise of the map's discrete entropy (100 bins) from the trained to the fully randomized "
              "model, one score per randomization seed (Hedström et al. 2023; Quantus EfficientMPRT)",
              "0 (the randomized model's map no more disordered than the trained model's)",
              "passes when the t 95 % interval over seeds lies above 0, fails when below; inconclusive "
              "otherwise or with fewer than 3 seeds",
              _judge_emprt),
    Criterion("repeatability", "Repeatability",
              "SSIM between the maps of two trainings of the same architecture (Spearman and top-k overlap beside it)",
              "mean SSIM between maps of different cases under the trained model",
              "passes when the two trainings agree more than maps of different cases do",
              _judge_agreement("repeatability")),
    Criterion("reproducibility", "Reproducibility",
              "SSIM between the maps of two different architectures (Spearman and top-k overlap beside it)",
              "mean SSIM between maps of different cases under the trained model",
              "passes when the two architectures agree more than maps of different cases do",
              _judge_agreement("reproducibility")),
    Criterion("gaze", "Readers' gaze",
              "shuffled AUC of the map at readers' fixations against points drawn from the centre bias "
              "(NSS, CC, KL, SIM, AUC, sNCC beside it)",
              "0.5 (no better than the centre bias); the inter-observer sAUC when several readers are given",
              "passes when sAUC's 95 % interval (bootstrap over readers) lies above 0.5, fails when below; "
              "inconclusive when it straddles 0.5 or with fewer than 3 readers or 10 fixations",
              _judge_gaze),
)}


# ---- the card ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustCard:
    """One row per method: criterion key -> :class:`Verdict`; the randomization curves per method,
    the context of the run (CT, class, models, timings …) and notes."""

    rows: dict[str, dict[str, Verdict]]
    context: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, RandomizationCurve] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the criteria, the verdicts per method, the curves, context and notes."""
        return _jsonable({
            "criteria": {k: {"name": c.name, "measures": c.measures, "baseline": c.baseline, "rule": c.rule}
                         for k, c in CRITERIA.items()},
            "methods": {m: {k: v.to_dict() for k, v in row.items()} for m, row in self.rows.items()},
            "randomization_curves": {m: c.to_dict() for m, c in self.curves.items()},
            "context": self.context, "notes": self.notes})

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self) -> list[dict[str, Any]]:
        """Rows for a table (terminal, HTML, Slicer): method, then per criterion value/baseline/verdict."""
        out = []
        for method, row in self.rows.items():
            record: dict[str, Any] = {"method": method}
            for key in CRITERIA:
                v = row.get(key) or CRITERIA[key].not_measured("")
                record[f"{key}_value"] = v.value
                record[f"{key}_baseline"] = v.baseline
                record[f"{key}_verdict"] = v.verdict
            out.append(record)
        return out

    def format(self) -> str:
        """A terminal table: one row per method, one column per criterion, then the rules."""
        def cell(v: Verdict) -> str:
            if v.verdict == NOT_MEASURED:
                return "not measured"
            return f"{_fmt(v.value)} vs {_fmt(v.baseline)} {v.verdict.upper()}"

        width = max([6] + [len(m) for m in self.rows])
        heads = [CRITERIA[k].name for k in CRITERIA]
        cols = [max(len(h), 22) for h in heads]
        lines = [f"{'method':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, cols))]
        lines.append("-" * len(lines[0]))
        for method, row in self.rows.items():
            cells = [cell(row.get(k) or CRITERIA[k].not_measured("")) for k in CRITERIA]
            lines.append(f"{method:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, cols)))
        lines += [f"  {c.name}: {c.rule} (baseline: {c.baseline})" for c in CRITERIA.values()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def judge_all(evidence_by_method: dict[str, Evidence]) -> dict[str, dict[str, Verdict]]:
    """{method: {criterion: Verdict}} from {method: :class:`Evidence`}."""
    return {m: {k: c.judge(ev) for k, c in CRITERIA.items()} for m, ev in evidence_by_method.items()}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return obj
