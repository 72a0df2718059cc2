"""`saliency-inspector` command line: a thin layer over the Python API.

Each sub-command parses its arguments, calls one library function and prints. Problems with the
user's input (:class:`InputError`) become a one-line message and exit code 2, never a traceback.
The parser and :func:`main` are here; the sub-commands in :mod:`.cli_commands`, the output guards
in :mod:`.cli_guard`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_commands import (PROG, cmd_batch, cmd_compare, cmd_demo, cmd_evaluate, cmd_explain, cmd_phantom,
                           cmd_phantom_cohort, cmd_self_explaining, cmd_train, cmd_train_demo,
                           cmd_train_shortcut, cmd_trust)
from .cli_render import cmd_render
from .errors import InputError


def add_model_options(p, arch_help="architecture for a state dict", repeated=False) -> None:
    """``--model``, ``--card`` and ``--arch`` (explain, compare, batch, trust): the classifier as
    :func:`~saliency_inspector.models.loaders.load_classifier` takes it. ``repeated``: several models
    (trust), each ``--card`` belonging to the ``--model`` in the same place."""
    if repeated:
        p.add_argument("--model", action="append", required=True,
                       help="a model as for explain; twice for repeatability (same architecture) or reproducibility")
        p.add_argument("--card", action="append", help="model card per --model, in the same order")
    else:
        p.add_argument("--model", required=True,
                       help=".pt2 export, MONAI bundle folder, state dict (with --arch) or 'demo'")
        p.add_argument("--card", help="model card JSON when it is not beside the model")
    p.add_argument("--arch", help=arch_help)


def _setting_options() -> dict:
    """CLI option -> the EstimatorSettings fields it sets (in field order), from the fields' metadata."""
    from dataclasses import fields

    from .explainers.settings import EstimatorSettings

    options = {}
    for f in fields(EstimatorSettings):
        if f.metadata.get("option"):
            options.setdefault(f.metadata["option"], []).append(f)
    return options


def add_estimator_options(p) -> None:
    """The estimators' settings (explain, compare): one option per EstimatorSettings field that names
    one (two fields sharing an option are its two values), default and help from the field."""
    g = p.add_argument_group("estimator settings (gradient, smoothgrad, ig, occlusion, xrai3d, …)")
    for option, group in _setting_options().items():
        first = group[0]
        kind = type(first.default)
        if kind is bool:
            g.add_argument(option, action="store_true", help=first.metadata["help"])
        elif len(group) == 1:
            g.add_argument(option, type=kind, default=first.default, help=first.metadata["help"])
        else:
            g.add_argument(option, type=kind, nargs=len(group), default=tuple(f.default for f in group),
                           metavar=tuple(f.metadata["metavar"] for f in group), help=first.metadata["help"])


def estimator_settings(args) -> dict:
    """The EstimatorSettings fields set by the options of :func:`add_estimator_options`."""
    settings = {}
    for option, group in _setting_options().items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        settings.update({group[0].name: value} if len(group) == 1 else
                        {f.name: v for f, v in zip(group, value)})
    return settings


