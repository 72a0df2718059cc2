"""Self-explaining maps beside post-hoc maps, on phantoms with known answers (issue 25).

For each model and each unseen phantom with lesions, every method's map of every class that has a
lesion is scored against what is known: the class's organ (organ ROC AUC, organ IoA, mass in
organ), the lesions (lesion ROC AUC, lesion IoA), the model (fidelity F − F(random map),
deletion/insertion with a blurred replacement) and synthetic readers whose fixations follow the
lesions (NCC, sNCC, AUC, sAUC of :func:`scoring.gaze.compare_with_gaze`; the readers' own
inter-observer scores as the baseline). A case's value is the mean over its lesion classes.

Each case also gets one model-parameter randomization: the model as it stands at the end of a
cascading randomization (every block redrawn, seeded per case; ``randomization_checks.last_step_model``),
the map of the case's first lesion class recomputed on the model-input grid and compared with the
trained model's map (SSIM inside the body). :mod:`.self_explaining_table` judges these against the
baseline of maps of different cases (the trust card's rule) and makes the table; the page is
:mod:`view.self_explaining_page`'s.

Conventions: maps are scored as ReLU(map) (every method here is read that way: the CAMs' and the
gates' declared importance is ReLU; fidelity ranks by it too); ROC AUCs, IoA and masses are inside
the body; IoA under the product's default threshold rule ``topk`` (``evaluate``, ``batch``); the
attention map is the same for every class (the gates do not know the class), so its organ scores
measure where the model looks at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

METHODS = ("attention", "hirescam", "gradcam")
GAZE = ("cc", "sncc", "auc", "sauc")
METRICS = ("organ_auc", "lesion_auc", "organ_ioa", "lesion_ioa", "mass_in_organ", "fidelity_gain", *GAZE)
SEED_BASE = 3_000_000  # phantom seeds never used in training (1e6…) or validation (1.5e6…)
READERS = 4
FIXATIONS_PER_READER = 30
SIZE_XYZ = (64, 64, 32)  # the demo models' input size: the CT is used at the model's resolution
FILES = ("self-explaining.json", "self-explaining.md", "self-explaining.html")


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


@dataclass
class CaseScores:
    """One case under one model: metric rows per (method, lesion class), the randomization per method
    (``{method: {"class", "ssim", "spearman", "blank", "seed"}}``), the trained model's maps of the
    randomization class on the model-input grid (the baseline's material), the body there, and the
    same maps on the CT grid (for a figure)."""

    rows: list
    randomization: dict = field(default_factory=dict)
    input_maps: dict = field(default_factory=dict)
    body_in: np.ndarray | None = None
    ct_maps: dict = field(default_factory=dict)
    randomization_class: str | None = None


def lesion_classes(classifier, case) -> list:
    """The model's classes that have a lesion in ``case``, in card order."""
    return [c for c in classifier.card.classes if _masks(case, c)[1].any()]


def score_case(classifier, case, methods=METHODS, steps=10, seed=0, threshold="topk", randomize=True,
               randomization_seed=0) -> CaseScores:
    """Score every method of ``methods`` on ``case`` (see the module doc); ``randomization_seed``
    seeds this case's cascading randomization (``randomize=False``: none)."""
    from ..explainers.explanation import explain
    from ..explainers.registry import get_method
    from ..scoring.evaluation import evaluate
    from ..scoring.gaze import compare_with_gaze
    from .fidelity import map_fidelity, model_input

    present = lesion_classes(classifier, case)
    if not present:
        return CaseScores(rows=[])
    res = explain(classifier, case.ct, methods=list(methods), classes=present)
    inputs = None
    rows = []
    for class_name in present:
        organ, lesion, body = _masks(case, class_name)
        fixations = readers_for(case, lesion, body, seed=seed)
        for method in methods:
            importance = get_method(method).importance  # ReLU for the CAMs and the gates
            saliency = res.map(method, class_name)
            table = evaluate(saliency, {"organ": organ, "lesion": lesion}, region=body, threshold=threshold,
                             importance=importance)
            o, les = table.row("organ"), table.row("lesion")
            inputs = inputs or model_input(classifier, case.ct, body=body)
            fid = map_fidelity(classifier, case.ct, saliency, class_name, steps=steps, seed=seed, inputs=inputs,
                               importance=importance)
            gaze = compare_with_gaze(saliency, fixations, body=body, normalisation=importance, seed=seed,
                                     n_bootstrap=50)
            rows.append({"method": method, "class": class_name,
                         "organ_auc": o["roc_auc"], "lesion_auc": les["roc_auc"],
                         "organ_ioa": o["ioa"], "lesion_ioa": les["ioa"], "mass_in_organ": o["mass_in_mask"],
                         "fidelity_gain": float(fid.curves.F - fid.random.F),
                         **{k: float(gaze.metrics[k]) for k in GAZE},
                         "inter_observer": {k: float(gaze.inter_observer[k]) for k in GAZE}})
    out = CaseScores(rows=rows, randomization_class=present[0],
                     ct_maps={m: res.map(m, present[0]) for m in methods})
    if randomize:
        _randomize_case(classifier, case, methods, present[0], randomization_seed, out)
    return out


def _randomize_case(classifier, case, methods, class_name, seed, out: CaseScores) -> None:
    """The last step of a cascading randomization (seed ``seed``) on this case: per method the
    trained and the randomized map of ``class_name`` on the model-input grid, their SSIM and
    Spearman inside the body (``scoring.similarity.compare_maps``, the method's importance)."""
    from ..explainers.randomization import class_index, input_map, prepare
    from ..explainers.registry import get_method
    from ..scoring.importance import importance_transform
    from ..scoring.masks import body_mask
    from ..scoring.similarity import compare_maps
    from .randomization_checks import last_step_model

    prepared = prepare(classifier, case.ct)
    out.body_in = body_mask(case.ct, prepared.grid)
    randomized = last_step_model(classifier, prepared, seed=seed, mode="cascading")
    target = class_index(classifier, class_name)
    layer, gates = classifier.card.target_layer, getattr(classifier.card, "attention_gates", None)
    for method in methods:
        norm = get_method(method).importance
        original = input_map(classifier.module, prepared, method, target, layer, gates).volume
        after = input_map(randomized, prepared, method, target, layer, gates).volume
        sim = compare_maps(original, after, norm, out.body_in)
        out.input_maps[method] = original
        out.randomization[method] = {"class": class_name, "ssim": float(sim.ssim), "spearman": float(sim.spearman),
                                     "blank": not bool(importance_transform(after.array, norm).any()), "seed": seed}


def has_gates(classifier) -> bool:
    """Whether the model has attention gates (declared on its card or MONAI AttentionBlocks)."""
    from ..explainers.attention import has_gates as gated

    return gated(classifier)


def compare_self_explaining(classifiers: dict, n_cases=20, methods=METHODS, steps=10, seed=0, progress=None,
                            cases=None, threshold="topk", randomize=True) -> dict:
    """Score every model of ``classifiers`` (name → Classifier) on the same ``n_cases`` unseen
    phantoms (or the given ``cases``); returns ``{"rows": per case, "summary": per (model, method,
    metric), "randomization": per (model, method), "conditions", "timings", "figures"}`` — ``figures``
    (model → the first case's CT, lesions and maps) is for the page and is not JSON."""
    from .self_explaining_table import randomization_verdicts, summarise

    say = progress or (lambda _m: None)
    cases = phantom_cases(n_cases, seed) if cases is None else list(cases)
    rows, randomization, figures, timings, no_gates = [], [], {}, {}, []
    for model, classifier in classifiers.items():
        wanted = [m for m in methods if m != "attention" or has_gates(classifier)]
        if len(wanted) < len(methods):
            no_gates.append(model)
        per_case, seconds = {}, []
        for i, case in enumerate(cases):
            started = time.time()
            scores = score_case(classifier, case, wanted, steps, seed, threshold, randomize,
                                randomization_seed=1000 * int(seed) + i)
            for row in scores.rows:
                rows.append({"model": model, "case": i, **row})
            if scores.randomization:
                per_case[i] = scores
            if model not in figures and scores.ct_maps:
                figures[model] = {"case": i, "class": scores.randomization_class, "ct": case.ct,
                                  "lesions": case.lesions, "maps": scores.ct_maps,
                                  "lesion": _masks(case, scores.randomization_class)[1]}
            scores.ct_maps = {}
            seconds.append(time.time() - started)
            say(f"{model}: case {i + 1}/{len(cases)} ({seconds[-1]:.0f} s)")
        timings[model] = {"seconds_per_case": float(np.mean(seconds)) if seconds else float("nan"),
                          "seconds_total": float(np.sum(seconds)), "methods": wanted}
        if randomize:
            randomization += randomization_verdicts(model, per_case, wanted, seed)
    conditions = {
        "n_cases": len(cases), "phantom_size_xyz": list(cases[0].ct.size_xyz) if cases else list(SIZE_XYZ),
        "seeds_from": SEED_BASE + 1000 * int(seed), "lesion_sets": "the demo's (random_lesions), each case with a "
        "lesion of a demo class", "readers": READERS, "fixations_per_reader": FIXATIONS_PER_READER,
        "reader_density": "the class's lesion mask blurred by 5 mm", "fidelity_steps": steps,
        "fidelity_replacement": "blur 10 mm", "fidelity_chance": "F of 20 seeded random maps",
        "map": "ReLU(map) (each method's declared importance) for every measure", "region": "the body",
        "ioa_threshold": threshold, "randomization": "the last step of a cascading randomization (every block "
        "redrawn, seed 1000·seed + case) per case, map of the case's first lesion class, on the model-input grid",
        "interval": "95 % percentile bootstrap over cases (a case: the mean over its lesion classes)",
        "test": "paired Wilcoxon signed-rank over the cases both maps have, vs the model's own map (attention; "
                "HiResCAM for a model without gates), Holm-corrected over the maps compared per model and measure",
        "models_without_gates": no_gates}
    return {"rows": rows, "summary": summarise(rows, methods), "randomization": randomization,
            "conditions": conditions, "timings": timings, "figures": figures}


def load_models(names, device="cpu") -> dict:
    """name → Classifier for every ``--models`` entry (shipped names, registered sources or files);
    InputError for an unknown model, a repeated name or a model whose classes are not demo classes
    (the phantoms' known answers exist for those only)."""
    from ..models import demo_model  # noqa: F401 - registers the demo and self-explaining demo models
    from ..models.loaders import load_classifier
    from ..synth.cohort import CLASS_ORGANS

    names = list(names)
    if not names:
        raise InputError("give at least one model (--models)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"model {repeated[0]!r} is given twice in --models")
    out = {}
    for name in names:
        clf = load_classifier(name, device=device)
        unknown = [c for c in clf.card.classes or [] if c not in CLASS_ORGANS]
        if not clf.card.classes or unknown:
            raise InputError(f"model {name!r}: its classes ({', '.join(clf.card.classes or ['none'])}) are not "
                             f"the phantoms' demo classes ({', '.join(CLASS_ORGANS)}); the comparison needs "
                             "known answers for every class")
        out[name] = clf
    return out


def run_self_explaining(models, out_dir, n_cases=20, steps=10, seed=0, threshold="topk", device="cpu",
                        progress=None) -> dict:
    """The comparison of ``models`` (names) on ``n_cases`` phantoms, written to ``out_dir`` as
    self-explaining.json, .md (the README table) and .html (with one figure per model under
    images/). Every input is checked before the long work, so bad input writes nothing; the
    files are written atomically at the end. Returns ``{"result", "table", "files"}``."""
    from ..io.files import written_atomically
    from ..io.records import write_json
    from ..scoring.thresholds import parse_threshold
    from ..view.self_explaining_page import write_self_explaining_page
    from .self_explaining_table import LABELS, conventions, format_table

    if int(n_cases) < 1:
        raise InputError(f"--cases must be at least 1, got {n_cases}")
    if int(steps) < 2:
        raise InputError(f"fidelity needs at least 2 steps (p = 0 … 100 %), got {steps}")
    parse_threshold(threshold)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder")
    classifiers = load_models(models, device)
    result = compare_self_explaining(classifiers, int(n_cases), steps=int(steps), seed=int(seed),
                                     progress=progress, threshold=threshold)
    figures = result.pop("figures")
    result["metrics"] = [{"key": k, "label": LABELS[k]} for k in METRICS]
    result["conventions"] = conventions(result["conditions"])
    table = format_table(result["summary"], result["randomization"], result["conditions"])
    paths = [out_dir / name for name in FILES]
    write_json(paths[0], result)
    with written_atomically(paths[1]) as tmp:
        tmp.write_text(table + "\n", encoding="utf-8")
    write_self_explaining_page(paths[2], result, figures)
    return {"result": result, "table": table, "files": paths}
