"""The shortcut demonstration: a model learns a skin marker instead of the lesion; the mask loss
trains it away.

Two small models of the demo architecture are trained on a phantom cohort whose ``liver`` label
is confounded by a bright skin marker (present in 95 % of liver-positive and 5 % of liver-negative
training cases): one with plain BCE, one with BCE + λ · Draelos's HiResCAM mask loss. On the test
split, where the marker is independent of the label (q = 0.5), :func:`shortcut_metrics` reports
per-class ROC AUC, the HiResCAM mass near the marker vs in the liver, and Draelos's IoA
(OrganIOU) at a threshold chosen on the validation split. The two models ship in
``Resources/Models`` (``shortcut-plain``, ``shortcut-maskloss``) so ``demo --shortcut`` needs no
training; :func:`train_shortcut_models` reproduces them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import format_cell

CONFOUNDED = "liver"
CLASSES = ["lung_left", "lung_right", "liver", "kidney"]
MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
NAMES = {"plain": "shortcut-plain", "maskloss": "shortcut-maskloss"}
COHORT_SIZE = (64, 64, 32)  # CT voxels (x, y, z) of every cohort case: ~6 x 6 x 9 mm
MARKER_NEIGHBOURHOOD_MM = 15.0  # the marker (1 cm radius) is smaller than a feature cell: count mass near it
IOA_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)  # candidates on the map scaled to its maximum
# training recipe of the shipped pair (`train_shortcut_models` defaults)
TRAINING = {"n_cases": 200, "cohort_seed": 14, "epochs": 30, "batch_size": 8, "learning_rate": 3e-3,
            "patience": 8, "dilation_mm": 10.0, "max_degrees": 5.0, "seed": 0}


def shortcut_card(name="shortcut") -> dict:
    """The small models' card: the demo architecture at a 16×32×32 input (feature grid 4×8×8)."""
    size = [16, 32, 32]
    return {"name": name, "classes": list(CLASSES), "multilabel": True,
            "input": {"size": size, "spacing": None, "window": [-200.0, 300.0], "channels": 1},
            "target_layer": "lesion_map",
            "architecture": {"name": "demo", "kwargs": {"in_channels": 1, "num_classes": len(CLASSES),
                                                        "channels": [8, 16, 16], "input_size": size,
                                                        "map_channels": 8}}}


def shortcut_cohort(out_dir, n_cases=200, seed=14, fractions=(0.6, 0.2, 0.2), progress=None) -> Path:
    """A liver-confounded phantom cohort (q 0.95 train/val, 0.5 test); returns the manifest path."""
    from ..synth.cohort import phantom_cohort

    return phantom_cohort(out_dir, n_cases, seed=seed, size=COHORT_SIZE, confounder=CONFOUNDED,
                          q_train=0.95, q_test=0.5, fractions=fractions, progress=progress)


def train_shortcut_models(manifest, out_dir=None, *, lam=1.0 / 3.0, progress=None, **overrides) -> dict:
    """Train the pair (λ = 0 and λ = ``lam``) on ``manifest``; returns {"plain": result, "maskloss": result}."""
    from ..training.loop import train

    out_dir = MODELS_DIR if out_dir is None else Path(out_dir)
    recipe = {k: v for k, v in TRAINING.items() if k not in ("n_cases", "cohort_seed")}
    recipe.update(overrides)
    results = {}
    for key, value in (("plain", 0.0), ("maskloss", lam)):
        say = progress or (lambda message: None)
        say(f"training {NAMES[key]} (mask loss λ = {value:.3g})")
        results[key] = train(manifest, out_dir, shortcut_card(NAMES[key]), mask_loss_lambda=value,
                             name=NAMES[key], progress=progress, **recipe)
    return results