def method_help(default: str, cam_only: bool = False) -> str:
    """``--method`` help listing the registry's methods by family (or its CAMs)."""
    from .explainers.registry import FAMILY_LABELS, METHODS

    by_family = {}
    for name, m in METHODS.items():
        if m.is_cam or not cam_only:
            by_family.setdefault(m.family, []).append(name)
    listed = "; ".join(f"{FAMILY_LABELS.get(f, f)}: {', '.join(names)}" for f, names in by_family.items())
    return f"{listed} (repeatable; default {default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    device = dict(choices=["auto", "cpu", "cuda"], default="auto",
                  help="where the model runs (auto: the GPU when there is one)")

    p = sub.add_parser("demo", help="the main job on a generated phantom: explain, score, render, report")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    p.add_argument("--device", **device)
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale for every method of a class (default: each map's own maximum)")
    p.add_argument("--at", metavar="X,Y,Z", help="slice every picture through this LPS point (mm)")
    p.add_argument("--shortcut", action="store_true",
                   help="the shortcut demonstration: shipped models trained without / with the mask loss "
                        "on a marker-confounded cohort, measured on an unconfounded test split")
    p.add_argument("--dicom-out", type=Path, metavar="DIR", help="also write the maps (Parametric Maps), organs "
                   "and lesions (SEG) and the scores (SR) as DICOM there")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("phantom", help="write a synthetic CT with organ and lesion masks")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="voxels along x, y, z (default 512 512 120)")
    p.add_argument("--lesion", action="append", metavar="ORGAN",
                   help="put a lesion in this organ (repeatable; default: one in the liver)")
    p.add_argument("--oblique", action="store_true", help="tilt the volume's axes (oblique direction)")
    p.add_argument("--lesion-scale", type=float, default=1.0,
                   help="multiply the nominal lesion radii (the demo uses 1.8, the size its model was trained on)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("phantom-cohort", help="write N labelled phantom cases and a manifest "
                       "(optionally confounded by a skin marker)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cases", type=int, required=True, help="number of cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=[96, 96, 64],
                   help="voxels along x, y, z of every CT (default 96 96 64)")
    p.add_argument("--prevalence", type=float, default=0.4, help="probability that each class is present")
    p.add_argument("--confounder", metavar="CLASS", help="a class whose label a skin marker follows")
    p.add_argument("--q-train", type=float, default=0.95,
                   help="P(marker | class present) = P(no marker | absent) in train and val (default 0.95)")
    p.add_argument("--q-test", type=float, default=0.5, help="the same in the test split (default 0.5)")
    p.add_argument("--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=[0.6, 0.2, 0.2],
                   help="shares of the splits (default 0.6 0.2 0.2)")
    p.set_defaults(func=cmd_phantom_cohort)

    p = sub.add_parser("explain", help="saliency maps for a CT, one NRRD per (method, class)")
    p.add_argument("ct", nargs="?", help="CT volume: NRRD, NIfTI, MHA or a DICOM series folder (none with --dicomweb)")
    add_model_options(p, arch_help="architecture for a state dict, e.g. 'DenseNet121' or a JSON spec")
    p.add_argument("--method", action="append", help=method_help("hirescam and gradcam"))
    p.add_argument("--class", dest="target_class", default="all", help="class name or index, or 'all'")
    p.add_argument("--layer", action="append", help="target layer (module name); default: the card's, else the "
                   "last spatial layer; repeated: the CAM maps of the layers combined (finest grid, averaged)")
    p.add_argument("--out", type=Path, default=Path("saliency-output"), help="output folder")
    p.add_argument("--device", **device)
    add_estimator_options(p)
    p.add_argument("--series", metavar="UID", help="for a DICOM folder: the SeriesInstanceUID to use "
                   "(default: the CT series with the most slices)")
    p.add_argument("--dicom-out", type=Path, metavar="DIR", help="also write each map as a DICOM Parametric Map, "
                   "the top-5%% maps as a DICOM SEG and the probabilities as a DICOM SR there (needs the 'dicom' extra)")
    p.add_argument("--dicomweb", metavar="URL", help="pull the CT from this DICOMweb server ("
                   "credentials from SALIENCY_DICOMWEB_TOKEN or SALIENCY_DICOMWEB_USER/PASSWORD)")
    p.add_argument("--study", metavar="UID", help="with --dicomweb: the StudyInstanceUID")
    p.add_argument("--strict-geometry", action="store_true", help="refuse a DICOM series with a missing slice or "
                   "a tilted gantry (default: resample it onto an even grid, linearly, with a warning)")
    p.add_argument("--push", action="store_true", help="with --dicomweb: store the DICOM objects in the study (STOW-RS)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="agreement of a saliency map with organ masks, one row per segment")
    p.add_argument("map", help="saliency map volume (NRRD/NIfTI)")
    p.add_argument("--masks", required=True, help=".seg.nrrd or labelmap")
    p.add_argument("--names", help="for a labelmap: JSON or CSV table label -> name")
    p.add_argument("--ct", help="the CT (lets the body be the evaluation region)")
    p.add_argument("--region", default="auto", help="body, all, or a segment name (default: body when it can be had)")
    p.add_argument("--region-masks", help="a second segmentation that holds the --region segment "
                   "(e.g. organs, to score a lesion within its organ)")
    p.add_argument("--threshold", default="topk", help="topk, otsu, fixed:T, percentile:P, max (oracle)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="score masks that do not seem to belong to this CT (with a loud warning)")
    p.add_argument("--importance", choices=("relu", "abs", "signed"), help="rank voxels by ReLU(map), |map| or "
                   "the signed map (default: the method's own, from the file name <method>_<class>.nrrd)")
    p.add_argument("--json", type=Path, help="write rows as JSON")
    p.add_argument("--csv", type=Path, help="write rows as CSV")
    p.add_argument("--dicom-out", type=Path, metavar="DIR", help="also write the map (Parametric Map), the masks "
                   "(SEG) and the scores (SR, TID 1500) as DICOM there")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="estimators side by side on one case: agreement with a mask, region Dice, "
                                       "fidelity, time")
    p.add_argument("ct", help="CT volume")
    add_model_options(p)
    p.add_argument("--masks", required=True, help=".seg.nrrd or labelmap holding the lesion/organ mask")
    p.add_argument("--segment", help="the segment to score against (default: the only one, or the one named like the class)")
    p.add_argument("--class", dest="target_class", required=True, help="class name or index")
    p.add_argument("--method", action="append", help=method_help("hirescam gradcam gradient smoothgrad ig"))
    p.add_argument("--fidelity-steps", type=int, default=20, help="deletion/LIF steps (p = 0 … 100 %%)")
    p.add_argument("--quantus", action="store_true",
                   help="also Quantus's model-calling metrics in 3D (faithfulness, robustness, random logit, "
                        "completeness; costs forwards)")
    p.add_argument("--replacement", default="blur", help="fidelity replacement: air, mean, blur, impute")
    p.add_argument("--blur-mm", type=float, default=10.0, help="sigma of the blur replacement (mm)")
    p.add_argument("--json", type=Path, help="write the table, rankings and curves as JSON")
    p.add_argument("--csv", type=Path, help="write the table with ranks as CSV")
    p.add_argument("--out", type=Path, help="folder for compare.html and its pictures")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="score masks that do not seem to belong to this CT (with a loud warning)")
    p.add_argument("--device", **device)
    add_estimator_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("render", help="PNG of axial/coronal/sagittal slices and a 3D view of the overlay")
    p.add_argument("ct")
    p.add_argument("map")
    p.add_argument("--masks", help="organ masks to outline")
    p.add_argument("--at", metavar="X,Y,Z", help="slice through this LPS point (mm); default: the map's peak")
    p.add_argument("--title", help="picture title (default: method, class and p from predictions.json beside the map)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="draw masks that do not seem to belong to this CT (with a loud warning)")
    p.add_argument("--out", required=True,
                   help="output PNG, or a folder (existing, or ending in /) that gets <map name>.png")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("batch", help="a whole cohort from a manifest: per-case maps and metrics, cohort "
                       "statistics with bootstrap intervals, a cohort page; resumable; local processes or Ray")
    p.add_argument("manifest", help="CSV or JSON-lines manifest: case_id, ct, optional organs, lesions, "
                   "one 0/1 column per class")
    add_model_options(p)
    p.add_argument("--method", action="append", help=method_help("hirescam and gradcam", cam_only=True))
    p.add_argument("--class", dest="target_class", action="append", help="class to explain (repeatable; default all)")
    p.add_argument("--keep-maps", choices=["none", "feature", "ct"], default="none",
                   help="write each case's maps: none, feature (small, the feature grid) or ct (the CT grid)")
    p.add_argument("--threshold", default="topk", help="threshold rule of Dice/IoA (as for evaluate)")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-running it resumes)")
    p.add_argument("--device", **device)
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default 1: this process); with --ray: the number of actors")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray: auto (a running cluster), host:port, ray://host:port, or local")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--dicom-out", action="store_true", help="also write each case's maps, masks and scores as "
                   "DICOM (Parametric Map, SEG, SR) into cases/<id>/dicom/")
    p.add_argument("--dicomweb", metavar="URL", help="the manifest's study_uid (and optional series_uid) rows are "
                   "studies on this DICOMweb server (credentials from SALIENCY_DICOMWEB_TOKEN or _USER/_PASSWORD)")
    p.add_argument("--push", action="store_true", help="with --dicomweb: store each case's DICOM objects in its "
                   "study as it finishes (retried; failures in errors.csv)")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("trust", help="the trust card: localization, randomization, repeatability, gaze per method")
    p.add_argument("ct", help="CT volume: NRRD, NIfTI, MHA or a DICOM series folder")
    add_model_options(p, arch_help="architecture for state dicts, e.g. 'DenseNet121'", repeated=True)
    p.add_argument("--method", action="append", help=method_help("hirescam and gradcam"))
    p.add_argument("--class", dest="target_class", required=True, help="class name or index")
    p.add_argument("--masks", help="segmentation of the finding (.seg.nrrd or labelmap): localization")
    p.add_argument("--segment", help="the segment to localize (default: the ones named after the class)")
    p.add_argument("--fixations", help="readers' fixations: CSV (x,y,z mm[,duration][,reader]), .mrk.json or a heatmap volume")
    p.add_argument("--fixations-space", choices=["LPS", "RAS"], type=str.upper,
                   help="coordinate system of a CSV (default LPS, or the file's '# space: RAS' line)")
    p.add_argument("--sigma-mm", type=float, default=10.0, help="Gaussian per fixation, mm (default 10)")
    p.add_argument("--cohort", action="append", help="another case's CT (repeatable): the baseline from maps of different cases")
    p.add_argument("--cohort-masks", action="append", help="its finding's masks, one per --cohort: the location prior")
    p.add_argument("--mode", choices=["cascading", "independent"], default="cascading", help="randomization mode")
    p.add_argument("--skip-randomization", action="store_true", help="only the other criteria (randomization: not measured)")
    p.add_argument("--shuffled-model", metavar="PATH",
                   help="the same recipe trained on shuffled labels (train-demo --shuffle-labels; its card beside it): "
                        "the data-randomization criterion")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisations and samplers")
    p.add_argument("--layer", help="target layer for the CAMs (default: the card's)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="use masks that do not seem to belong to their CT (with a loud warning)")
    p.add_argument("--out", type=Path, default=Path("trust-output"), help="output folder (trust.json, trust.html)")
    p.add_argument("--device", **device)
    p.set_defaults(func=cmd_trust)

    p = sub.add_parser("self-explaining", help="the models' own maps (attention gates, trainable saliency) beside "
                       "HiResCAM and Grad-CAM on unseen phantoms with known answers: table, randomization, page")
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="shipped model names (demo, demo-attention-gated, demo-trainable-saliency-mask10, …) or "
                        "model files with the demo classes; a model without attention gates gets no attention row")
    p.add_argument("--cases", type=int, default=20, help="unseen phantoms (default 20; the same for every model)")
    p.add_argument("--fidelity-steps", type=int, default=10, help="deletion/LIF steps (default 10)")
    p.add_argument("--threshold", default="topk", help="threshold rule of IoA (as for evaluate; default topk)")
    p.add_argument("--seed", type=int, default=0, help="phantom, reader, fidelity and randomization seed")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: self-explaining.json, self-explaining.md, self-explaining.html")
    p.add_argument("--device", **device)
    p.set_defaults(func=cmd_self_explaining)

    p = sub.add_parser("train", help="train a classifier on a manifest: BCE, optionally + HiResCAM mask loss")
    p.add_argument("manifest", help="cohort manifest (CSV/JSONL with case_id, split, ct, organs, labels)")
    p.add_argument("--card", help="model card JSON with architecture, input and (optional) classes")
    p.add_argument("--arch", help="architecture instead of a card: a name (DenseNet121, demo, ...) or a JSON spec")
    p.add_argument("--size", type=int, nargs=3, metavar=("D", "H", "W"), help="input size with --arch")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=[-1000.0, 1000.0],
                   help="HU window with --arch (default -1000 1000)")
    p.add_argument("--classes", nargs="+", help="label columns to train (default: all)")
    p.add_argument("--name", help="output name (default: the card's)")
    p.add_argument("--mask-loss", type=float, default=0.0, metavar="LAMBDA",
                   help="weight of the HiResCAM mask loss (0: off; Draelos & Carin use 1/3)")
    p.add_argument("--layer", help="target layer of the mask loss (default: the card's)")
    p.add_argument("--dilate-mm", type=float, default=10.0, help="allowed region: the organ dilated by this (mm)")
    p.add_argument("--class-organs", help='JSON {class: [organ segment, ...]} (default: cohort.json beside '
                   'the manifest, else the class name)')
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=5, help="early stop after this many epochs without improvement")
    p.add_argument("--rotate", type=float, default=5.0, help="augmentation: rotations up to this many degrees")
    p.add_argument("--flip-axis", type=int, action="append", choices=[0, 1, 2],
                   help="augmentation: mirror across this patient axis (0 = x swaps left and right!)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (weights, card, .pt2)")
    p.add_argument("--device", **device)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-shortcut", help="re-train the two shipped shortcut models (without / with mask loss)")
    p.add_argument("--manifest", help="a confounded cohort manifest (default: make the 200-case one)")
    p.add_argument("--cohort", type=Path, default=Path("shortcut-cohort"), help="where to make the cohort")
    p.add_argument("--out", type=Path, default=Path("retrained-shortcut-models"),
                   help="output folder (never the shipped Resources/Models; copy the files there yourself)")
    p.set_defaults(func=cmd_train_shortcut)

    p = sub.add_parser("train-demo", help="re-train the shipped demo classifier from a seed")
    p.add_argument("--out", type=Path, default=Path("retrained-demo-model"),
                   help="output folder (default: retrained-demo-model; never the shipped Resources/Models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-labels", action="store_true",
                   help="train on shuffled labels (data-randomization control: its maps must not look like the real model's)")
    p.add_argument("--arch", default="demo", choices=["demo", "attention_gated", "trainable_saliency"],
                   help="demo (default) or a self-explaining demo model (docs/attention25.md)")
    p.add_argument("--mask-fraction", type=float, default=0.0,
                   help="trainable_saliency: fraction of training cases whose lesion masks supervise the saliency map")
    p.set_defaults(func=cmd_train_demo)
    return parser


# Warnings of the libraries underneath that a CLI user can do nothing about, each named by its
# message, category and the module that raises it (listed in docs/finish2223.md from a run of the
# README's commands). Filtered here, at the command line's entry, never in the library: a Python
# user of the package still sees them.
KNOWN_WARNINGS = (
    # captum/_utils/gradient.py apply_gradient_requirements, raised from captum/attr/_core/saliency.py:
    # our inputs are plain tensors; Captum sets requires_grad itself, which is what we want
    (r"Input Tensor \d+ did not already require gradients, required_grads has been set automatically",
     UserWarning, r"captum\."),
)


def quiet_known_warnings() -> None:
    """Ignore exactly :data:`KNOWN_WARNINGS` (message, category, module) in this process."""
    import warnings

    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def main(argv=None) -> int:
    quiet_known_warnings()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file system refusal the checks above could not foresee (disk full, …)
        where = f"{err.filename}: " if err.filename else ""
        print(f"{PROG}: error: {where}{err.strerror or err}; check the path and that you may write there",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
