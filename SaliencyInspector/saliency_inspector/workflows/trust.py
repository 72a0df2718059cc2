"""The trust card for one CT and one class: every criterion of :data:`scoring.trust.CRITERIA` for
every method, written as ``trust.json`` and ``trust.html``.

This module wires the model side (``explainers/randomization.py``: maps on the model-input grid, the
randomized copies) to the judging side (``scoring/trust.py``, ``scoring/gaze.py``): per method it
measures an :class:`scoring.trust.Evidence` and the criteria judge it. It is the only place that
knows both, like ``demo.py``; the CLI and the Slicer module both call :func:`run_trust`.

Where the maps are compared: randomization and repeatability on the model-input grid (what the
network sees; maps of two models of ONE case on different input grids are resampled in physical
space); the baseline as ARRAYS on the model-input grid (maps of different patients: the same voxel
index is the same place in the network's view; scanner origins and storage order never enter);
localization and gaze on the CT's own grid (where masks and fixations live), the input-grid map
brought there through physical space. Every similarity is taken inside the body (union of the two
bodies for two cases), not over the empty background.

The baseline of "how similar are maps anyway": SSIM between this method's maps of *different*
cases under the first model: this CT and the ``cohort`` cases, each with up to 50 random partners
(the reference code's count; all pairs in a smaller cohort), else this CT and ``n_baseline``
phantoms made with other seeds (a single CT: the card says so; 4 phantoms give the minimum of 10
pairs). With a cohort, repeatability/reproducibility and localization are also measured on every
cohort case, so their intervals are over cases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..io.segments import Segments
    from ..io.volume import Volume
    from ..models.loaders import Classifier
    from ..scoring.fixations import Fixations
    from ..scoring.trust import TrustCard

BASELINE_SEEDS = 1000  # phantoms for a single-CT baseline use seeds 1000, 1001, ...
SSIM_RULE = {  # how scoring.similarity.normalise puts each importance into [0, 1] before SSIM
    "relu": "ReLU(map), clipped at its 99th percentile in the body, min–max to [0, 1]",
    "abs": "|map|, clipped at its 99th percentile in the body, min–max to [0, 1]",
    "signed": "the raw map clipped to its 1st–99th percentiles in the body, min–max to [0, 1] (both signs kept)",
}


@dataclass(frozen=True)
class TrustResult:
    """The card, where it was written, and the run's timings."""

    card: TrustCard
    json_path: Path | None
    report: Path | None
    seconds: float



def _gates(classifier):
    """The card's declared attention gates: a randomized copy's gates are found only by their paths."""
    return getattr(classifier.card, "attention_gates", None)

def importance_of(method: str | Callable[..., Any], override: str | None = None) -> str:
    """The transform the card applies to ``method``'s maps before comparing or ranking them: the
    method's declared ``Method.importance`` (relu for CAMs, abs for gradient maps, signed for IG,
    input × gradient, occlusion; ``explainers/registry.py``), or ``override`` for every method."""
    from ..explainers.registry import get_method
    from ..scoring.importance import check_importance

    return check_importance(override) if override else get_method(method).importance


def ct_intensity(model, x, target):
    """The model input itself (the windowed CT, channel 0): a "method" that ignores the model; the
    trust card's known-answer negative control and its localization baseline (c). Register it
    (``register_method("ct_intensity", ct_intensity)``) to put it on a card."""
    return x[0, 0].detach()


def same_classes_or_error(models: Sequence[Classifier]) -> None:
    """InputError naming the classes that differ when the models' class lists are not the same."""
    first = models[0].card.classes
    for other in models[1:]:
        if other.card.classes != first:
            a, b = list(first or []), list(other.card.classes or [])
            only_a = [c for c in a if c not in b]
            only_b = [c for c in b if c not in a]
            what = (f"only in {models[0].card.name!r}: {', '.join(only_a) or '-'}; only in "
                    f"{other.card.name!r}: {', '.join(only_b) or '-'}") if (only_a or only_b) else \
                f"same names in another order ({a} vs {b})"
            raise InputError(f"repeatability/reproducibility needs models with the same classes; {what}")


