"""`saliency-inspector` command line: a thin layer over the Python API.

Each sub-command parses its arguments, calls one library function and prints. Problems with the
user's input (:class:`InputError`) become a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import InputError

PROG = "saliency-inspector"


def progress(message: str) -> None:
    """Progress lines go to stderr so that stdout stays for results."""
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)


# ---- output safety (every sub-command, new ones included, calls this for its outputs) -------------
def guard_outputs(inputs=(), files=(), folders=()) -> None:
    """Refuse, before any heavy work, outputs that cannot be written or that would replace an input.

    ``inputs``: every path the sub-command reads (CT, map, masks, model, card, names table…; a
    folder input such as a DICOM series counts with the files directly in it; ``None`` entries are
    skipped). ``files``: every output file it will write. ``folders``: every output folder it
    will write into (tried here, so that "cannot create" or "cannot write" is found now and not
    after the forward pass; folders made only for the check are removed again). Paths are compared resolved, symlinks followed, and by inode where both exist, so
    ``--json map.nrrd``, ``--out`` through a symlink or a hard link are all caught.

    Raises :class:`InputError` (one line, exit code 2 at the CLI) when an output file is an input,
    an output file exists as a folder, an output folder exists as a file or is an input, or a
    folder cannot be created or written to. A sub-command that learns its file names late (e.g.
    ``explain``, after reading the model card) calls this again with them before writing.
    """
    ins = _input_paths(inputs)
    for folder in [Path(f) for f in folders if f is not None]:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder; give --out a folder")
        if _is_one_of(folder, ins):
            raise InputError(f"{folder}: is one of this command's inputs; give --out another folder")
    for path in [Path(f) for f in files if f is not None]:
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file name for this output")
        if _is_one_of(path, ins):
            raise InputError(f"{path}: is one of this command's inputs and would be overwritten; "
                             "choose another output name")
    for folder in list(dict.fromkeys([Path(f) for f in folders if f is not None] +
                                     [Path(f).parent for f in files if f is not None])):
        _writable_folder(folder)


def _input_paths(inputs) -> list:
    out = []
    for item in inputs:
        if item is None:
            continue
        path = Path(item)
        out.append(path)
        if path.is_dir():  # a DICOM folder: its files are inputs too (not its sub-folders: not read)
            out += [p for p in path.iterdir() if p.is_file()]
    return out


def _is_one_of(path: Path, inputs) -> bool:
    resolved = path.resolve()
    for other in inputs:
        if resolved == other.resolve():
            return True
        try:
            if path.exists() and other.exists() and os.path.samefile(path, other):  # hard links
                return True
        except OSError:
            pass
    return False


def _writable_folder(folder: Path) -> None:
    """Check that ``folder`` can be created and written to; folders made for the check are removed
    again, so a run refused later (bad option, bad input) leaves nothing behind."""
    import tempfile

    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{folder}: cannot be made a folder (a part of the path is a file); "
                         "choose another output location") from None
    except OSError as err:
        raise InputError(f"{folder}: cannot write here ({err.strerror or err}); choose a folder you can "
                         "write to") from None
    finally:
        for made in missing:  # innermost first
            try:
                made.rmdir()
            except OSError:
                break


# ---- sub-commands ---------------------------------------------------------------------------------
PHANTOM_FILES = ("ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd", "case.json")


def cmd_phantom(args) -> int:
    from .synth.phantom import make_phantom, write_phantom_case

    size = tuple(args.size) if args.size else None
    guard_outputs(files=[args.out / n for n in PHANTOM_FILES], folders=[args.out])
    progress(f"making phantom (seed {args.seed})")
    case = make_phantom(seed=args.seed, size=size, lesions=args.lesion, oblique=args.oblique,
                        lesion_scale=args.lesion_scale)
    paths = write_phantom_case(case, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_phantom_cohort(args) -> int:
    from .synth.cohort import phantom_cohort

    guard_outputs(folders=[args.out])
    manifest = phantom_cohort(args.out, args.cases, seed=args.seed, size=tuple(args.size),
                              prevalence=args.prevalence, confounder=args.confounder, q_train=args.q_train,
                              q_test=args.q_test, fractions=tuple(args.fractions), progress=progress)
    print(manifest)
    return 0


def cmd_explain(args) -> int:
    from .explain.explanation import explain, safe_name
    from .io.volume import read_volume
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loading import load_classifier

    model_path = Path(args.model)
    inputs = [args.ct, args.card, model_path if model_path.exists() else None]
    if model_path.is_file():
        inputs.append(model_path.with_suffix(".json"))  # the card beside the weights
    guard_outputs(inputs, files=[args.out / "predictions.json"], folders=[args.out])
    ct = read_volume(args.ct)
    progress(f"loading model {args.model}")
    classifier = load_classifier(args.model, card=args.card, arch=args.arch, device=args.device)
    methods = args.method or ["hirescam", "gradcam"]

    def map_files(classes):
        return [args.out / f"{m}_{safe_name(c)}.nrrd" for m in methods for c in classes]

    if classifier.class_names:  # names known from the card: check them before the forward pass
        guard_outputs(inputs, files=map_files(classifier.class_names))
    result = explain(classifier, ct, methods=methods, classes=args.target_class, layer=args.layer,
                     progress=progress)
    guard_outputs(inputs, files=map_files(result.classes))
    written = result.save(args.out)
    for path in written:
        print(path)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate.metrics import evaluate
    from .io.segments import read_segments
    from .io.volume import read_volume

    from .evaluate.consistency import check_same_body

    guard_outputs([args.map, args.masks, args.ct, args.names, args.region_masks], files=[args.json, args.csv])
    saliency = read_volume(args.map)
    ct = read_volume(args.ct) if args.ct else None
    segments = read_segments(args.masks, names=args.names)
    if len(segments) == 0:
        raise InputError(f"{args.masks}: holds no segments; give a segmentation with the organs of this CT")
    check_same_body(segments, saliency, ct, allow_mismatch=args.allow_mismatch, warn=progress, source=args.masks)
    region = args.region
    if args.region_masks:  # e.g. a lesion scored within its organ, the organ from another file
        if args.region in ("auto", "all", "body"):
            raise InputError("--region-masks needs --region SEGMENT, the name of a segment in that file")
        others = read_segments(args.region_masks)
        check_same_body(others, saliency, ct, allow_mismatch=args.allow_mismatch, warn=progress,
                        source=args.region_masks)
        region = (f"{args.region} (from {Path(args.region_masks).name})",
                  others.resampled_to(saliency).mask(args.region))
    table = evaluate(saliency, segments, region=region, threshold=args.threshold, ct=ct, note=progress)
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

    out = render_path(args.out, args.map)
    guard_outputs([args.ct, args.map, args.masks], files=[out])
    ct = read_volume(args.ct)
    saliency = read_volume(args.map)
    segments = None
    if args.masks:
        from .evaluate.consistency import check_same_body

        segments = read_segments(args.masks)
        check_same_body(segments, ct, ct, allow_mismatch=args.allow_mismatch, warn=progress, source=args.masks)
        segments = segments.resampled_to(ct) if len(segments) else segments
    title = args.title or _render_title(Path(args.map))
    path = render_overlay(ct, saliency, segments, out, title=title,
                          point=parse_point(args.at) if args.at else None)
    print(path)
    return 0


def _render_title(map_path: Path) -> str | None:
    """'HiResCAM · class liver · p = 0.20' for a map written by `explain` (name and predictions.json)."""
    import json

    from .view.report import method_label

    predictions = map_path.parent / "predictions.json"
    stem = map_path.name.split(".")[0]
    method, _, name = stem.partition("_")
    if not name:
        return None
    title = f"{method_label(method)} · class {name}"
    try:
        record = json.loads(predictions.read_text())
        from .explain.explanation import safe_name

        names = [safe_name(c) for c in record["class_names"]]
        title += f" · p = {record['probabilities'][names.index(name)]:.2f}"
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return title


def render_path(out, map_path) -> Path:
    """``render --out``: a .png file, or a folder (existing, or written with a trailing slash) that
    gets ``<map name>.png``; any other suffix is refused (the picture is always a PNG)."""
    text = str(out)
    out = Path(out)
    if out.is_dir() or text.endswith(("/", os.sep)):
        name = Path(map_path).name
        for suffix in (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return out / f"{name}.png"
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: render writes a PNG picture; give --out a name ending in .png "
                         "(or a folder)")
    return out


def parse_point(text: str):
    """``--at x,y,z`` (LPS mm) -> three floats."""
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise InputError(f"--at {text!r}: give three numbers x,y,z in mm (LPS), e.g. --at -40,10,-120")
    return values


def cmd_demo(args) -> int:
    from .demo import run_demo

    guard_outputs(folders=[args.out])
    run_demo(out_dir=args.out, device=args.device, progress=progress, shared_scale=args.shared_scale,
             at=parse_point(args.at) if args.at else None)
    return 0


def cmd_train_demo(args) -> int:
    from .models.demo_model import MODELS_DIR, train_demo_model

    if args.out.resolve() == Path(MODELS_DIR).resolve():
        raise InputError(f"{args.out}: is the folder of the shipped demo model; train into another folder "
                         "and copy the files there yourself if you mean to replace it")
    guard_outputs(folders=[args.out])
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
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale for every method of a class (default: each map's own maximum)")
    p.add_argument("--at", metavar="X,Y,Z", help="slice every picture through this LPS point (mm)")
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
    p.add_argument("--json", type=Path, help="write rows as JSON")
    p.add_argument("--csv", type=Path, help="write rows as CSV")
    p.set_defaults(func=cmd_evaluate)

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

    p = sub.add_parser("train-demo", help="re-train the shipped demo classifier from a seed")
    p.add_argument("--out", type=Path, default=Path("retrained-demo-model"),
                   help="output folder (default: retrained-demo-model; never the shipped Resources/Models)")
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
