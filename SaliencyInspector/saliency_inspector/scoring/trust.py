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
them in as :class:`Evidence`), so ``scoring`` keeps depending on ``io`` only. What is measured (the
curve, the baseline, the AUPRCs) lives in :mod:`.trust_measures`; its names are re-exported here.
Every result here is a frozen dataclass; ``to_dict()`` gives its JSON.

Every verdict is a measurement: ``n`` independent units, the ``statistic`` judged (its ``estimate``)
and its 95 % bootstrap ``interval`` (:mod:`.statistics`: cases, or the cases behind pairs of cases —
never voxels), PASS or FAIL only when the interval lies wholly on one side of the line, else
INCONCLUSIVE; INCONCLUSIVE too when n is below the criterion's stated minimum (``min_n``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .similarity import Similarity
from .statistics import FAIL, INCONCLUSIVE, PASS, bootstrap_ci, verdict_from_interval
from .trust_measures import (LOCALIZATION_BASELINES, PAIRS_PER_CASE, Auprc, Baseline, Localization,  # noqa: F401
                             RandomizationCurve, auprc_pair, baseline_similarity, choose_pairs, cohort_baseline,
                             localization, location_prior, randomization_curve)

if TYPE_CHECKING:
    from .gaze import GazeResult

NOT_MEASURED = "not measured"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_MEASURED)
MIN_BASELINE_PAIRS = 10  # a baseline mean from fewer pairs of cases (all pairs of 5 cases) is not judged
MIN_CASES = 5  # a per-case statistic (localization over cases) from fewer cases is not judged


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
    statistic: str = ""  # what the interval is of, in words
    estimate: float | None = None  # the statistic's value
    interval: list[float] | None = None  # its 95 % bootstrap interval [low, high]
    n: int | None = None  # independent units behind the interval (cases or pairs of cases)
    min_n: int | None = None  # below this n the verdict is INCONCLUSIVE

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
    repeatability_cases: list[Similarity] = field(default_factory=list)  # the same, on other cases
    reproducibility_cases: list[Similarity] = field(default_factory=list)
    localization: Localization | None = None
    localization_cases: list[Localization] = field(default_factory=list)  # other cases with masks
    localization_why: str | None = None
    mask_name: str | None = None
    gaze: GazeResult | None = None
    emprt: Any = None  # randomization_tests.Emprt: the entropy-ratio randomization test over seeds
    randomization_cases: list[float] = field(default_factory=list)  # last-step SSIM on each cohort case
    data_randomization: Any = None  # randomization_tests.DataRandomization: the shuffled-label model's maps
    data_randomization_why: str | None = None


# ---- the judges: evidence -> verdict, one per criterion ---------------------------------------------
def _against_baseline(key: str, values: list[float], base: Baseline, lower_passes: bool) -> dict[str, Any]:
    """The verdict fields of "mean(values) vs the baseline's mean SSIM": their difference, its
    interval (cases of ``values`` and cases behind the baseline's pairs resampled) and the verdict."""
    d = base.difference(values)
    verdict = verdict_from_interval(d.low, d.high, 0.0, not lower_passes, d.n, MIN_BASELINE_PAIRS)
    return {"verdict": verdict, "estimate": d.value, "interval": [d.low, d.high], "n": d.n,
            "min_n": MIN_BASELINE_PAIRS, "rule": CRITERIA[key].rule,
            "statistic": f"{'mean ' if len(values) > 1 else ''}SSIM − baseline mean SSIM "
                         f"({len(values)} case{'s' if len(values) != 1 else ''}; baseline {base.n_pairs} pairs "
                         f"of {base.n_cases} cases)"}


