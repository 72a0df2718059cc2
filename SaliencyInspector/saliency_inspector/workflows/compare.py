"""Compare importance estimators on one case: agreement with a mask, region Dice, fidelity, time.

For one CT, a mask (lesion or organ) and one class, every chosen estimator gets: ROC AUC and AUPRC
against the mask (over the body, on the CT grid), Dice at its best top-k % (k = 1 … 100, reported),
region Dice of its XRAI-style regions (the xrai3d supervoxels of this CT ranked greedily by *its*
map; best Dice over the number of regions taken), mass in mask, fidelity F with its deletion/LIF
curves (on the model-input grid) and the time it took. One table, a ranking per measure, and a
report page (:func:`view.compare_page.write_compare_report`): the point is to see at a glance
whether model-centric (fidelity) and mask-centric (ROC, Dice) rankings agree.

Every method's voxels are ranked by its declared importance (``Method.importance``: ReLU(map) for
CAMs, |map| for gradient-type maps, the signed map for IG / input × gradient / occlusion), the same
transform for ROC, Dice, mass and fidelity; the table says which. Fidelity is compared with the
chance line of ≥ 20 random maps: F − F(random) with the random maps' 95 % band as its interval.
One case ranks methods on that case only — no test of one method against another is possible from
one case; :func:`workflows.compare_cohort.compare_cohort` runs this over a manifest and tests the
differences across cases (paired Wilcoxon, Holm, rank-biserial).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import finite, format_cell, is_missing, write_csv, write_json
from ..scoring.importance import LABELS, importance_transform
from ..scoring.metrics import METRICS

# measure key -> (column title, higher is better); the mask metrics' titles are the registry's names
MEASURES = {
    "roc_auc": (METRICS["roc_auc"].name, True),
    "auprc": (METRICS["auprc"].name, True),
    "best_dice": ("Dice@best k", True),
    "region_dice": ("Region Dice", True),
    "mass_in_mask": (METRICS["mass_in_mask"].name, True),
    "fidelity_F": ("Fidelity F", True),
    "fidelity_F_minus_random": ("F - random", True),
    "seconds": ("Time s", False),
}
FIDELITY_KEYS = ("F_random", "F_random_low", "F_random_high", "F_minus_random", "F_minus_random_low",
                 "F_minus_random_high", "F_verdict", "F_logit", "F_logit_random", "F_logit_minus_random",
                 "F_logit_minus_random_low", "F_logit_minus_random_high", "F_logit_verdict")
COLUMNS = ["method", "family", "importance", "roc_auc", "auprc", "auprc_chance", "best_dice", "best_dice_k",
           "region_dice", "region_count", "mass_in_mask", "mass_baseline", "fidelity_F",
           *(f"fidelity_{k}" for k in FIDELITY_KEYS), "fidelity_auc_mif", "fidelity_auc_lif", "seconds"]
SINGLE_CASE_NOTE = ("one case: ranks order the methods on this case only; no test of one method against another "
                    "is possible from one case (compare_cohort tests them across cases)")


@dataclass
class Comparison:
    """The comparison table (one row per estimator), rankings per measure, curves and maps."""

    rows: list
    class_name: str
    segment: str
    curves: dict  # method -> fidelity.FidelityResult
    maps: dict  # method -> CT-grid Volume
    info: dict = field(default_factory=dict)

    @property
    def measures(self) -> dict:
        """measure key -> (column title, higher is better)."""
        return MEASURES

    @property
    def rankings(self) -> dict:
        """measure -> methods from best to worst (undefined values last)."""
        out = {}
        for key, (_title, higher) in MEASURES.items():
            def sort_key(row, key=key, higher=higher):
                v = row.get(key)
                bad = is_missing(v)
                return (bad, 0.0 if bad else (-v if higher else v))
            out[key] = [r["method"] for r in sorted(self.rows, key=sort_key)]
        return out

    def rank_of(self, method: str, measure: str) -> int:
        return self.rankings[measure].index(method) + 1

    def to_records(self) -> list:
        """Rows with NaN turned into None (JSON has no NaN)."""
        return [finite(row) for row in self.rows]

    def write_json(self, path) -> Path:
        """The table, rankings, fidelity curves and run info as JSON (NaN as null)."""
        data = {"class": self.class_name, "segment": self.segment, "rows": self.rows,
                "rankings": self.rankings, "curves": {m: r.to_dict() for m, r in self.curves.items()}, **self.info}
        return write_json(path, data)

    def write_csv(self, path) -> Path:
        """One row per method: :data:`COLUMNS` then its rank per measure (NaN as an empty cell)."""
        rows = [{**row, **{f"rank_{k}": self.rank_of(row["method"], k) for k in MEASURES}} for row in self.rows]
        return write_csv(path, rows, COLUMNS + [f"rank_{k}" for k in MEASURES] + self._quality_keys())

    def _quality_keys(self) -> list:
        """The model-calling quality metrics present (``compare --quantus``), in registry order."""
        from ..scoring.quality import MODEL_KEYS
        return [k for k in MODEL_KEYS if self.rows and k in self.rows[0]]

    def format(self) -> str:
        """Fixed-width table with each value's rank in brackets."""
        width = max(8, *(len(r["method"]) for r in self.rows))
        heads = [title for title, _ in MEASURES.values()]
        lines = [f"class {self.class_name!r} against segment {self.segment!r}   (rank in brackets; 1 = best)",
                 f"{'method':<{width}}  {'family':<12}  {'ranked by':<10}" + "".join(f"{h:>16}" for h in heads)]
        lines.append("-" * len(lines[-1]))
        for r in self.rows:
            cells = []
            for key in MEASURES:
                v = r.get(key)
                text = format_cell(v)
                if key == "best_dice" and r.get("best_dice_k") is not None:
                    text += f"@{r['best_dice_k']}%"
                cells.append(f"{text} ({self.rank_of(r['method'], key)})".rjust(16))
            lines.append(f"{r['method']:<{width}}  {r['family']:<12}  {LABELS[r['importance']]:<10}" + "".join(cells))
        lines.append(f"fidelity: {self.info.get('fidelity_replacement', '')}, {self.info.get('fidelity_steps')} steps; "
                     f"chance line: {self.info.get('random_maps')} random maps")
        if self.rows:
            r = self.rows[0]
            lines.append(f"  random maps' F: mean {format_cell(r['fidelity_F_random'])}, 95 % band "
                         f"[{format_cell(r['fidelity_F_random_low'])}, {format_cell(r['fidelity_F_random_high'])}]")
        for r in self.rows:
            lines.append(f"  {r['method']}: F - F(random) = {format_cell(r['fidelity_F_minus_random'])} "
                         f"[{format_cell(r['fidelity_F_minus_random_low'])}, "
                         f"{format_cell(r['fidelity_F_minus_random_high'])}] ({r['fidelity_F_verdict']}); on the logit "
                         f"{format_cell(r['fidelity_F_logit_minus_random'])} "
                         f"[{format_cell(r['fidelity_F_logit_minus_random_low'])}, "
                         f"{format_cell(r['fidelity_F_logit_minus_random_high'])}] ({r['fidelity_F_logit_verdict']})")
        lines.append("  (interval: the random maps' 2.5th-97.5th percentiles of F, subtracted from the map's F)")
        lines.append(f"note: {SINGLE_CASE_NOTE}")
        if self._quality_keys():  # compare --quantus: one line per metric, methods side by side
            from ..scoring.quality import QUALITY_METRICS
            lines.append("Quantus families (3-D, body as domain; " + ", ".join(r["method"] for r in self.rows) + "):")
            for k in self._quality_keys():
                info = QUALITY_METRICS[k]
                lines.append(f"  {info.label:<28} [{info.family}, {'higher' if info.higher_is_better else 'lower'} "
                             f"is better]  " + "  ".join(format_cell(r.get(k)) for r in self.rows))
        return "\n".join(lines)


