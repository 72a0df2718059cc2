"""`saliency-inspector demo`: the main job end to end on embedded defaults (no network, no files).

A phantom CT with organ masks and a liver lesion -> the shipped demo classifier -> HiResCAM and
Grad-CAM for every class -> metrics against every organ and lesion -> pictures -> an HTML report.
Output folder: ``ct.nrrd``, ``organs.seg.nrrd``, ``lesions.seg.nrrd``, ``case.json``,
``maps/<method>_<class>.nrrd``, ``predictions.json``, ``metrics.csv``/``metrics.json``,
``images/*.png`` and ``report.html``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import write_csv, write_json

DEMO_SIZE = (256, 256, 100)  # voxels (x, y, z) of the demo phantom: 1.56 x 1.56 x 3 mm over 400x400x300 mm
ROC_POINTS = 2000  # a ROC curve over millions of voxels is thinned to this many points for plotting


@dataclass
class DemoResult:
    """What the demo made: the output folder, the report, the tables and the objects behind them."""

    out_dir: Path
    report: Path
    tables: dict  # (method, class) -> EvaluationTable
    images: dict  # (method, class) -> PNG path
    predictions: list  # dicts: class, probability, logit, truth
    focus_classes: list
    seconds: float
    timings: dict = field(default_factory=dict)
    slice_points: dict = field(default_factory=dict)  # class -> (LPS point, what it is): one per class


def _class_organs(class_name: str) -> tuple:
    from ..models.demo_model import CLASS_ORGANS

    return tuple(CLASS_ORGANS.get(class_name, (class_name,)))


def run_demo(out_dir="demo-output", device="auto", progress=None, *, size=None, seed=0, lesions=None,
             classifier=None, methods=("hirescam", "gradcam"), panel_px=384, shared_scale=False,
             at=None) -> DemoResult:
    """Run the main job on a phantom and write everything into ``out_dir``; returns a :class:`DemoResult`.

    ``size``: phantom voxels (x, y, z), default :data:`DEMO_SIZE`; ``lesions``: organs holding a
    lesion (default one in the liver); ``classifier``: a :class:`~saliency_inspector.models.Classifier`
    to use instead of the shipped demo model (tests use a small untrained one); ``shared_scale``:
    one colour scale for every method of a class (the largest of their maxima); ``at``: LPS point
    (mm) for every picture's slices instead of each class's lesion / organ centre. Prints the metrics
    of the predicted/true classes and the report's path on stdout; progress goes to ``progress``.
    """
    from ..explainers.explanation import explain
    from ..io.names import safe_name
    from ..scoring.curves import roc_curve, thin_curve
    from ..scoring.evaluation import evaluate
    from ..models.demo_model import LESION_SCALE
    from ..synth.phantom import make_phantom, write_phantom_case
    from ..view.render import render_overlay
    from ..explainers.registry import get_method, method_label
    from ..view.report import plot_roc, write_report
    from ..io.segments import Segments
    from ..io.volume import write_volume

    say = progress or (lambda message: None)
    start = time.perf_counter()
    timings = {}

    def lap(name, t0):
        timings[name] = time.perf_counter() - t0
        return time.perf_counter()

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(size) if size else DEMO_SIZE

    # 1. the case
    t = time.perf_counter()
    say(f"making a phantom CT {size[0]}×{size[1]}×{size[2]} (seed {seed})")
    # lesions as large as the demo model was trained on (see demo_model.LESION_SCALE)
    case = make_phantom(seed=seed, size=size, lesions=lesions, lesion_scale=LESION_SCALE)
    write_phantom_case(case, out)
    t = lap("phantom", t)

    # 2. the model and its maps
    if classifier is None:
        from ..models.demo_model import demo_classifier

        say("loading the shipped demo classifier")
        classifier = demo_classifier(device=device)
    say(f"explaining: {', '.join(methods)} for every class ({', '.join(classifier.class_names or [])})")
    explanation = explain(classifier, case.ct, methods=list(methods), classes="all", progress=say)
    maps_dir = out / "maps"
    for (method, name), volume in explanation.maps.items():
        write_volume(volume, maps_dir / f"{method}_{safe_name(name)}.nrrd")
    lesion_organs = {les["organ"] for les in case.info.get("lesions", [])}
    predictions = []
    threshold = float(classifier.card.extra.get("threshold", 0.5))  # the card's decision threshold
    validation = (classifier.card.extra.get("training") or {}).get("validation") or {}
    for index, name in enumerate(explanation.class_names):
        truth = bool(lesion_organs & set(_class_organs(name)))
        predictions.append({"class": name, "probability": float(explanation.probabilities[index]),
                            "logit": float(explanation.logits[index]), "truth": truth, "threshold": threshold,
                            "validation_roc_auc": (validation.get("roc_auc") or {}).get(name)})
    record = dict(explanation.predictions())
    record["truth"] = {p["class"]: p["truth"] for p in predictions}
    record["lesions"] = case.info.get("lesions", [])
    (out / "predictions.json").write_text(json.dumps(record, indent=2) + "\n")
    t = lap("explain", t)

    # classes worth a close look: truly present or predicted (p >= 0.5); at least the most probable one
    focus = [p["class"] for p in predictions if p["truth"] or p["probability"] >= 0.5]
    if not focus:
        focus = [max(predictions, key=lambda p: p["probability"])["class"]]
    focus = [c for c in explanation.classes if c in focus]

    # 3. metrics against every organ and lesion (region: the body)
    segments = Segments(list(case.organs) + list(case.lesions), case.ct)
    tables = {}
    records = []
    for (method, name), volume in explanation.maps.items():
        say(f"scoring {method} / {name} against {len(segments)} segments")
        table = evaluate(volume, segments, region="auto", ct=case.ct, importance=get_method(method).importance)
        tables[(method, name)] = table
        records += [{"method": method, "class": name, **row} for row in table.to_records()]
    _write_metrics(records, out)
    t = lap("metrics", t)

    # 4. pictures: every method of a class sliced at one point (the class's lesion, else its organ,
    # else the first method's peak), so the methods are compared on the same anatomy
    from ..view.display import peak_point

    from ..explainers.registry import get_method

    images, slice_points = {}, {}
    strongest = {m: max(_positive_max(explanation.raw[(m, c)]) for c in explanation.classes) for m in methods}
    for (method, name), volume in explanation.maps.items():
        say(f"rendering {method} / {name}")
        path = out / "images" / f"{method}_{safe_name(name)}.png"
        p = next(p for p in predictions if p["class"] == name)
        point, label = _class_point(case, name, explanation.map(methods[0], name), peak_point)
        if at is not None:
            point, label = np.asarray(at, float), "the given point"
        point, label = slice_points.setdefault(name, (np.asarray(point, float), label))  # the class's first
        scale = None
        if shared_scale:
            scale = max(float(np.max(explanation.map(m, name).array)) for m in methods) or None
        title = (f"{method_label(method)} · class {name} · p = {p['probability']:.2f} → "
                 f"{'present' if p['probability'] >= threshold else 'absent'} (threshold {threshold:g})")
        title += " · truth: lesion" if p["truth"] else " · truth: no lesion"
        banner = None
        if p["probability"] < threshold:  # a class called absent: its map is magnified, say by how much
            shown_max = scale or _positive_max(explanation.raw[(method, name)])
            gain = strongest[method] / shown_max if shown_max > 0 else float("inf")
            banner = f"ABSENT: p = {p['probability']:.2f} < {threshold:g} · " + (
                f"map magnified ×{gain:.1f} against this method's strongest class" if gain >= 1.05 else
                "weak evidence, not a finding")
        images[(method, name)] = render_overlay(case.ct, volume, [case.organs, case.lesions], path, title=title,
                                                panel_px=panel_px, point=point, point_label=label, scale=scale,
                                                signed=get_method(method).meaning == "signed", banner=banner)
    t = lap("render", t)

    # 5. ROC curves of each focus class's maps against its organ(s) and lesion(s), over the body
    body = case.organs.mask("body") if "body" in case.organs.names else None
    roc_images = []
    for name in focus:
        targets = [(organ, case.organs.mask(organ)) for organ in _class_organs(name) if organ in case.organs.names]
        targets += [(les.name, les.mask) for les in case.lesions
                    if any(info["name"] == les.name and info["organ"] in _class_organs(name)
                           for info in case.info.get("lesions", []))]
        curves = []
        for target, mask in targets:
            for method in methods:
                fpr, tpr, _ = roc_curve(explanation.map(method, name), mask, region=body,
                                        importance=get_method(method).importance)
                auc = tables[(method, name)].row(target)["roc_auc"]
                curves.append((f"{method_label(method)} vs {target}", *thin_curve(fpr, tpr, ROC_POINTS), auc))
        if curves:
            path = plot_roc(curves, out / "images" / f"roc_{safe_name(name)}.png",
                            title=f"class {name}: map vs its organ / lesion (region: body)")
            roc_images.append((f"class {name}", path))
    t = lap("roc", t)

    # 6. the report
    class_segments = {}
    for name in explanation.classes:
        organs = [o for o in _class_organs(name)]
        lesion_names = [info["name"] for info in case.info.get("lesions", []) if info["organ"] in organs]
        class_segments[name] = organs + lesion_names
    cell = explanation.info.get("feature_cell_mm")
    info = {"phantom": f"seed {seed}, {case.info.get('phase', '')}",
            "lesions": "; ".join(f"{les['name']} (organ {les['organ']}, radius {les['radius_mm']:.1f} mm, "
                                 f"centre LPS {[round(v, 1) for v in les['center_lps']]} mm)"
                                 for les in case.info.get("lesions", [])) or "none",
            "model": f"{explanation.model} · target layer {explanation.layer}",
            "decision": f"a class is called present when p ≥ {threshold:g} (the model card's threshold)",
            "model input": explanation.info.get("orientation_note", "")}
    if cell:
        info["feature cell"] = (f"{cell[0]:.1f} × {cell[1]:.1f} × {cell[2]:.1f} mm (x × y × z): the map has one "
                                "value per cell, so it is not voxel-precise")
    if validation:
        info["validation (model card)"] = (
            f"{validation.get('n_cases', '?')} unseen phantoms: ROC AUC " + ", ".join(
                f"{k} {v:.2f}" for k, v in (validation.get("roc_auc") or {}).items())
            + (f"; accuracy {validation['accuracy']:.2f}" if "accuracy" in validation else ""))
    report = write_report(
        out / "report.html", title=f"SaliencyInspector demo: phantom case (seed {seed})", ct=case.ct,
        case_info=info, predictions=predictions, images=images, tables=tables, class_segments=class_segments,
        focus_classes=focus, roc_images=roc_images, methods=list(methods),
        class_notes={c: f"every method sliced at LPS ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm, {label}"
                     for c, (p, label) in slice_points.items()},
        notes=[*explanation.info.get("warnings", []),
               "The phantom and its lesion are synthetic; the demo classifier was trained on such phantoms only.",
               "Maps were computed on the model's input grid and mapped back onto the CT grid in physical space."])
    lap("report", t)
    seconds = time.perf_counter() - start

    # 7. what the user reads
    shown = [(name, method) for name in focus for method in methods]
    for i, (name, method) in enumerate(shown):
        p = next(p for p in predictions if p["class"] == name)
        print(f"\n== {method_label(method)} · class {name} (p = {p['probability']:.3f}, "
              f"truth: {'lesion' if p['truth'] else 'no lesion'}) ==")
        print(tables[(method, name)].format(legend=i == len(shown) - 1))  # the legend once, at the end
    print(f"\nreport: {report.resolve()}")
    say(f"done in {seconds:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")")
    return DemoResult(out, report, tables, images, predictions, focus, seconds, timings, slice_points)


def _positive_max(volume) -> float:
    """The largest positive value of a map (0 when it has none)."""
    return max(float(np.nanmax(np.asarray(volume.array))), 0.0)


def _class_point(case, name, first_map, peak_point):
    """(LPS point, what it is) where a class's pictures are sliced: the centre of its lesion, else of
    its organ, else the first method's peak. A class with several lesions or organs (kidney: both
    kidneys) is sliced through the one holding most of the first map's positive mass, never through
    their common centre (between the kidneys, where neither is)."""
    from ..io.volume import resample_to

    organs = _class_organs(name)
    masks = [(les.name, les.mask) for les in case.lesions
             if any(info["name"] == les.name and info["organ"] in organs for info in case.info.get("lesions", []))]
    label = "the centre of the class's lesion"
    if not any(m.any() for _n, m in masks):
        masks = [(o, case.organs.mask(o)) for o in organs if o in case.organs.names]
        label = "the centre of the class's organ"
    masks = [(n, m) for n, m in masks if m.any()]
    if not masks:
        return peak_point(first_map), "the first method's peak"
    if len(masks) > 1:
        positive = np.maximum(resample_to(first_map, case.ct, "linear").array, 0) if not first_map.same_grid(case.ct) \
            else np.maximum(first_map.array, 0)
        chosen, mask = max(masks, key=lambda nm: float(positive[nm[1]].sum()))
        label = f"the centre of {chosen}: most of the map"
    else:
        mask = masks[0][1]
    k, j, i = (float(v.mean()) for v in np.nonzero(mask))
    return case.ct.index_to_physical([i, j, k]), label


def _write_metrics(records, out: Path) -> None:
    """metrics.json (list of row objects, NaN as null) and metrics.csv (one row per method/class/segment)."""
    write_json(out / "metrics.json", records)
    if records:
        write_csv(out / "metrics.csv", records, list(records[0]))