def _small_baseline_note(base: Baseline) -> str:
    return (f"the baseline rests on {base.n_pairs} pairs of cases (fewer than {MIN_BASELINE_PAIRS}): "
            "INCONCLUSIVE; give more cohort cases") if base.n_pairs < MIN_BASELINE_PAIRS else ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _judge_randomization(evidence: Evidence) -> Verdict:
    curve, base = evidence.curve, evidence.baseline
    c = CRITERIA["randomization"]
    if curve is None or len(curve.blocks) < 2:
        return c.not_measured("no randomization run")
    if base is None:
        return c.not_measured("no baseline (maps of other cases) to compare with")
    last = curve.ssim[-1]
    values = [last] + list(evidence.randomization_cases)  # this CT, then every cohort case's last step
    below = [b for b, s in zip(curve.blocks[1:], curve.ssim[1:]) if s < base.ssim]
    blank = [b for b, z in zip(curve.blocks[1:], curve.blank[1:]) if z]
    note = (f"the randomized map is blank (all zero after {curve.normalisation}) at {len(blank)} of "
            f"{len(curve.blocks) - 1} steps, from {blank[0]}: its SSIM is that of an empty map") if blank else ""
    cases = ("; the randomized SSIM taken as measured on this CT alone (no cohort): the interval covers the "
             "baseline's cases only") if len(values) == 1 else ""
    return Verdict("randomization", value=float(np.mean(values)), baseline=base.ssim,
                   details={"ssim_this_ct": last, "ssim_per_case": values,
                            "spearman_last": curve.spearman[-1], "spearman_baseline": base.spearman,
                            "first_block_below_baseline": below[0] if below else None,
                            "blocks": len(curve.blocks) - 1, "mode": curve.mode, "baseline_source": base.source,
                            "baseline_interval": base.interval.to_dict() if base.interval else None,
                            "baseline_region": base.region,
                            "ssim_box_baseline": base.ssim_box},
                   note=_join(note, _small_baseline_note(base), cases.lstrip("; ")),
                   **_against_baseline("randomization", values, base, lower_passes=True))


def _judge_agreement(key: str) -> Callable[[Evidence], Verdict]:
    def judge(evidence: Evidence) -> Verdict:
        c = CRITERIA[key]
        sim, base = getattr(evidence, key), evidence.baseline
        if sim is None:
            return c.not_measured(getattr(evidence, f"{key}_why") or "needs a second model (--model A --model B)")
        if base is None:
            return c.not_measured("no baseline (maps of other cases) to compare with")
        sims = [sim] + list(getattr(evidence, f"{key}_cases"))
        values = [s.ssim for s in sims]
        return Verdict(key, value=float(np.mean(values)), baseline=base.ssim,
                       details={"ssim_this_ct": sim.ssim, "ssim_per_case": values, "spearman": sim.spearman,
                                "top_k_overlap": sim.top_k_overlap, "top_k_percent": sim.top_k_percent,
                                "pearson": sim.pearson, "ssim_box": sim.ssim_box, "region": sim.region,
                                "models": evidence.models, "baseline_source": base.source,
                                "baseline_interval": base.interval.to_dict() if base.interval else None},
                       note=_join(sim.note, _small_baseline_note(base)),
                       **_against_baseline(key, values, base, lower_passes=False))
    return judge


def _judge_localization(evidence: Evidence) -> Verdict:
    """Per case: the map's average precision minus the strongest baseline's (the baseline with the
    highest mean AP over the cases); bootstrap over cases; PASS when the interval is above 0."""
    c = CRITERIA["localization"]
    loc = evidence.localization
    if loc is None:
        return c.not_measured(evidence.localization_why or "needs masks of the finding (--masks)")
    cases = [loc] + list(evidence.localization_cases)
    names = [k for k in loc.baselines if all(k in other.baselines for other in cases)]
    rivals = {k: float(np.mean([x.baselines[k].average_precision for x in cases])) for k in names}
    best = max(rivals, key=lambda k: rivals[k])
    diffs = [x.map.average_precision - x.baselines[best].average_precision for x in cases]
    ci = bootstrap_ci(diffs)
    verdict = verdict_from_interval(ci.low, ci.high, 0.0, True, ci.n, MIN_CASES)
    value = float(np.mean([x.map.average_precision for x in cases]))
    flags = []
    if "ct_intensity" in rivals and value <= rivals["ct_intensity"]:
        flags.append("worse than the CT intensity itself (a map that ignores the model)")
    if ci.n < MIN_CASES:
        side = "beats" if ci.value > 0 else "does not beat"
        flags.append(f"{ci.n} case{'s' if ci.n != 1 else ''} (fewer than {MIN_CASES}): INCONCLUSIVE; on "
                     f"{'this case' if ci.n == 1 else 'these cases'} the map {side} the {best} baseline")
    return Verdict("localization", value=value, baseline=rivals[best], verdict=verdict, rule=c.rule,
                   details={**loc.to_dict(), "strongest_baseline": best, "mask": evidence.mask_name,
                            "baselines_mean": rivals, "map_per_case": [x.map.average_precision for x in cases]},
                   note="; ".join(flags), statistic=f"mean over cases of AP(map) − AP({best})",
                   estimate=ci.value, interval=[ci.low, ci.high], n=ci.n, min_n=MIN_CASES)


