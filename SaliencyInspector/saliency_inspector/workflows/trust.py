"""The trust card for one CT and one class: every criterion of :data:`scoring.trust.CRITERIA` for
every method, written as ``trust.json`` and ``trust.html``.

This module wires the model side (``explainers/randomization.py``: maps on the model-input grid, the
randomized copies) to the judging side (``scoring/trust.py``, ``scoring/gaze.py``): per method it
measures an :class:`scoring.trust.Evidence` and the criteria judge it. It is the only place that
knows both, like ``demo.py``; the CLI and the Slicer module both call :func:`run_trust`.

Where the maps are compared: randomization, repeatability and the baseline on the model-input grid
(what the network sees; maps of two models on different input grids are resampled in physical
space); localization and gaze on the CT's own grid (where masks and fixations live), the input-grid
map brought there through physical space.

The baseline of "how similar are maps anyway": the mean SSIM between this method's maps of
*different* cases under the first model: every pair of a given cohort (``cohort``; ≥ 20 pairs
from 7 cases), else this CT against ``n_baseline`` phantoms generated with other seeds (a single CT:
the card says which).
"""

from __future__ import annotations

import itertools
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
MAX_BASELINE_PAIRS = 50


@dataclass(frozen=True)
class TrustResult:
    """The card, where it was written, and the run's timings."""

    card: TrustCard
    json_path: Path | None
    report: Path | None
    seconds: float


def default_normalisation(method: str | Callable[..., Any]) -> str:
    """ReLU for CAMs (their negative part means "against the class"), |map| for anything else."""
    from ..explainers.registry import get_method

    return "relu" if get_method(method).is_cam else "abs"


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
    """What makes two models "the same architecture": the card's architecture (name + kwargs) when it
    has one, else the module's class name."""
    arch = classifier.card.architecture
    if arch:
        return f"{arch['name']}{sorted((arch.get('kwargs') or {}).items())}"
    return type(classifier.module).__name__


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
              emprt_seeds: int = 3) -> TrustResult:
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
    """
    from ..scoring import trust
    from ..scoring.fixations import read_attention
    from ..scoring.gaze import compare_with_gaze
    from ..scoring.masks import body_mask
    from ..scoring.randomization_tests import emprt as emprt_test
    from .randomization_checks import fully_randomized_maps
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
    clf = models[0]
    names = clf.card.classes
    if class_name is None:
        raise InputError(f"choose a class (--class); the model's classes: {', '.join(names or [])}")
    target = class_index(clf, class_name)
    class_label = names[target] if names else str(target)
    methods = [methods] if isinstance(methods, str) or callable(methods) else list(methods)
    resolved = [get_method(m).name for m in methods]  # InputError naming every method when one is unknown
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

    # the baseline's cases
    if cohort:
        cases = [(c if isinstance(c, Volume) else c[0]) for c in cohort]
        baseline_source = f"all pairs of {len(cases)} cohort cases (maps of different cases, first model)"
    else:
        from ..synth.phantom import make_phantom

        size = prepared.grid.size_xyz
        cases = [make_phantom(seed=BASELINE_SEEDS + i, size=size).ct for i in range(int(n_baseline))]
        baseline_source = (f"this CT against {len(cases)} phantoms with seeds {BASELINE_SEEDS}.."
                           f"{BASELINE_SEEDS + len(cases) - 1} (a single CT: no cohort given), first model")
    say(f"baseline: {baseline_source}")

    prior = None
    if cohort and masks is not None:
        others = [(c[1], body_mask(c[0])) for c in cohort if not isinstance(c, Volume) and c[1] is not None]
        if others:
            prior = trust.location_prior(body_ct, [(_class_mask(s, class_label, segment)[1], b) for s, b in others])
    mask_name, mask_ct = None, None
    if masks is not None:
        masks_on_ct = masks.resampled_to(ct)
        mask_name, mask_ct = _class_mask(masks_on_ct, class_label, segment)

    evidence, curves, timings = {}, {}, {}
    for name, method in zip(resolved, methods):
        norm = normalisation or default_normalisation(method)
        curve = None
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
            original = input_map(clf.module, prepared, method, target, layer).volume
            emprt = None

        # baseline: maps of different cases
        case_maps = []
        for case in cases:
            p = prepare(clf, case)
            case_maps.append(input_map(clf.module, p, method, target, layer).volume)
        pairs = list(itertools.combinations(case_maps, 2)) if cohort else [(original, m) for m in case_maps]
        if len(pairs) > MAX_BASELINE_PAIRS:
            rng = np.random.default_rng(seed)
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), MAX_BASELINE_PAIRS, replace=False))]
        baseline = trust.baseline_similarity(pairs, norm, baseline_source)
        if cohort and len(pairs) < 20:
            note = f"the baseline rests on {len(pairs)} pairs of cases (fewer than 20): give at least 7 cohort cases"
            if note not in notes:
                notes.append(note)

        # repeatability / reproducibility: the same architecture trained twice, or another one
        repeatability = reproducibility = repeatability_why = reproducibility_why = models_compared = None
        if len(models) == 2:
            other = models[1]
            same = architecture_of(other) == architecture_of(clf)
            p2 = prepare(other, ct)
            second = input_map(other.module, p2, method, class_index(other, class_label), layer).volume
            similarity = compare_maps(original, second, norm, body_in)
            why = f"the two models are {'the same' if same else 'different'} architectures"
            if same:
                repeatability, reproducibility_why = similarity, why
            else:
                reproducibility, repeatability_why = similarity, why
            models_compared = [clf.card.name, other.card.name]

        # localization and gaze on the CT grid
        on_ct = None
        if mask_ct is not None or attention is not None:
            on_ct = resample_to(original, ct, "linear")
        localization = localization_why = None
        if mask_ct is not None:
            try:
                localization = trust.localization(on_ct, mask_ct, body_ct, ct.with_array(ct.array.astype(np.float32)),
                                                  prior, norm)
            except InputError as err:
                localization_why = str(err)
        gaze = None
        if attention is not None:
            gaze = compare_with_gaze(on_ct, attention, body_ct, sigma_mm, norm, seed=seed)
        evidence[name] = trust.Evidence(
            baseline=baseline, curve=curve, repeatability=repeatability, reproducibility=reproducibility,
            repeatability_why=repeatability_why, reproducibility_why=reproducibility_why, models=models_compared,
            localization=localization, localization_why=localization_why, mask_name=mask_name, gaze=gaze,
            emprt=emprt)

    context = {
        "ct": ct.describe_grid(), "class": class_label, "models": [m.card.name for m in models],
        "methods": list(resolved), "randomization_mode": mode, "seed": seed,
        "baseline": baseline_source, "comparison_grid": prepared.grid.describe_grid(),
        "normalisation": {n: normalisation or default_normalisation(m) for n, m in zip(resolved, methods)},
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