def architecture_of(classifier: Classifier) -> str:
    """What makes two models "the same architecture": the names and shapes of their floating-point
    parameters and buffers (:func:`explainers.randomization.architecture_signature`), as a short
    digest; never the class name (two ``.pt2`` files are both "UnflattenedModule")."""
    import hashlib

    from ..explainers.randomization import architecture_signature

    signature = architecture_signature(classifier.module)
    return f"{len(signature)} tensors, {hashlib.sha1(repr(signature).encode()).hexdigest()[:12]}"


def _class_segments(names: Sequence[str], class_name: str, segment: str | None = None) -> list[str]:
    """The segments localization scores against: ``segment`` if given, else those whose name contains
    the class name; an InputError naming the segments when none does (scoring against all of them
    would grade the map against other findings)."""
    if segment:
        if segment not in names:
            raise InputError(f"--segment {segment!r} is not in the masks; they are: {', '.join(names)}")
        return [segment]
    chosen = [n for n in names if str(class_name).lower() in n.lower() and n.lower() != "body"]
    if not chosen:
        raise InputError(f"no segment of the masks is named after class {class_name!r} (they are: "
                         f"{', '.join(names)}); choose the finding's segment with --segment")
    return chosen


def _class_mask(segments: Segments, class_name: str, segment: str | None = None) -> tuple[str, np.ndarray]:
    """(mask name, bool mask on the segments' grid): the union of :func:`_class_segments`."""
    chosen = _class_segments(segments.names, class_name, segment)
    mask = np.zeros(segments.grid.shape, bool)
    for n in chosen:
        mask |= segments.mask(n)
    return " + ".join(chosen), mask