def _judge_gaze(evidence: Evidence) -> Verdict:
    c = CRITERIA["gaze"]
    g = evidence.gaze
    if g is None:
        return c.not_measured("needs readers' fixations (--fixations)")
    value = g.metrics["sauc"]
    lo, hi = (g.intervals.get("sauc") or [float("nan"), float("nan")])[:2]
    base = g.inter_observer["sauc"] if g.inter_observer else 0.5
    # the verdict is the gaze module's: the interval rule plus its minimum of readers and fixations
    return Verdict("gaze", value=value, baseline=base, verdict=g.verdict, rule=c.rule,
                   details={**g.to_dict(), "baseline_kind": "inter-observer sAUC" if g.inter_observer else "chance (0.5)"},
                   note="; ".join([g.verdict_why, *g.notes]), statistic="sAUC (line: 0.5)", estimate=value,
                   interval=[lo, hi], n=len(g.readers), min_n=3)


def _judge_emprt(evidence: Evidence) -> Verdict:
    c = CRITERIA["emprt"]
    e = evidence.emprt
    if e is None:
        return c.not_measured("no randomization run")
    return Verdict("emprt", value=e.mean, baseline=0.0, verdict=e.verdict, rule=c.rule, details=e.to_dict(),
                   note="; ".join([e.why, *e.notes]), statistic="eMPRT, entropy rise (line: 0)", estimate=e.mean,
                   interval=list(e.interval), n=len(e.scores), min_n=3)


def _judge_data_randomization(evidence: Evidence) -> Verdict:
    c = CRITERIA["data_randomization"]
    d = evidence.data_randomization
    if d is None:
        return c.not_measured(evidence.data_randomization_why or
                              "needs a model trained on shuffled labels (--shuffled-model; train-demo --shuffle-labels)")
    return Verdict("data_randomization", value=float(np.mean(d.ssim)), baseline=float(np.mean(d.baseline)),
                   verdict=d.verdict, rule=c.rule, details=d.to_dict(), note=d.why,
                   statistic="mean over cases of SSIM(real, shuffled-label map) − the case's cross-case SSIM",
                   estimate=d.difference, interval=list(d.interval), n=d.n, min_n=5)