# ---- measuring ----------------------------------------------------------------------------------
def _case_maps(classifier, case, class_index, names):
    """(probabilities, HiResCAM of the confounded class on the CT grid, CT, organ mask, marker mask)."""
    from ..explainers.explanation import explain
    from ..io.segments import read_segments
    from ..io.volume import read_volume
    from ..synth.cohort import CLASS_ORGANS

    ct = read_volume(case.ct)
    result = explain(classifier, ct, methods=("hirescam",), classes="all")
    organs = read_segments(case.paths["organs"], reference=ct)
    organ = np.zeros(ct.shape, bool)
    for o in CLASS_ORGANS[names[class_index]]:
        organ |= organs.mask(o)
    marker = None
    if case.paths.get("marker"):
        marker = read_segments(case.paths["marker"], reference=ct).mask("marker")
    return result.probabilities, result.map("hirescam", names[class_index]), ct, organ, marker


def ioa(saliency: np.ndarray, organ: np.ndarray, threshold: float) -> float:
    """Draelos's OrganIOU over the whole field of view: the metric registry's IoA
    (:func:`saliency_inspector.scoring.overlap.ioa`) under the rule ``fixed:threshold``, i.e. of the
    voxels whose ReLU(map)/max is above ``threshold``, the fraction inside ``organ`` (a precision).
    NaN when undefined (an all-zero or constant map, an empty organ) — the reference code scores an
    all-zero map 0; we leave it out and count it instead."""
    from ..scoring.evaluation import score_masks

    return score_masks(saliency, {"organ": organ}, region=None, threshold=f"fixed:{threshold}").row("organ")["ioa"]


def marker_region(cases, ct, radius_mm=MARKER_NEIGHBOURHOOD_MM) -> np.ndarray:
    """Where the marker sits in this cohort: the union of the cases' marker masks (on ``ct``'s grid),
    dilated by ``radius_mm``. The marker has a fixed body position, so this is also where it would
    be in a case without one."""
    from ..io.segments import read_segments
    from ..training.mask_loss import dilate_mm

    region = np.zeros(ct.shape, bool)
    for case in cases:
        if case.paths.get("marker"):
            region |= read_segments(case.paths["marker"], reference=ct).mask("marker")
    return dilate_mm(region, ct.spacing, radius_mm)


def shortcut_metrics(classifier, manifest, progress=None) -> dict:
    """Test-split numbers of one model for the confounded class: ROC AUC per class; where its
    HiResCAM evidence lies — |map| mass near the marker's position (all test cases) and in the liver
    (liver-positive cases), each as Σ_region |map| / Σ_field of view |map|; and Draelos's IoA of the
    liver at the threshold that maximises it on the validation split (liver-positive cases).

    |map|, not ReLU(map): a model can encode the marker as *negative* evidence when it is absent
    (the plain model here does), which a positive-only mass would not see.
    """
    from sklearn.metrics import roc_auc_score

    from ..io.manifest import read_manifest

    data = read_manifest(manifest, classes=CLASSES, require=("ct", "organs"))
    names = list(classifier.class_names)
    k = names.index(CONFOUNDED)
    say = progress or (lambda message: None)

    val_ioa = {float(t): [] for t in IOA_THRESHOLDS}
    for case in data.split("val"):
        if case.labels[CONFOUNDED] != 1:
            continue
        _, sal, _, organ, _ = _case_maps(classifier, case, k, names)
        for t in val_ioa:
            val_ioa[t].append(ioa(sal.array, organ, t))
    means = {t: float(np.nanmean(v)) for t, v in val_ioa.items() if np.isfinite(v).any()}
    threshold = max(means, key=means.get) if means else 0.5

    probs, truth, marker_mass, organ_mass, ioas, empty, region = [], [], [], [], [], 0, None
    fractions = []  # the liver's share of the field of view: the IoA and mass of a map that marks everything
    test = data.split("test")
    for n, case in enumerate(test):
        p, sal, ct, organ, _ = _case_maps(classifier, case, k, names)
        if region is None or region.shape != ct.shape:
            region = marker_region(data.cases, ct)
        probs.append(p)
        truth.append([case.labels[c] for c in CLASSES])
        evidence = np.abs(sal.array).astype(np.float64)
        total = evidence.sum()
        if total > 0:
            marker_mass.append(float(evidence[region].sum() / total))
        if case.labels[CONFOUNDED] == 1:
            fractions.append(float(organ.mean()))
            if total > 0:
                organ_mass.append(float(evidence[organ].sum() / total))
            value = ioa(sal.array, organ, threshold)
            empty += int(not np.isfinite(value))
            if np.isfinite(value):
                ioas.append(value)
        if (n + 1) % 10 == 0:
            say(f"  {classifier.card.name}: {n + 1}/{len(test)} test cases")
    probs, truth = np.array(probs), np.array(truth)
    aucs = {c: (float(roc_auc_score(truth[:, i], probs[:, i])) if len(np.unique(truth[:, i])) == 2 else None)
            for i, c in enumerate(CLASSES)}
    return {
        "model": classifier.card.name, "n_test": len(test), "roc_auc": aucs,
        "ioa_threshold": threshold, "ioa_liver": float(np.mean(ioas)) if ioas else None,
        "ioa_cases": len(ioas), "ioa_empty_maps": empty,
        "mass_near_marker": float(np.mean(marker_mass)) if marker_mass else None,
        "mass_in_liver": float(np.mean(organ_mass)) if organ_mass else None,
        "mass_cases": len(marker_mass), "marker_region_voxels": int(region.sum()) if region is not None else 0,
        "liver_fraction": float(np.mean(fractions)) if fractions else None,
    }