TOP_K = (0.1, 0.2, 0.5, *range(1, 101))  # percent of the region; below 1 % for small lesions


def best_topk_dice(scores: np.ndarray, mask: np.ndarray, ks=TOP_K) -> tuple:
    """(best Dice, its k %) of the top-k % voxels of ``scores`` against ``mask`` (1-D, same length)."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(mask[order])
    positives = int(mask.sum())
    best, best_k = float("nan"), None
    if positives == 0:
        return best, best_k
    for k in ks:
        kept = max(1, int(round(k / 100 * scores.size)))
        dice = 2.0 * hits[kept - 1] / (kept + positives)
        if not dice <= best:
            best, best_k = float(dice), k
    return best, best_k


def region_dice(order: np.ndarray, mask: np.ndarray) -> tuple:
    """(best Dice, regions taken) of the union of the first n ranked regions against ``mask``."""
    ranks = order.ravel()
    m = mask.ravel().astype(bool)
    n_regions = int(ranks.max())
    if n_regions == 0 or not m.any():
        return float("nan"), 0
    size = np.bincount(ranks, minlength=n_regions + 1)[1:]
    inside = np.bincount(ranks[m], minlength=n_regions + 1)[1:]
    dice = 2.0 * np.cumsum(inside) / (np.cumsum(size) + m.sum())
    best = int(np.argmax(dice))
    return float(dice[best]), best + 1


def _choose_segment(names: list, class_name: str, segment) -> str:
    names = list(names)
    if segment is not None:
        if segment not in names:
            raise InputError(f"segment {segment!r} is not in the masks; they are: {', '.join(names)}")
        return segment
    if len(names) == 1:
        return names[0]
    matches = [n for n in names if class_name in n and n.lower() != "body"]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"say which segment to score the maps against with --segment; the masks have: {', '.join(names)}")


def compare_estimators(classifier, ct, masks, class_name, methods=("hirescam", "gradcam", "gradient", "smoothgrad",
                       "ig"), segment=None, settings=None, steps: int = 20, replacement: str = "blur",
                       blur_mm: float = 10.0, seed: int = 0, progress=None, allow_mismatch: bool = False,
                       quantus: bool = False, random_maps: int | None = None) -> Comparison:
    """Every estimator in ``methods`` on one case and one class, side by side (see module doc).

    ``masks``: :class:`io.segments.Segments` (on any grid; resampled) or a dict name -> bool array on
    the CT grid; ``segment``: the one to score against (default: the only one, or the one whose name
    contains the class name); ``settings``: estimator settings; ``steps``/``replacement``/``blur_mm``:
    fidelity; ``seed``: the fidelity tie-break and random maps; ``random_maps``: maps of the chance
    line (default :data:`scoring.fidelity.RANDOM_MAPS`, 20). Segments that do not describe this CT
    (another patient's, mirrored) are refused unless ``allow_mismatch``. ``quantus``: also every
    model-calling metric of :data:`scoring.quality.QUALITY_METRICS` per method (costs forwards).
    """
    import torch

    from ..scoring.evaluation import evaluate
    from ..scoring.masks import body_mask, mask_source
    from ..explainers.explanation import class_name_of, explain
    from ..explainers.registry import get_method
    from ..explainers.xrai import supervoxels, xrai_rank
    from .fidelity import map_fidelity, model_input

    say = progress or (lambda _m: None)
    if hasattr(masks, "grid"):  # Segments: the same checks as evaluate and render (scoring/consistency.py)
        from ..scoring.consistency import check_same_body

        check_same_body(masks, ct, ct, allow_mismatch=allow_mismatch, warn=say, source="masks")
    if int(steps) < 2:
        raise InputError(f"fidelity needs at least 2 steps (p = 0 … 100 %), got {steps}")
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise InputError("give at least one method to compare")
    names = [get_method(m).name for m in methods]  # unknown names fail here, before any work
    if classifier.card.classes is None:
        raise InputError("the model has no class names; give a model card with 'classes'")
    class_name = class_name_of(classifier.card.classes, class_name)
    target = classifier.card.classes.index(class_name)
    masks = mask_source(masks, ct, say)  # masks are made on demand from labelmap layers
    segment = _choose_segment(masks.names, class_name, segment)
    mask = masks.mask(segment)
    if not mask.any():
        raise InputError(f"segment {segment!r} is empty on the CT grid; choose another with --segment")

    body_name = next((n for n in masks.names if n.lower() == "body"), None)
    body_ct = masks.mask(body_name) if body_name else body_mask(ct)
    inputs = model_input(classifier, ct, settings, body=body_ct)  # shared by every method's fidelity
    x, grid, s, body_in = inputs.prepared.tensor, inputs.prepared.grid, inputs.settings, inputs.body
    mask_in = inputs.mask_on_input(mask)
    say(f"supervoxels of the input ({'×'.join(map(str, x.shape[2:]))}) at scales {list(s.xrai_scales)}")
    regions = supervoxels(x[0, 0].detach().cpu().numpy(), s.spacing_zyx, body_in, s.xrai_scales, s.xrai_dilation)

    rows, curves, maps = [], {}, {}
    region_flat = body_ct.ravel()
    for method, name in zip(methods, names):
        say(f"{name}: explaining class {class_name}")
        start = time.perf_counter()
        res = explain(classifier, ct, methods=[method], classes=class_name, settings=s)
        seconds = time.perf_counter() - start
        volume = res.map(name, class_name)
        maps[name] = volume
        importance = get_method(method).importance  # one transform for ROC, Dice, mass and fidelity
        table = evaluate(volume, {segment: mask}, region=body_ct, ct=ct, importance=importance)
        row = table.rows[0]
        dice, k = best_topk_dice(importance_transform(volume.array.ravel()[region_flat], importance),
                                 mask.ravel()[region_flat])
        on_input = inputs.map_on_input(res.raw[(name, class_name)])
        _scores, order = xrai_rank(importance_transform(on_input, importance), regions, body_in)
        rdice, rcount = region_dice(order, mask_in)
        say(f"{name}: fidelity, {steps} steps, {replacement}")
        fid = map_fidelity(classifier, ct, on_input, class_name, steps=steps, replacement=replacement,
                           blur_mm=blur_mm, seed=seed, inputs=inputs, importance=importance, random_maps=random_maps)
        curves[name] = fid
        chance = {**fid.versus_random(), **fid.versus_random(logit=True)}
        chance.update(F_random=chance["random_F"], F_random_low=chance["random_F_low"],
                      F_random_high=chance["random_F_high"], F_logit_random=chance["random_F_logit"])
        rows.append({"method": name, "family": get_method(method).family, "importance": importance,
                     "roc_auc": row["roc_auc"], "auprc": row["auprc"], "auprc_chance": row["auprc_chance"],
                     "best_dice": dice, "best_dice_k": k, "region_dice": rdice, "region_count": rcount,
                     "mass_in_mask": row["mass_in_mask"], "mass_baseline": row["mass_baseline"],
                     "fidelity_F": fid.curves.F, **{f"fidelity_{k}": chance[k] for k in FIDELITY_KEYS},
                     "fidelity_auc_mif": fid.curves.auc_mif, "fidelity_auc_lif": fid.curves.auc_lif,
                     "seconds": seconds})
        if quantus:  # opt-in: the Quantus families' model-calling metrics (issue 24)
            from .quality import model_metrics
            say(f"{name}: Quantus-family metrics (faithfulness, robustness, randomisation, completeness)")
            rows[-1].update(model_metrics(classifier, inputs, on_input, target, name, seed=seed, note=say))
    with torch.no_grad():
        probability = float(classifier.probabilities(classifier.predict(x))[0, target])
    return Comparison(rows=rows, class_name=class_name, segment=segment, curves=curves, maps=maps,
                      info={"probability": probability, "fidelity_steps": int(steps),
                            "fidelity_replacement": next(iter(curves.values())).replacement,
                            "random_maps": next(iter(curves.values())).chance.n, "note": SINGLE_CASE_NOTE,
                            "importance": {r["method"]: r["importance"] for r in rows},
                            "region": "body", "supervoxel_candidates": len(regions),
                            "input_grid": grid.describe_grid()})
