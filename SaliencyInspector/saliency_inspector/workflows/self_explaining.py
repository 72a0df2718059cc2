"""Self-explaining maps beside post-hoc maps, on phantoms with known answers (issue 25).

For each model and each unseen phantom with lesions, every method's map of every class that has a
lesion is scored against what is known: the class's organ (organ ROC AUC, mass in organ), the
lesions (lesion ROC AUC), the model (fidelity F − F(random map), deletion/insertion with a blurred
replacement) and synthetic readers whose fixations follow the lesions (NCC, sNCC, AUC, sAUC of
:func:`scoring.gaze.compare_with_gaze`; the readers' own inter-observer scores as the baseline).
A case's value is the mean over its lesion classes; the table gives, per (model, method, metric),
the mean over cases with a 95 % percentile-bootstrap interval, and the paired Wilcoxon signed-rank
test of the first method against each other one over the same cases.

Conventions: maps are scored as ReLU(map) (every method here is read that way: the CAMs' and the
gates' importance is ReLU); ROC AUCs are inside the body; the attention map is the same for every
class (the gates do not know the class), so its organ scores measure where the model looks at all.

Run: ``python -m saliency_inspector.workflows.self_explaining --models demo-attention-gated demo
--cases 20 --out self-explaining.json``.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ..errors import InputError

METHODS = ("attention", "hirescam", "gradcam")
METRICS = ("organ_auc", "lesion_auc", "mass_in_organ", "fidelity_gain", "cc", "sncc", "auc", "sauc")
LABELS = {"organ_auc": "organ ROC AUC", "lesion_auc": "lesion ROC AUC", "mass_in_organ": "mass in organ",
          "fidelity_gain": "F − F(random)", "cc": "NCC", "sncc": "sNCC", "auc": "gaze AUC", "sauc": "sAUC"}
GAZE = ("cc", "sncc", "auc", "sauc")
SEED_BASE = 3_000_000  # phantom seeds never used in training (1e6…) or validation (1.5e6…)
READERS = 4
FIXATIONS_PER_READER = 30
SIZE_XYZ = (64, 64, 32)  # the demo models' input size: the CT is used at the model's resolution


def phantom_cases(n: int, seed: int = 0, size=SIZE_XYZ):
    """``n`` unseen phantoms, each with at least one lesion of a demo class (the demo's lesion sets)."""
    from ..models.demo_model import LESION_SCALE, labels_for, random_lesions
    from ..synth.phantom import make_phantom

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(int(n)):
        lesions = random_lesions(rng)
        while not labels_for(lesions).any():
            lesions = random_lesions(rng)
        cases.append(make_phantom(seed=SEED_BASE + 1000 * int(seed) + i, size=tuple(size), lesions=lesions,
                                  lesion_scale=LESION_SCALE))
    return cases


def _masks(case, class_name):
    """(organ, lesion, body) bool arrays on the CT grid for a demo class."""
    from ..synth.cohort import CLASS_ORGANS

    organs = case.organs
    organ = np.zeros(case.ct.shape, bool)
    for name in CLASS_ORGANS[class_name]:
        if name in organs.names:
            organ |= organs.mask(name)
    lesion = np.zeros(case.ct.shape, bool)
    for segment, info in zip(case.lesions, case.info["lesions"]):
        if info["organ"] in CLASS_ORGANS[class_name]:
            lesion |= segment.mask
    return organ, lesion, organs.mask("body")


def readers_for(case, lesion, body, n_readers=READERS, n_fixations=FIXATIONS_PER_READER, seed=0):
    """Synthetic readers: each places ``n_fixations`` fixations ∝ the lesion mask blurred by 5 mm
    (:func:`scoring.fixations.sample_fixations`), with its own seed."""
    from scipy import ndimage

    from ..scoring.fixations import Fixations, sample_fixations

    sigma = [5.0 / s for s in case.ct.spacing[::-1]]
    density = ndimage.gaussian_filter(lesion.astype(np.float32), sigma)
    heat = case.ct.with_array(density)
    return Fixations.concat([sample_fixations(heat, n_fixations, seed=seed * 100 + r, body=body, reader=f"reader{r}")
                             for r in range(n_readers)])


def score_case(classifier, case, methods=METHODS, steps=10, seed=0) -> list:
    """One row per (method, class with a lesion) of ``case``: the metrics of :data:`METRICS`, plus the
    readers' inter-observer NCC/sNCC/AUC/sAUC."""
    from ..cohort.stats import roc_auc
    from ..explainers.explanation import explain
    from ..scoring.gaze import compare_with_gaze
    from .fidelity import map_fidelity, model_input

    names = classifier.card.classes
    present = [c for c in names if _masks(case, c)[1].any()]
    if not present:
        return []
    res = explain(classifier, case.ct, methods=list(methods), classes=present)
    inputs = None
    rows = []
    for class_name in present:
        organ, lesion, body = _masks(case, class_name)
        fixations = readers_for(case, lesion, body, seed=seed)
        for method in methods:
            saliency = res.map(method, class_name)
            s = np.maximum(saliency.array, 0)[body]
            inputs = inputs or model_input(classifier, case.ct, body=body)
            fid = map_fidelity(classifier, case.ct, saliency, class_name, steps=steps, seed=seed, inputs=inputs)
            gaze = compare_with_gaze(saliency, fixations, body=body, seed=seed, n_bootstrap=50)
            total = s.sum()
            rows.append({"method": method, "class": class_name,
                         "organ_auc": roc_auc(organ[body], s), "lesion_auc": roc_auc(lesion[body], s),
                         "mass_in_organ": float(s[organ[body]].sum() / total) if total > 0 else float("nan"),
                         "fidelity_gain": float(fid.curves.F - fid.random.F),
                         **{k: float(gaze.metrics[k]) for k in GAZE},
                         "inter_observer": {k: float(gaze.inter_observer[k]) for k in GAZE}})
    return rows


def compare_self_explaining(classifiers: dict, n_cases=20, methods=METHODS, steps=10, seed=0, progress=None,
                            cases=None) -> dict:
    """Score every model of ``classifiers`` (name → Classifier) on the same ``n_cases`` unseen
    phantoms; returns ``{"rows": per case, "summary": per (model, method, metric), "conditions"}``."""
    say = progress or (lambda _m: None)
    cases = phantom_cases(n_cases, seed) if cases is None else cases
    rows = []
    for model, classifier in classifiers.items():
        wanted = [m for m in methods if m != "attention" or _has_gates(classifier)]
        for i, case in enumerate(cases):
            started = time.time()
            for row in score_case(classifier, case, wanted, steps, seed):
                rows.append({"model": model, "case": i, **row})
            say(f"{model}: case {i + 1}/{len(cases)} ({time.time() - started:.0f} s)")
    return {"rows": rows, "summary": summarise(rows, methods),
            "conditions": {"n_cases": len(cases), "phantom_size_xyz": list(SIZE_XYZ), "seeds_from": SEED_BASE,
                           "readers": READERS, "fixations_per_reader": FIXATIONS_PER_READER,
                           "fidelity_steps": steps, "fidelity_replacement": "blur 10 mm", "map": "ReLU(map)",
                           "interval": "95 % percentile bootstrap over cases (mean over a case's lesion classes)",
                           "test": f"paired Wilcoxon signed-rank, {methods[0]} vs each other method"}}


def _has_gates(classifier) -> bool:
    from ..explainers.attention import has_gates

    return has_gates(classifier)


def summarise(rows, methods=METHODS) -> list:
    """Per (model, method, metric): n, mean and 95 % interval over cases; for every method but the
    first, the paired Wilcoxon signed-rank p of (first − this) over the cases both have; "readers":
    the synthetic readers' inter-observer scores (each reader against the others)."""
    from scipy.stats import wilcoxon

    from ..cohort.stats import bootstrap_mean_ci

    def per_case(model, method, key, inter=False):
        values = {}
        for r in rows:
            if r["model"] == model and r["method"] == method:
                values.setdefault(r["case"], []).append(r["inter_observer"][key] if inter else r[key])
        return {c: _mean(v) for c, v in values.items()}

    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        present = [m for m in methods if any(r["model"] == model and r["method"] == m for r in rows)]
        for method in [*present, "readers"]:
            for key in METRICS:
                if method == "readers" and key not in GAZE:
                    continue
                values = per_case(model, present[0], key, inter=True) if method == "readers" else \
                    per_case(model, method, key)
                x = np.array(list(values.values()))
                low, high = bootstrap_mean_ci(x)
                entry = {"model": model, "method": method, "metric": key, "n": int(np.isfinite(x).sum()),
                         "mean": _mean(x), "ci": [low, high]}
                if method != "readers" and method != methods[0] and present[0] == methods[0]:
                    reference = per_case(model, methods[0], key)
                    diff = np.array([reference[c] - values[c] for c in sorted(set(values) & set(reference))])
                    diff = diff[np.isfinite(diff)]
                    entry["vs_first"] = {"mean_difference": float(diff.mean()) if diff.size else float("nan"),
                                         "p_wilcoxon": float(wilcoxon(diff).pvalue) if np.any(diff) else 1.0}
                out.append(entry)
    return out


def _mean(values) -> float:
    """The mean of the finite values (NaN when there are none, without a warning)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def format_table(summary) -> str:
    """A Markdown table: one line per (model, method), one column per metric: mean [95 % interval],
    with the Wilcoxon p of the first method vs this one."""
    keys = list(dict.fromkeys((e["model"], e["method"]) for e in summary))
    head = "| model | map | " + " | ".join(LABELS[k] for k in METRICS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METRICS))]
    for model, method in keys:
        cells = []
        for key in METRICS:
            e = next((e for e in summary if e["model"] == model and e["method"] == method and e["metric"] == key), None)
            if e is None:
                cells.append("")
                continue
            text = f"{e['mean']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"
            if "vs_first" in e:
                text += f" p={e['vs_first']['p_wilcoxon']:.2g}"
            cells.append(text)
        lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: score shipped or registered models (``--models``) on ``--cases`` phantoms."""
    import argparse

    from ..models import demo_model  # noqa: F401 - registers the demo and self-explaining demo models
    from ..models.loaders import load_classifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["demo-attention-gated", "demo"])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        classifiers = {name: load_classifier(name, device="cpu") for name in args.models}
        result = compare_self_explaining(classifiers, args.cases, steps=args.steps, seed=args.seed,
                                         progress=lambda m: print(m, flush=True))
    except InputError as err:
        print(f"self_explaining: error: {err}")
        return 2
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(format_table(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