def shortcut_classifiers(models_dir=None, device="cpu") -> dict:
    """The shipped pair as classifiers: {"plain": Classifier, "maskloss": Classifier}."""
    from ..models import demo_model  # noqa: F401 - registers the "demo" architecture
    from ..models.loaders import load_classifier

    folder = MODELS_DIR if models_dir is None else Path(models_dir)
    out = {}
    for key, name in NAMES.items():
        weights = folder / f"{name}.pt"
        if not weights.is_file():
            raise InputError(f"{weights}: the shortcut model is not there; train it with "
                             "`saliency-inspector train-shortcut`")
        out[key] = load_classifier(str(weights), card=str(folder / f"{name}.json"), device=device)
    return out


def run_shortcut_demo(out_dir="shortcut-output", device="cpu", progress=None, *, n_cases=24, seed=1014,
                      models_dir=None, seeds=5) -> dict:
    """``demo --shortcut``: ``seeds`` fresh confounded cohorts of ``n_cases`` (cohort seeds ``seed``,
    ``seed + 1``, …, all unseen in training; half validation, half test), both shipped models
    measured on each, the headline as mean ± sd over the cohorts (:func:`summarise_seeds`), a picture
    of one test case of the first cohort under each model, and ``shortcut.json`` + ``shortcut.html``
    in ``out_dir``. Returns the numbers (``models``: the first cohort's, ``per_seed``, ``summary``)."""
    from ..view.render import render_overlay
    from ..io.segments import Segments, read_segments
    from ..io.volume import read_volume
    from ..io.manifest import read_manifest

    say = progress or (lambda message: None)
    started = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    if int(seeds) < 1:
        raise InputError(f"seeds must be at least 1 (got {seeds})")
    out.mkdir(parents=True, exist_ok=True)
    models = shortcut_classifiers(models_dir, device)
    per_seed, manifests = [], []
    for s in range(int(seed), int(seed) + int(seeds)):
        say(f"cohort seed {s}: {n_cases} confounded phantom cases (marker follows {CONFOUNDED}: q 0.95 in val, "
            "0.5 in test)")
        manifest = shortcut_cohort(out / f"cohort-{s}", n_cases, seed=s, fractions=(0.0, 0.5, 0.5))
        manifests.append(manifest)
        numbers = {}
        for key, clf in models.items():
            say(f"measuring {clf.card.name} on the test split")
            numbers[key] = shortcut_metrics(clf, manifest, progress=say)
        per_seed.append({"seed": s, "models": numbers})

    # the same test case under both models: a liver lesion (and the marker when such a case exists)
    test = read_manifest(manifests[0], classes=CLASSES).split("test")
    positives = [c for c in test if c.labels[CONFOUNDED] == 1]
    pick = next((c for c in positives if c.paths.get("marker")), (positives or test)[0])
    ct = read_volume(pick.ct)
    segments = [read_segments(pick.paths["organs"], reference=ct)]
    if pick.paths.get("marker"):
        segments.append(read_segments(pick.paths["marker"], reference=ct))
    keep = Segments([s for s in segments[0] if s.name in ("liver",)] + (list(segments[1]) if len(segments) > 1 else []),
                    ct)
    images = {}
    for key, clf in models.items():
        from ..explainers.explanation import explain

        result = explain(clf, ct, methods=("hirescam",), classes=[CONFOUNDED])
        images[key] = render_overlay(ct, result.map("hirescam", CONFOUNDED), keep, out / f"shortcut_{key}.png",
                                     title=f"{key}: {CONFOUNDED} p "
                                           f"{result.probabilities[result.class_names.index(CONFOUNDED)]:.2f}",
                                     with_3d=False, panel_px=256)
    first = per_seed[0]["models"]
    record = {"case": pick.case_id, "models": first, "ioa_relative_gain": _relative(first, "ioa_liver"),
              "per_seed": per_seed, "summary": summarise_seeds(per_seed),
              "published_gain": "33-37 % (Draelos & Carin, RAD-ChestCT, 36,316 CTs)",
              "cohort": [str(m) for m in manifests], "seconds": round(time.perf_counter() - started, 1)}
    (out / "shortcut.json").write_text(json.dumps(record, indent=2) + "\n")
    write_shortcut_html(out / "shortcut.html", record, images)
    say(f"wrote {out / 'shortcut.html'} in {record['seconds']:.0f} s")
    print(format_shortcut(record))
    return record


