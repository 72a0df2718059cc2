"""`saliency-inspector` command line: a thin layer over the Python API.

Each sub-command parses its arguments, calls one library function and prints. Problems with the
user's input (:class:`InputError`) become a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError

PROG = "saliency-inspector"


def progress(message: str) -> None:
    """Progress lines go to stderr so that stdout stays for results."""
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)


# ---- sub-commands ---------------------------------------------------------------------------------
def cmd_phantom(args) -> int:
    from .synth.phantom import make_phantom, write_phantom_case

    size = tuple(args.size) if args.size else None
    progress(f"making phantom (seed {args.seed})")
    case = make_phantom(seed=args.seed, size=size, lesions=args.lesion, oblique=args.oblique,
                        lesion_scale=args.lesion_scale)
    paths = write_phantom_case(case, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_phantom_cohort(args) -> int:
    from .synth.cohort import phantom_cohort

    manifest = phantom_cohort(args.out, args.cases, seed=args.seed, size=tuple(args.size),
                              prevalence=args.prevalence, confounder=args.confounder, q_train=args.q_train,
                              q_test=args.q_test, fractions=tuple(args.fractions), progress=progress)
    print(manifest)
    return 0


def cmd_explain(args) -> int:
    from .explain.explanation import explain
    from .io.volume import read_volume
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loading import load_classifier

    ct = read_volume(args.ct, series=args.series, note=progress)
    progress(f"loading model {args.model}")
    classifier = load_classifier(args.model, card=args.card, arch=args.arch, device=args.device)
    methods = args.method or ["hirescam", "gradcam"]
    result = explain(classifier, ct, methods=methods, classes=args.target_class, layer=args.layer,
                     progress=progress)
    written = result.save(args.out)
    for path in written:
        print(path)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate.metrics import evaluate
    from .io.segments import read_segments
    from .io.volume import read_volume

    saliency = read_volume(args.map)
    ct = read_volume(args.ct) if args.ct else None
    segments = read_segments(args.masks, reference=saliency, names=args.names, note=progress)
    table = evaluate(saliency, segments, region=args.region, threshold=args.threshold, ct=ct)
    if args.json:
        table.write_json(args.json)
        progress(f"wrote {args.json}")
    if args.csv:
        table.write_csv(args.csv)
        progress(f"wrote {args.csv}")
    print(table.format())
    return 0


def cmd_render(args) -> int:
    from .view.render import render_overlay
    from .io.segments import read_segments
    from .io.volume import read_volume

    ct = read_volume(args.ct)
    saliency = read_volume(args.map)
    segments = read_segments(args.masks, reference=ct, note=progress) if args.masks else None
    path = render_overlay(ct, saliency, segments, args.out)
    print(path)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, device=args.device, progress=progress)
    return 0


def cmd_train_demo(args) -> int:
    from .models.demo_model import train_demo_model

    result = train_demo_model(out_dir=args.out, seed=args.seed, progress=progress)
    print(result["weights"])
    print(result["card"])
    return 0


# ---- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    device = dict(choices=["auto", "cpu", "cuda"], default="auto",
                  help="where the model runs (auto: the GPU when there is one)")

    p = sub.add_parser("demo", help="the main job on a generated phantom: explain, score, render, report")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    p.add_argument("--device", **device)
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
    p.add_argument("ct", help="CT volume: NRRD, NIfTI, MHA or a DICOM series folder")
    p.add_argument("--model", required=True, help=".pt2 export, MONAI bundle folder, state dict (with --arch) or 'demo'")
    p.add_argument("--card", help="model card JSON when it is not beside the model")
    p.add_argument("--arch", help="architecture for a state dict, e.g. 'DenseNet121' or a JSON spec")
    p.add_argument("--method", action="append", help="hirescam, gradcam, gradcampp, … (repeatable; default hirescam and gradcam)")
    p.add_argument("--class", dest="target_class", default="all", help="class name or index, or 'all'")
    p.add_argument("--layer", help="target layer (module name); default: the card's, else the last spatial layer")
    p.add_argument("--out", type=Path, default=Path("saliency-output"), help="output folder")
    p.add_argument("--device", **device)
    p.add_argument("--series", metavar="UID", help="for a DICOM folder: the SeriesInstanceUID to use "
                   "(default: the CT series with the most slices)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="agreement of a saliency map with organ masks, one row per segment")
    p.add_argument("map", help="saliency map volume (NRRD/NIfTI)")
    p.add_argument("--masks", required=True, help=".seg.nrrd or labelmap")
    p.add_argument("--names", help="for a labelmap: JSON or CSV table label -> name")
    p.add_argument("--ct", help="the CT (lets the body be the evaluation region)")
    p.add_argument("--region", default="auto", help="body, all, or a segment name (default: body when it can be had)")
    p.add_argument("--threshold", default="topk", help="topk, otsu, fixed:T, percentile:P, max (oracle)")
    p.add_argument("--json", type=Path, help="write rows as JSON")
    p.add_argument("--csv", type=Path, help="write rows as CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("render", help="PNG of axial/coronal/sagittal slices and a 3D view of the overlay")
    p.add_argument("ct")
    p.add_argument("map")
    p.add_argument("--masks", help="organ masks to outline")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("train-demo", help="re-train the shipped demo classifier from a seed")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped Resources/Models)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