def run_trust(ct: Volume, models: Sequence[Classifier],
              methods: str | Callable[..., Any] | Sequence[str | Callable[..., Any]] = ("hirescam", "gradcam"),
              class_name: str | None = None, masks: Segments | None = None, segment: str | None = None,
              fixations: str | Path | Fixations | Volume | None = None, fixations_space: str | None = None,
              sigma_mm: float = 10.0, out_dir: str | Path | None = None, mode: str = "cascading", seed: int = 0,
              cohort: Sequence[Volume | tuple[Volume, Segments | None]] | None = None, n_baseline: int = 4,
              layer: str | None = None, normalisation: str | None = None, randomize: bool = True,
              progress: Callable[[str], None] | None = None, allow_mismatch: bool = False,
              emprt_seeds: int = 3, shuffled_model: Classifier | None = None) -> TrustResult:
    """Fill the trust card for ``ct`` (Volume) and ``class_name`` with each of ``methods``.

    ``models``: one or two :class:`Classifier` (two: repeatability when their architectures match,
    else reproducibility; their classes must match). ``methods``: CAM names, registered estimator
    names or callables ``fn(model, x, target)``. ``masks``: Segments of the finding (localization);
    ``segment``: which one (default: named after the class). ``fixations``: a path (CSV, .mrk.json, a
    heatmap volume), :class:`scoring.fixations.Fixations` or a Volume. ``cohort``: other cases, a list of
    (CT Volume, Segments or None), for the baseline and the location prior. ``mode``: cascading or
    independent randomization; ``randomize=False`` skips it (the card says "not measured").
    ``emprt_seeds``: how many fully randomized models (seeds ``seed``, ``seed + 1`` …) eMPRT's interval
    rests on. ``out_dir``: where trust.json and trust.html go (None: nothing written). Masks that do
    not describe this CT (another patient's, mirrored) are refused unless ``allow_mismatch``.
    ``shuffled_model``: the same recipe trained on shuffled labels (``train-demo --shuffle-labels``):
    the data-randomization criterion, on this CT and the baseline's cases. ``normalisation``: one
    importance (relu/abs/signed) for every method instead of each method's declared one.
    """
    from ..scoring import trust
    from ..scoring.fixations import read_attention
    from ..scoring.gaze import compare_with_gaze
    from ..scoring.masks import body_mask
    from ..scoring.randomization_tests import emprt as emprt_test
    from ..scoring.importance import describe
    from ..scoring.randomization_tests import data_randomization
    from .randomization_checks import fully_randomized_maps, last_step_model
    from ..scoring.similarity import compare_maps
    from ..explainers.registry import get_method
    from ..explainers.randomization import class_index, input_map, prepare, randomized_maps
    from ..io.volume import Volume, resample_to

    say = progress or (lambda _m: None)
    started = time.time()
    models = list(models)
    if not models or len(models) > 2:
        raise InputError(f"give one or two models (got {len(models)})")
    if len(models) == 2:
        same_classes_or_error(models)
    if shuffled_model is not None:
        same_classes_or_error([models[0], shuffled_model])
    clf = models[0]
    names = clf.card.classes
    if class_name is None:
        raise InputError(f"choose a class (--class); the model's classes: {', '.join(names or [])}")
    target = class_index(clf, class_name)
    class_label = names[target] if names else str(target)
    methods = [methods] if isinstance(methods, str) or callable(methods) else list(methods)
    resolved = [get_method(m).name for m in methods]  # InputError naming every method when one is unknown
    importance = {n: importance_of(m, normalisation) for n, m in zip(resolved, methods)}
    notes: list[str] = []
    if masks is not None:  # before the long work: the same checks as evaluate and render
        from ..scoring.consistency import check_same_body

        check_same_body(masks, ct, ct, allow_mismatch=allow_mismatch, warn=say, source="masks")
        _class_segments(masks.names, class_label, segment)
        for n, case in enumerate(c for c in cohort or () if not isinstance(c, Volume) and c[1] is not None):
            check_same_body(case[1], case[0], case[0], allow_mismatch=allow_mismatch, warn=say,
                            source=f"cohort masks {n + 1}")

    attention = None
    if fixations is not None:
        attention = read_attention(fixations, fixations_space) if isinstance(fixations, (str, Path)) else fixations

    prepared = prepare(clf, ct)
    try:
        body_in = body_mask(ct, prepared.grid)
        body_ct = body_mask(ct)
    except InputError as err:  # its advice (--region) is evaluate's: trust has no such option
        raise InputError(str(err).split("; ")[0] + "; trust needs a CT in Hounsfield units with a body in it") from None

    # the baseline's cases (this CT is case 0): their CTs, segments and bodies on their model-input grids
    cohort_cases = [(c, None) if isinstance(c, Volume) else (c[0], c[1]) for c in (cohort or [])]
    if cohort_cases:
        others = [c for c, _ in cohort_cases]
        baseline_source = (f"this CT and {len(others)} cohort cases, up to {trust.PAIRS_PER_CASE} partners each "
                           "(maps of different cases as arrays on the model-input grid, first model)")
    else:
        from ..synth.phantom import make_phantom

        size = prepared.grid.size_xyz
        others = [make_phantom(seed=BASELINE_SEEDS + i, size=size).ct for i in range(int(n_baseline))]
        baseline_source = (f"this CT and {len(others)} synthetic phantoms with seeds {BASELINE_SEEDS}.."
                           f"{BASELINE_SEEDS + len(others) - 1}, all pairs (no cohort given: phantoms are not "
                           "patients; give a cohort for a baseline of real cases), first model")
        notes.append("baseline from synthetic phantoms, not other patients: give a cohort (--cohort) to judge a real CT")
    say(f"baseline: {baseline_source}")
    other_prepared = [prepare(clf, c) for c in others]
    bodies_in = [body_in] + [body_mask(c, p.grid) for c, p in zip(others, other_prepared)]
    pairs = trust.choose_pairs(len(others) + 1, trust.PAIRS_PER_CASE, seed)

    # localization cases: this CT and every cohort case with segments (masks on each case's own grid)
    mask_name, mask_ct, loc_cases = None, None, []
    if masks is not None:
        mask_name, mask_ct = _class_mask(masks.resampled_to(ct), class_label, segment)
        loc_cases.append((0, ct, mask_ct, body_ct))
        for k, (case_ct, segs) in enumerate(cohort_cases, start=1):
            if segs is not None:
                loc_cases.append((k, case_ct, _class_mask(segs.resampled_to(case_ct), class_label, segment)[1],
                                  body_mask(case_ct)))
    priors = {}
    if len(loc_cases) > 1:  # each case's location prior: the other cases' masks, moved by body boxes
        for k, _c, _m, body in loc_cases:
            priors[k] = trust.location_prior(body, [(m, b) for j, _cc, m, b in loc_cases if j != k])

    evidence, curves, timings = {}, {}, {}
    for name, method in zip(resolved, methods):
        norm = importance[name]
        curve = None
        random_cases: list[float] = []
        if randomize:
            say(f"{name}: {mode} randomization")
            t0 = time.time()
            curve = trust.randomization_curve(
                randomized_maps(clf, ct, method, class_label, mode=mode, seed=seed, layer=layer, prepared=prepared),
                name, mode, norm, body_in, progress=say)
            timings[name] = {"randomization_s": round(time.time() - t0, 2)}
            curves[name] = curve
            original = curve.maps[0]
            # eMPRT: trained vs fully randomized map, one score per seed (a cascade's last step)
            extra = range(seed + (1 if mode == "cascading" else 0), seed + max(1, int(emprt_seeds)))
            finals = ([(seed, curve.maps[0], curve.maps[-1])] if mode == "cascading" else []) + list(
                fully_randomized_maps(clf, ct, method, class_label, extra, layer, prepared))
            emprt = emprt_test(finals)
        else:
            original = input_map(clf.module, prepared, method, target, layer, _gates(clf)).volume
            emprt = None

        # baseline: maps of different cases, as arrays on the model-input grid, inside both bodies
        case_maps = [original] + [input_map(clf.module, p, method, target, layer, _gates(clf)).volume
                                  for p in other_prepared]
        baseline = trust.cohort_baseline(case_maps, bodies_in, norm, baseline_source, pairs, seed=seed)
        if curve is not None and cohort_cases:  # the last step's model on every cohort case too
            say(f"{name}: the last randomization step on {len(cohort_cases)} cohort cases")
            last = last_step_model(clf, prepared, seed, mode)
            for m, p, b in zip(case_maps[1:], other_prepared, bodies_in[1:]):
                random_cases.append(compare_maps(m, input_map(last, p, method, target, layer, _gates(clf)).volume, norm, b).ssim)

        # data randomization: the shuffled-label model's maps of this CT and the baseline's cases
        shuffled = shuffled_why = None
        if shuffled_model is not None:
            say(f"{name}: data randomization ({len(case_maps)} cases under the shuffled-label model)")
            k3 = class_index(shuffled_model, class_label)
            shuffled_maps = [input_map(shuffled_model.module, prepare(shuffled_model, c), method, k3, layer,
                                      _gates(shuffled_model)).volume
                             for c in [ct, *others]]
            try:
                shuffled = data_randomization(case_maps, shuffled_maps, bodies_in, norm, seed)
            except InputError as err:
                shuffled_why = str(err)

        # repeatability / reproducibility: the same architecture trained twice, or another one; on
        # this CT and on every cohort case (same case, two models: compared through physical space)
        repeatability = reproducibility = repeatability_why = reproducibility_why = models_compared = None
        more: list[Any] = []
        if len(models) == 2:
            other = models[1]
            same = architecture_of(other) == architecture_of(clf)
            k2 = class_index(other, class_label)
            other_map = input_map(other.module, prepare(other, ct), method, k2, layer, _gates(other)).volume
            similarity = compare_maps(original, other_map, norm, body_in)
            for case_ct, p, m, b in zip(others[:len(cohort_cases)], other_prepared, case_maps[1:], bodies_in[1:]):
                second = input_map(other.module, prepare(other, case_ct), method, k2, layer, _gates(other)).volume
                more.append(compare_maps(m, second, norm, b))
            why = f"the two models are {'the same' if same else 'different'} architectures (parameter names and shapes)"
            if same:
                repeatability, reproducibility_why = similarity, why
            else:
                reproducibility, repeatability_why = similarity, why
            models_compared = [clf.card.name, other.card.name]

        # localization (every case with masks) and gaze (this CT) on the CT grid
        localization = localization_why = None
        loc_more = []
        for k, case_ct, mask, body in loc_cases:
            m = original if k == 0 else case_maps[k]
            try:
                loc = trust.localization(resample_to(m, case_ct, "linear"), mask, body,
                                         case_ct.with_array(case_ct.array.astype(np.float32)), priors.get(k), norm)
            except InputError as err:
                if k == 0:
                    localization_why = str(err)
                continue
            if k == 0:
                localization = loc
            else:
                loc_more.append(loc)
        gaze = None
        if attention is not None:
            gaze = compare_with_gaze(resample_to(original, ct, "linear"), attention, body_ct, sigma_mm, norm, seed=seed)
        evidence[name] = trust.Evidence(
            baseline=baseline, curve=curve, repeatability=repeatability, reproducibility=reproducibility,
            repeatability_why=repeatability_why, reproducibility_why=reproducibility_why, models=models_compared,
            repeatability_cases=more if repeatability is not None else [],
            reproducibility_cases=more if reproducibility is not None else [],
            localization=localization if localization_why is None else None,
            localization_cases=loc_more if localization is not None else [],
            localization_why=localization_why, mask_name=mask_name, gaze=gaze,
            emprt=emprt, randomization_cases=random_cases, data_randomization=shuffled,
            data_randomization_why=shuffled_why)

    context = {
        "ct": ct.describe_grid(), "class": class_label, "models": [m.card.name for m in models],
        "methods": list(resolved), "randomization_mode": mode, "seed": seed,
        "baseline": baseline_source, "comparison_grid": prepared.grid.describe_grid(),
        "similarity_region": "inside the body (two cases: the union of their bodies); SSIM averaged over it, "
                             "the whole-box SSIM beside it as ssim_box",
        "uncertainty": f"95 % percentile bootstrap ({2000} resamples, seed {seed}) over cases, or over the cases "
                       f"behind the baseline's pairs; INCONCLUSIVE below {trust.MIN_BASELINE_PAIRS} baseline pairs "
                       f"or {trust.MIN_CASES} localization cases",
        "normalisation": importance,
        "importance": {n: {"importance": k, "transform": describe(k), "for_ssim": SSIM_RULE[k]}
                       for n, k in importance.items()},
        "importance_source": "given for every method (normalisation=)" if normalisation else
                             "each method's declared importance (explainers/registry.py, Method.importance)",
        "shuffled_model": shuffled_model.card.name if shuffled_model is not None else None,
        "timings": timings,
    }
    card = trust.TrustCard(rows=trust.judge_all(evidence), context=context, curves=curves, notes=notes)
    json_path = report = None
    if out_dir is not None:
        from ..view.trust_report import write_trust_report

        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; give --out a folder")
        json_path = card.write_json(out_dir / "trust.json")
        report = write_trust_report(out_dir / "trust.html", card, ct=ct)
        say(f"wrote {json_path} and {report}")
    return TrustResult(card, json_path, report, round(time.time() - started, 2))