def _relative(models: dict, key: str) -> float | None:
    """(mask loss − plain) / plain of one metric, None when undefined."""
    plain, mask = models["plain"].get(key), models["maskloss"].get(key)
    return None if not plain or mask is None else (mask - plain) / plain


def _mean_sd(values) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    return {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size), "values": [float(x) for x in v]}


def summarise_seeds(per_seed: list) -> dict:
    """Mean ± sd (sample sd, ddof 1) over cohort seeds of each model's liver IoA, marker and liver
    mass, the IoA relative gain and the relative change of the mass near the marker; and whether each
    model localises the liver (its IoA above the liver's share of the field of view, the IoA of a map
    that marks everything, in EVERY cohort) and concentrates its |evidence| there (mass in the liver
    above that share, the mass of a uniform map), with plain sentences saying so."""
    out: dict = {"seeds": [p["seed"] for p in per_seed]}
    for key in ("plain", "maskloss"):
        out[key] = {m: _mean_sd([p["models"][key][m] for p in per_seed])
                    for m in ("ioa_liver", "mass_near_marker", "mass_in_liver", "liver_fraction")}
    out["ioa_gain"] = _mean_sd([_relative(p["models"], "ioa_liver") for p in per_seed])
    out["marker_mass_change"] = _mean_sd([_relative(p["models"], "mass_near_marker") for p in per_seed])
    chance = out["plain"]["liver_fraction"]["mean"]
    sentences = []
    for metric, what, both, rule in (
            ("ioa_liver", "localises the liver", "localise the liver", "liver IoA"),
            ("mass_in_liver", "concentrates its |evidence| in the liver", "concentrate their |evidence| in the liver",
             "|map| mass in the liver")):
        ok = {}
        for key in ("plain", "maskloss"):
            pairs = [(p["models"][key][metric], p["models"][key]["liver_fraction"]) for p in per_seed]
            ok[key] = all(v is not None and f is not None and v > f for v, f in pairs)
        out["localises" if metric == "ioa_liver" else "concentrates"] = ok
        mean = {k: out[k][metric]["mean"] for k in ("plain", "maskloss")}
        where = (f"{rule} plain {format_cell(mean['plain'])}, mask loss {format_cell(mean['maskloss'])} vs "
                 f"{format_cell(chance)} for a uniform map")
        if not any(ok.values()):
            sentences.append(f"neither model {what} ({where})")
        elif all(ok.values()):
            sentences.append(f"both models {both} in every cohort ({where})")
        else:
            who = "the mask-loss model" if ok["maskloss"] else "the plain model"
            sentences.append(f"only {who} {what} in every cohort ({where})")
    out["statement"] = "; ".join(sentences)
    return out


