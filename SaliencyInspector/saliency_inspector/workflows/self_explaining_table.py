"""The self-explaining comparison's statistics and its README table.

:func:`summarise`: per (model, method, metric) the mean over cases with a 95 % percentile-bootstrap
interval, and the paired Wilcoxon signed-rank test (``scoring.paired_tests.wilcoxon_paired``) of the
model's own map against each other map over the cases both have, Holm-corrected over the maps
compared per (model, metric). "readers": the synthetic readers' inter-observer scores.

:func:`randomization_verdicts`: the trust card's randomization rule (``scoring.trust``,
criterion "randomization") over the cases: per case the SSIM of the trained model's map to the map
after a cascading randomization of every block; the baseline is the mean SSIM between the trained
model's maps of *different* cases with the same lesion class (arrays on the model-input grid,
inside the union of their bodies: ``scoring.trust_measures.cohort_baseline``); the statistic is
mean SSIM − baseline with a bootstrap interval over both sides' cases (``Baseline.difference``).
PASS when the interval is below 0 (the map depends on the weights), FAIL when above, INCONCLUSIVE
when it straddles 0 or rests on fewer than ``scoring.trust.MIN_BASELINE_PAIRS`` pairs.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

LABELS = {"organ_auc": "organ ROC AUC", "lesion_auc": "lesion ROC AUC", "organ_ioa": "organ IoA",
          "lesion_ioa": "lesion IoA", "mass_in_organ": "mass in organ", "fidelity_gain": "F − F(random)",
          "cc": "NCC", "sncc": "sNCC", "auc": "gaze AUC", "sauc": "sAUC"}


def _mean(values) -> float:
    """The mean of the finite values (NaN when there are none, without a warning)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def per_case(rows, model, method, key, inter=False) -> dict:
    """case → the mean over the case's lesion classes of ``key`` (``inter``: the readers' score)."""
    values = {}
    for r in rows:
        if r["model"] == model and r["method"] == method:
            values.setdefault(r["case"], []).append(r["inter_observer"][key] if inter else r[key])
    return {c: _mean(v) for c, v in values.items()}


def summarise(rows, methods) -> list:
    """Per (model, method, metric): n (cases with a finite value), mean and 95 % interval over cases;
    for every map but the model's own (its first of ``methods``), ``vs_reference``: the paired test
    of the reference against it (mean difference reference − this, its interval, Wilcoxon p, the
    Holm-corrected p over this model's and metric's comparisons, the rank-biserial effect)."""
    from ..cohort.stats import bootstrap_mean_ci
    from ..scoring.paired_tests import holm, wilcoxon_paired
    from .self_explaining import GAZE, METRICS

    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        present = [m for m in methods if any(r["model"] == model and r["method"] == m for r in rows)]
        reference = present[0]
        for key in METRICS:
            entries = []
            ref = per_case(rows, model, reference, key)
            for method in [*present, "readers"]:
                if method == "readers" and key not in GAZE:
                    continue
                values = per_case(rows, model, reference, key, inter=True) if method == "readers" else \
                    per_case(rows, model, method, key)
                x = np.array(list(values.values()), np.float64)
                low, high = bootstrap_mean_ci(x)
                entry = {"model": model, "method": method, "metric": key, "n": int(np.isfinite(x).sum()),
                         "mean": _mean(x), "ci": [low, high]}
                if method not in ("readers", reference):
                    cases = sorted(set(values) | set(ref))
                    a = np.array([ref.get(c, np.nan) for c in cases], np.float64)
                    b = np.array([values.get(c, np.nan) for c in cases], np.float64)
                    entry["vs_reference"] = {"reference": reference, **wilcoxon_paired(a, b)}
                entries.append(entry)
            tested = [e for e in entries if "vs_reference" in e]
            for e, p in zip(tested, holm([e["vs_reference"]["p"] for e in tested])):
                e["vs_reference"]["p_holm"] = float(p)
            out += entries
    # one model's entries in method order, each method's metrics in METRICS order
    order = {m: k for k, m in enumerate([*methods, "readers"])}
    return sorted(out, key=lambda e: (list(dict.fromkeys(r["model"] for r in rows)).index(e["model"]),
                                      order[e["method"]], METRICS.index(e["metric"])))