CRITERIA = {c.key: c for c in (
    Criterion("localization", "Localization",
              "AUPRC of the map against the finding's mask over the body (average precision; the trapezoid area "
              "of the reference code beside it)",
              "the best of: a uniform map, the CT intensity itself, a location prior (mean mask of other cases)",
              f"per case AP(map) − AP(strongest baseline), bootstrap over cases: PASS when the 95 % interval is above 0, "
              f"FAIL when below, else INCONCLUSIVE (also with fewer than {MIN_CASES} cases); flagged when the CT "
              "intensity does as well",
              _judge_localization),
    Criterion("randomization", "Randomization",
              "SSIM of the map to the trained model's map after re-initialising the blocks from the output down "
              "(cascading; Spearman beside it)",
              "mean SSIM between maps of different cases under the trained model (arrays on the model-input grid, "
              f"inside the union of the two bodies; {PAIRS_PER_CASE} random partners per case where the cohort allows)",
              "SSIM after the last block (mean over this CT and every cohort case) − baseline mean SSIM, bootstrap over "
              "both sides' cases: PASS when the 95 % "
              f"interval is below 0 (the map depends on the weights), FAIL when above, else INCONCLUSIVE (also with "
              f"fewer than {MIN_BASELINE_PAIRS} baseline pairs)",
              _judge_randomization),
    Criterion("emprt", "eMPRT",
              "relative rise of the map's discrete entropy (100 bins) from the trained to the fully randomized "
              "model, one score per randomization seed (Hedström et al. 2023; Quantus EfficientMPRT)",
              "0 (the randomized model's map no more disordered than the trained model's)",
              "passes when the t 95 % interval over seeds lies above 0, fails when below; inconclusive "
              "otherwise or with fewer than 3 seeds",
              _judge_emprt),
    Criterion("data_randomization", "Data randomization",
              "SSIM between the map of the trained model and that of the same recipe trained on shuffled labels "
              "(Adebayo et al. 2018), on this CT and the baseline's cases (arrays on the model-input grid, in the body)",
              "per case: the mean SSIM of its map with the other cases' maps under the trained model",
              "per case SSIM(real, shuffled) − its cross-case SSIM, bootstrap over cases: PASS when the 95 % interval "
              "is below 0 (the map depends on what the labels taught), FAIL when above, else INCONCLUSIVE (also with "
              "fewer than 5 cases); not measured without --shuffled-model",
              _judge_data_randomization),
    Criterion("repeatability", "Repeatability",
              "SSIM between the maps of two trainings of the same architecture (Spearman and top-k overlap beside it)",
              "mean SSIM between maps of different cases under the trained model (arrays on the model-input grid, "
              f"inside the union of the two bodies; {PAIRS_PER_CASE} random partners per case where the cohort allows)",
              "mean SSIM over cases − baseline mean SSIM, bootstrap over cases: PASS when the 95 % interval is above 0 "
              "(the two trainings agree more than maps of different cases do), FAIL when below, else INCONCLUSIVE",
              _judge_agreement("repeatability")),
    Criterion("reproducibility", "Reproducibility",
              "SSIM between the maps of two different architectures (Spearman and top-k overlap beside it)",
              "mean SSIM between maps of different cases under the trained model (arrays on the model-input grid, "
              f"inside the union of the two bodies; {PAIRS_PER_CASE} random partners per case where the cohort allows)",
              "mean SSIM over cases − baseline mean SSIM, bootstrap over cases: PASS when the 95 % interval is above 0 "
              "(the two architectures agree more than maps of different cases do), FAIL when below, else INCONCLUSIVE",
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
        """Rows for a table (terminal, HTML, Slicer): method, then per criterion value, baseline, verdict,
        n and the statistic's interval (``<key>_low``, ``<key>_high``)."""
        out = []
        for method, row in self.rows.items():
            record: dict[str, Any] = {"method": method}
            for key in CRITERIA:
                v = row.get(key) or CRITERIA[key].not_measured("")
                record[f"{key}_value"] = v.value
                record[f"{key}_baseline"] = v.baseline
                record[f"{key}_verdict"] = v.verdict
                record[f"{key}_n"] = v.n
                record[f"{key}_low"], record[f"{key}_high"] = v.interval or (None, None)
            out.append(record)
        return out

    def format(self) -> str:
        """A terminal table: one row per method, one column per criterion, then the rules."""
        def cell(v: Verdict) -> str:
            if v.verdict == NOT_MEASURED:
                return "not measured"
            ci = f" Δ {_fmt(v.estimate)} [{_fmt(v.interval[0])}, {_fmt(v.interval[1])}]" if v.interval else ""
            return f"{_fmt(v.value)} vs {_fmt(v.baseline)}{ci} n={v.n} {v.verdict.upper()}"

        width = max([6] + [len(m) for m in self.rows])
        heads = [CRITERIA[k].name for k in CRITERIA]
        cols = [max(len(h), 50) for h in heads]
        lines = [f"{'method':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, cols))]
        lines.append("-" * len(lines[0]))
        for method, row in self.rows.items():
            cells = [cell(row.get(k) or CRITERIA[k].not_measured("")) for k in CRITERIA]
            lines.append(f"{method:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, cols)))
        lines += [f"  {c.name}: {c.rule} (baseline: {c.baseline})" for c in CRITERIA.values()]
        lines.append("  Δ: the statistic each verdict judges, with its 95 % bootstrap interval; n: independent units")
        for method, how in (self.context.get("importance") or {}).items():
            lines.append(f"  {method}: maps compared and ranked by {how['transform']}; for SSIM {how['for_ssim']}")
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