def _pm(stat: dict, percent: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    sd = "" if stat.get("sd") is None else f" ± {scale * stat['sd']:.{0 if percent else 3}f}"
    sign = "+" if percent else ""
    return f"{scale * stat['mean']:{sign}.{0 if percent else 3}f}{sd}{unit}"


def format_shortcut(record) -> str:
    """The two models side by side as a text table (the first cohort), then the headline as mean ±
    sd over all cohort seeds and whether each model localises the liver."""
    rows = [("ROC AUC " + c, lambda m, c=c: m["roc_auc"][c]) for c in CLASSES] + [
        ("HiResCAM |mass| near the marker position", lambda m: m["mass_near_marker"]),
        ("HiResCAM |mass| in the liver", lambda m: m["mass_in_liver"]),
        ("IoA liver (val threshold)", lambda m: m["ioa_liver"])]
    models = record["models"]
    lines = [f"{'test split, first cohort (marker independent)':<44}{'plain BCE':>12}{'+ mask loss':>14}"]
    for label, get in rows:
        cells = [get(models[k]) for k in ("plain", "maskloss")]
        lines.append(f"{label:<44}" + "".join(f"{format_cell(v):>{w}}" for v, w in zip(cells, (12, 14))))
    summary = record.get("summary")
    if summary:
        n = len(summary["seeds"])
        lines.append(f"over {n} cohort seeds (mean ± sd):")
        for label, key in (("IoA liver", "ioa_liver"), ("|mass| near the marker", "mass_near_marker"),
                           ("|mass| in the liver", "mass_in_liver")):
            lines.append(f"  {label:<42}{_pm(summary['plain'][key]):>16}{_pm(summary['maskloss'][key]):>16}")
        lines.append(f"IoA gain with the mask loss: {_pm(summary['ioa_gain'], True)}; change of the |mass| near the "
                     f"marker: {_pm(summary['marker_mass_change'], True)} (published: {record['published_gain']})")
        lines.append(summary["statement"])
    else:
        gain = record.get("ioa_relative_gain")
        lines.append(f"IoA gain with the mask loss: {'n/a' if gain is None else f'{100 * gain:+.0f} %'} "
                     f"(published: {record['published_gain']})")
    return "\n".join(lines)


def write_shortcut_html(path, record, images) -> Path:
    """A small page: the table of :func:`format_shortcut` and the two pictures."""
    import html

    path = Path(path)
    table = html.escape(format_shortcut(record))
    pictures = "".join(f'<figure><img src="{Path(p).name}" width="100%"><figcaption>{html.escape(k)}'
                       f'</figcaption></figure>' for k, p in images.items())
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Shortcut demonstration</title>"
                    f"</head><body><h1>Shortcut: skin marker vs liver lesion</h1><pre>{table}</pre>"
                    f"<p>Case {html.escape(record['case'])} of the test split under both models.</p>{pictures}"
                    f"</body></html>\n", encoding="utf-8")
    return path