def randomization_verdicts(model, per_case_scores: dict, methods, seed=0) -> list:
    """One verdict per method of ``model`` from its cases' :class:`.self_explaining.CaseScores`
    (case → scores with ``randomization``, ``input_maps`` and ``body_in``); see the module doc."""
    from ..explainers.registry import get_method
    from ..scoring.statistics import INCONCLUSIVE, verdict_from_interval
    from ..scoring.trust import CRITERIA, MIN_BASELINE_PAIRS
    from ..scoring.trust_measures import cohort_baseline

    out = []
    for method in methods:
        cases = [i for i in sorted(per_case_scores) if method in per_case_scores[i].randomization]
        found = [per_case_scores[i].randomization[method] for i in cases]
        values = [f["ssim"] for f in found]
        classes = [f["class"] for f in found]
        blank = sum(f["blank"] for f in found)
        entry = {"model": model, "method": method, "n_cases": len(cases), "ssim_mean": _mean(values),
                 "ssim_per_case": values, "classes": classes, "seeds": [f["seed"] for f in found],
                 "blank_randomized_maps": int(blank), "mode": "cascading, last step (every block redrawn)",
                 "rule": CRITERIA["randomization"].rule, "min_pairs": MIN_BASELINE_PAIRS,
                 "statistic": "mean over cases of SSIM(trained, randomized map) − mean SSIM between the trained "
                              "model's maps of different cases with the same lesion class",
                 "verdict": INCONCLUSIVE, "estimate": float("nan"), "interval": [float("nan"), float("nan")],
                 "n_pairs": 0, "baseline_ssim": float("nan"), "note": ""}
        notes = [f"the randomized map is blank (all zero after ReLU) in {blank} of {len(cases)} cases: its SSIM "
                 "is that of an empty map"] if blank else []
        pairs = [(a, b) for a, b in combinations(range(len(cases)), 2) if classes[a] == classes[b]]
        if not pairs:
            notes.append("no two cases share a lesion class: no baseline of maps of different cases")
        else:
            maps = [per_case_scores[i].input_maps[method] for i in cases]
            bodies = [per_case_scores[i].body_in for i in cases]
            base = cohort_baseline(maps, bodies, get_method(method).importance,
                                   "the trained model's maps of different cases with the same lesion class", pairs,
                                   seed=seed)
            d = base.difference(values)
            entry.update(estimate=d.value, interval=[d.low, d.high], n_pairs=base.n_pairs, baseline_ssim=base.ssim,
                         verdict=verdict_from_interval(d.low, d.high, 0.0, False, d.n, MIN_BASELINE_PAIRS))
            if base.n_pairs < MIN_BASELINE_PAIRS:
                notes.append(f"the baseline rests on {base.n_pairs} pairs of cases (fewer than {MIN_BASELINE_PAIRS}):"
                             " INCONCLUSIVE; run more cases")
        entry["note"] = "; ".join(notes)
        out.append(entry)
    return out


def _cell(e, n_cases) -> str:
    if e is None:
        return ""
    if not np.isfinite(e["mean"]):
        return "undefined"
    text = f"{e['mean']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"
    if e["n"] < n_cases:
        text += f" n={e['n']}"
    test = e.get("vs_reference")
    if test is not None and np.isfinite(test.get("p_holm", np.nan)):
        text += f" p={test['p_holm']:.2g}"
    return text


def randomization_cell(v) -> str:
    """``Δ [95 % interval] VERDICT (n pairs)`` of one randomization verdict."""
    if v is None:
        return ""
    if not np.isfinite(v["estimate"]):
        return f"{v['verdict'].upper()} (no baseline)"
    return (f"{v['estimate']:+.3f} [{v['interval'][0]:+.3f}, {v['interval'][1]:+.3f}] {v['verdict'].upper()} "
            f"({v['n_pairs']} pair{'s' if v['n_pairs'] != 1 else ''})")


def format_table(summary, randomization=(), conditions=None) -> str:
    """The README table: one line per (model, map), one column per metric (mean [95 % interval] and
    the Holm-corrected paired p against the model's own map) and the randomization verdict; a model
    without gates gets an "attention" line saying so; the conventions below it."""
    from .self_explaining import METRICS

    conditions = conditions or {}
    n_cases = int(conditions.get("n_cases") or max([e["n"] for e in summary] or [0]))
    head = "| model | map | " + " | ".join(LABELS[k] for k in METRICS) + " | randomization Δ SSIM |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    gateless = set(conditions.get("models_without_gates") or [])
    for model in dict.fromkeys(e["model"] for e in summary):
        if model in gateless:
            lines.append(f"| {model} | attention | no attention gates: no own map |" + " |" * len(METRICS))
        for method in dict.fromkeys(e["method"] for e in summary if e["model"] == model):
            cells = [_cell(next((e for e in summary if e["model"] == model and e["method"] == method
                                 and e["metric"] == k), None), n_cases) for k in METRICS]
            verdict = next((v for v in randomization if v["model"] == model and v["method"] == method), None)
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + f" | {randomization_cell(verdict)} |")
    lines += ["", *conventions(conditions)]
    return "\n".join(lines)


def conventions(conditions) -> list:
    """The lines under the table: what n, the cells, p and the randomization column are."""
    c = conditions or {}
    return [
        f"n = {c.get('n_cases')} unseen phantoms ({'×'.join(map(str, c.get('phantom_size_xyz', [])))} voxels, seeds "
        f"from {c.get('seeds_from')}), the same for every model; a case's value is the mean over its lesion classes.",
        "Cells: mean [95 % percentile-bootstrap interval over cases]; n= where a measure is undefined in some cases; "
        "p: paired Wilcoxon signed-rank vs the model's own map (attention; HiResCAM for a model without gates), "
        "Holm-corrected over the maps compared per model and measure.",
        f"Maps: {c.get('map', 'ReLU(map)')}; region: {c.get('region', 'the body')}; IoA under the threshold rule "
        f"{c.get('ioa_threshold', 'topk')!r} (topk: the |mask| highest voxels, so IoA equals rank accuracy there).",
        f"Fidelity: F = AUC(LIF) − AUC(MIF), {c.get('fidelity_steps')} steps, {c.get('fidelity_replacement')}, minus "
        f"{c.get('fidelity_chance', 'the random maps’ F')}. Gaze: {c.get('readers')} synthetic readers × "
        f"{c.get('fixations_per_reader')} fixations ∝ {c.get('reader_density')}; readers = inter-observer.",
        f"Randomization: {c.get('randomization')}; Δ = mean SSIM(trained, randomized) − mean SSIM of maps of different "
        "cases with the same lesion class (the trust card's rule): PASS when the 95 % interval is below 0, FAIL "
        "above, INCONCLUSIVE when it straddles 0 or rests on fewer than 10 pairs.",
    ]
