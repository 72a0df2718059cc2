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
    from .explainers.explanation import explain, safe_name
    from .io.volume import read_volume
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loading import load_classifier

    model_path = Path(args.model)
    inputs = [args.ct, args.card, model_path if model_path.exists() else None]
    if model_path.is_file():
        inputs.append(model_path.with_suffix(".json"))  # the card beside the weights
    guard_outputs(inputs, files=[args.out / "predictions.json"], folders=[args.out])
    if bool(args.dicomweb) != bool(args.study) or (args.push and not args.dicomweb) or \
            bool(args.dicomweb) == bool(args.ct):
        raise InputError("give a CT, or --dicomweb URL with --study UID (and --push only with --dicomweb)")
    if args.dicomweb:  # PACS in: pull the study's CT series through a temporary folder (io/dicomweb.py)
        from .io.dicomweb import read_study_ct
        ct, source = read_study_ct(args.dicomweb, args.study, series=args.series, note=progress)
    else:
        ct = read_volume(args.ct, series=args.series, note=progress)
    progress(f"loading model {args.model}")
    classifier = load_classifier(args.model, card=args.card, arch=args.arch, device=args.device)
    methods = args.method or ["hirescam", "gradcam"]

    def map_files(classes):
        return [args.out / f"{m}_{safe_name(c)}.nrrd" for m in methods for c in classes]

    if classifier.class_names:  # names known from the card: check them before the forward pass
        guard_outputs(inputs, files=map_files(classifier.class_names))
    result = explain(classifier, ct, methods=methods, classes=args.target_class, layer=args.layer,
                     progress=progress, settings=estimator_settings(args))
    guard_outputs(inputs, files=map_files(result.classes))
    written = result.save(args.out)
    if args.dicom_out or args.push:  # PACS out: Parametric Maps + SEG (io/dicom_out.py), pushed with --push
        from .io import dicom_out
        if not args.dicomweb:
            source = dicom_out.DicomSource.from_folder(args.ct, args.series) if Path(args.ct).is_dir() \
                else dicom_out.DicomSource.standalone(ct)
        objects = dicom_out.write_saliency(result.maps, args.dicom_out or args.out / "dicom", source)
        written += objects
        if args.push:
            from .io.dicomweb import push
            push(args.dicomweb, objects)
            progress(f"stored {len(objects)} objects in study {source.study_uid} on {args.dicomweb}")
    for path in written:
        print(path)
    return 0


def cmd_evaluate(args) -> int:
    from .scoring.metrics import evaluate
    from .io.segments import read_segments
    from .io.volume import read_volume

    from .scoring.consistency import check_same_body

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
    handed = [ct]  # evaluate gets the only reference, so it can free the CT once the region is made
    del ct
    table = evaluate(saliency, segments, region=region, threshold=args.threshold, ct=handed.pop(), note=progress)
    if args.json:
        table.write_json(args.json)
        progress(f"wrote {args.json}")
    if args.csv:
        table.write_csv(args.csv)
        progress(f"wrote {args.csv}")
    print(table.format())
    return 0


def cmd_compare(args) -> int:
    from .workflows.compare import compare_estimators
    from .io.segments import read_segments
    from .io.volume import read_volume
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loading import load_classifier
    from .view.compare_page import write_compare_report

    guard_outputs([args.ct, args.masks, args.model, args.card], files=[args.json, args.csv], folders=[args.out])
    ct = read_volume(args.ct)
    segments = read_segments(args.masks, reference=ct, note=progress)
    progress(f"loading model {args.model}")
    classifier = load_classifier(args.model, card=args.card, arch=args.arch, device=args.device)
    methods = args.method or ["hirescam", "gradcam", "gradient", "smoothgrad", "ig"]
    result = compare_estimators(classifier, ct, segments, args.target_class, methods=methods, segment=args.segment,
                                settings=estimator_settings(args), steps=args.fidelity_steps,
                                replacement=args.replacement, blur_mm=args.blur_mm, seed=args.seed,
                                progress=progress)
    if args.json:
        result.write_json(args.json)
        progress(f"wrote {args.json}")
    if args.csv:
        result.write_csv(args.csv)
        progress(f"wrote {args.csv}")
    if args.out:
        page = write_compare_report(result, ct, segments.masks[result.segment], args.out)
        progress(f"wrote {page}")
    print(result.format())
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
        from .scoring.consistency import check_same_body

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
        from .explainers.explanation import safe_name

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
    guard_outputs(folders=[args.out])
    if args.shortcut:
        from .workflows.shortcut import run_shortcut_demo

        run_shortcut_demo(out_dir=args.out, device=args.device, progress=progress)
        return 0
    from .workflows.demo import run_demo

    run_demo(out_dir=args.out, device=args.device, progress=progress, shared_scale=args.shared_scale,
             at=parse_point(args.at) if args.at else None)
    return 0


def cmd_train(args) -> int:
    import json

    from .training.loop import train

    _refuse_shipped_models(args.out)
    guard_outputs([args.manifest, args.card], folders=[args.out])
    if bool(args.card) == bool(args.arch):
        raise InputError("give the network either as --card CARD.json (with an architecture) or as --arch "
                         "NAME/JSON with --size and --window")
    card = args.card
    if args.arch:
        from .models.loading import _parse_arch

        card = {"name": args.name or "model", "classes": args.classes, "multilabel": True,
                "input": {"size": args.size, "spacing": None, "window": args.window, "channels": 1},
                "target_layer": args.layer, "architecture": _parse_arch(args.arch)}
    try:
        class_organs = json.loads(args.class_organs) if args.class_organs else None
    except json.JSONDecodeError as err:
        raise InputError(f"--class-organs is not valid JSON ({err.msg}); give e.g. "
                         '\'{"kidney": ["kidney_left", "kidney_right"]}\'') from None
    result = train(args.manifest, args.out, card, mask_loss_lambda=args.mask_loss, target_layer=args.layer,
                   dilation_mm=args.dilate_mm, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.lr, patience=args.patience, seed=args.seed, max_degrees=args.rotate,
                   flip_axes=tuple(args.flip_axis or ()), class_organs=class_organs, device=args.device,
                   name=args.name, progress=progress)
    for key in ("weights", "card", "export"):
        if result[key]:
            print(result[key])
    return 0


def cmd_train_shortcut(args) -> int:
    from .workflows.shortcut import TRAINING, shortcut_cohort, train_shortcut_models

    _refuse_shipped_models(args.out)
    guard_outputs([args.manifest], folders=[args.out] + ([] if args.manifest else [args.cohort]))
    manifest = args.manifest or shortcut_cohort(args.cohort, TRAINING["n_cases"], seed=TRAINING["cohort_seed"],
                                                progress=progress)
    results = train_shortcut_models(manifest, args.out, progress=progress)
    for result in results.values():
        print(result["weights"])
    return 0


def cmd_train_demo(args) -> int:
    from .models.demo_model import train_demo_model

    _refuse_shipped_models(args.out)
    guard_outputs(folders=[args.out])
    result = train_demo_model(out_dir=args.out, seed=args.seed, progress=progress)
    print(result["weights"])
    print(result["card"])
    return 0


def _refuse_shipped_models(out) -> None:
    """Training never writes into the shipped Resources/Models (it would silently replace them)."""
    from .models.demo_model import MODELS_DIR

    if Path(out).resolve() == Path(MODELS_DIR).resolve():
        raise InputError(f"{out}: is the folder of the shipped demo model (and the shortcut models); train "
                         "into another folder and copy the files there yourself if you mean to replace them")


def add_estimator_options(p) -> None:
    """The gradient/perturbation estimators' settings (explain, compare)."""
    g = p.add_argument_group("estimator settings (gradient, smoothgrad, ig, occlusion, xrai3d, …)")
    g.add_argument("--noise", type=float, default=0.15, help="SmoothGrad sigma as a fraction of the input range")
    g.add_argument("--samples", type=int, default=25, help="SmoothGrad/VarGrad noisy samples")
    g.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    g.add_argument("--baseline", default="air", help="IG/occlusion baseline: air (-1000 HU), min, blur")
    g.add_argument("--occlusion-mm", type=float, nargs=2, default=(50.0, 50.0), metavar=("WINDOW", "STRIDE"),
                   help="occlusion window and stride in mm")
    g.add_argument("--memory-gb", type=float, default=2.0, help="memory budget for one batch of steps/samples")
    g.add_argument("--seed", type=int, default=0, help="noise seed")


def estimator_settings(args) -> dict:
    return {"noise": args.noise, "samples": args.samples, "steps": args.steps, "baseline": args.baseline,
            "occlusion_window_mm": args.occlusion_mm[0], "occlusion_stride_mm": args.occlusion_mm[1],
            "memory_gb": args.memory_gb, "seed": args.seed}


def cmd_batch(args) -> int:
    from .workflows.batch import batch

    guard_outputs([args.manifest, args.model, args.card], folders=[args.out])
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    result = batch(args.manifest, args.model, args.out, methods=args.method or ["hirescam", "gradcam"],
                   classes=args.target_class or "all", keep_maps=args.keep_maps, card=args.card, arch=args.arch,
                   device=args.device, threshold=args.threshold, workers=args.workers, ray=args.ray,
                   resamples=args.resamples, seed=args.seed, progress=True)
    for key in ("cohort_csv", "cohort_json", "report"):
        print(result.files[key])
    if result.exit_code:
        print(f"{PROG}: every case failed; see {result.files['errors']}", file=sys.stderr)
    return result.exit_code


def cmd_trust(args) -> int:
    from .io.segments import read_segments
    from .io.volume import read_volume
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loading import load_classifier
    from .workflows.trust import run_trust

    guard_outputs([args.ct, *args.model, *(args.card or []), args.masks, args.fixations, *(args.cohort or []),
                   *(args.cohort_masks or [])], folders=[args.out])
    ct = read_volume(args.ct)
    cards = args.card or []
    models = []
    for n, source in enumerate(args.model):
        progress(f"loading model {source}")
        models.append(load_classifier(source, card=cards[n] if n < len(cards) else None, arch=args.arch,
                                      device=args.device))
    masks = read_segments(args.masks, reference=ct, note=progress) if args.masks else None
    cohort_masks = args.cohort_masks or []
    if cohort_masks and len(cohort_masks) != len(args.cohort or []):
        raise InputError(f"--cohort-masks: give one per --cohort CT ({len(args.cohort or [])}), got {len(cohort_masks)}")
    cohort = None
    if args.cohort:
        cohort = []
        for n, path in enumerate(args.cohort):
            case_ct = read_volume(path)
            seg = read_segments(cohort_masks[n], reference=case_ct, note=progress) if cohort_masks else None
            cohort.append((case_ct, seg))
    result = run_trust(ct, models, methods=args.method or ["hirescam", "gradcam"], class_name=args.target_class,
                       masks=masks, segment=args.segment, fixations=args.fixations,
                       fixations_space=args.fixations_space, sigma_mm=args.sigma_mm, out_dir=args.out,
                       mode=args.mode, seed=args.seed, cohort=cohort, layer=args.layer,
                       randomize=not args.skip_randomization, progress=progress)
    print(result.card.format())
    print(result.json_path)
    print(result.report)
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
    p.add_argument("--shortcut", action="store_true",
                   help="the shortcut demonstration: shipped models trained without / with the mask loss "
                        "on a marker-confounded cohort, measured on an unconfounded test split")
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
    p.add_argument("--model", required=True, help=".pt2 export, MONAI bundle folder, state dict (with --arch) or 'demo'")
    p.add_argument("--card", help="model card JSON when it is not beside the model")
    p.add_argument("--arch", help="architecture for a state dict, e.g. 'DenseNet121' or a JSON spec")
    p.add_argument("--method", action="append",
                   help="CAMs: hirescam, gradcam, gradcampp; gradient-based: gradient, inputxgradient, smoothgrad, "
                        "smoothgrad_sq, vargrad, ig, guided_gradcam; perturbation: occlusion, xrai3d "
                        "(repeatable; default hirescam and gradcam)")
    p.add_argument("--class", dest="target_class", default="all", help="class name or index, or 'all'")
    p.add_argument("--layer", help="target layer (module name); default: the card's, else the last spatial layer")
    p.add_argument("--out", type=Path, default=Path("saliency-output"), help="output folder")
    p.add_argument("--device", **device)
    add_estimator_options(p)
    p.add_argument("--series", metavar="UID", help="for a DICOM folder: the SeriesInstanceUID to use "
                   "(default: the CT series with the most slices)")
    p.add_argument("--dicom-out", type=Path, metavar="DIR", help="also write each map as a DICOM Parametric Map "
                   "and the top-5%% maps as a DICOM SEG there (needs the 'dicom' extra)")
    p.add_argument("--dicomweb", metavar="URL", help="pull the CT from this DICOMweb server ("
                   "credentials from SALIENCY_DICOMWEB_TOKEN or SALIENCY_DICOMWEB_USER/PASSWORD)")
    p.add_argument("--study", metavar="UID", help="with --dicomweb: the StudyInstanceUID")
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
    p.add_argument("--json", type=Path, help="write rows as JSON")
    p.add_argument("--csv", type=Path, help="write rows as CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="estimators side by side on one case: agreement with a mask, region Dice, "
                                       "fidelity, time")
    p.add_argument("ct", help="CT volume")
    p.add_argument("--model", required=True, help=".pt2 export, MONAI bundle folder, state dict (with --arch) or 'demo'")
    p.add_argument("--card", help="model card JSON when it is not beside the model")
    p.add_argument("--arch", help="architecture for a state dict")
    p.add_argument("--masks", required=True, help=".seg.nrrd or labelmap holding the lesion/organ mask")
    p.add_argument("--segment", help="the segment to score against (default: the only one, or the one named like the class)")
    p.add_argument("--class", dest="target_class", required=True, help="class name or index")
    p.add_argument("--method", action="append", help="estimator (repeatable; default hirescam gradcam gradient smoothgrad ig)")
    p.add_argument("--fidelity-steps", type=int, default=20, help="deletion/LIF steps (p = 0 … 100 %%)")
    p.add_argument("--replacement", default="blur", help="fidelity replacement: air, mean, blur, impute")
    p.add_argument("--blur-mm", type=float, default=10.0, help="sigma of the blur replacement (mm)")
    p.add_argument("--json", type=Path, help="write the table, rankings and curves as JSON")
    p.add_argument("--csv", type=Path, help="write the table with ranks as CSV")
    p.add_argument("--out", type=Path, help="folder for compare.html and its pictures")
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
    p.add_argument("--model", required=True, help=".pt2 export, MONAI bundle folder, state dict (with --arch) or 'demo'")
    p.add_argument("--card", help="model card JSON when it is not beside the model")
    p.add_argument("--arch", help="architecture for a state dict")
    p.add_argument("--method", action="append", help="hirescam, gradcam, gradcampp (repeatable; default hirescam and gradcam)")
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
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("trust", help="the trust card: localization, randomization, repeatability, gaze per method")
    p.add_argument("ct", help="CT volume: NRRD, NIfTI, MHA or a DICOM series folder")
    p.add_argument("--model", action="append", required=True,
                   help="a model as for explain; twice for repeatability (same architecture) or reproducibility")
    p.add_argument("--card", action="append", help="model card per --model, in the same order")
    p.add_argument("--arch", help="architecture for state dicts, e.g. 'DenseNet121'")
    p.add_argument("--method", action="append", help="hirescam, gradcam, gradcampp or a registered estimator (repeatable)")
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
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisations and samplers")
    p.add_argument("--layer", help="target layer for the CAMs (default: the card's)")
    p.add_argument("--out", type=Path, default=Path("trust-output"), help="output folder (trust.json, trust.html)")
    p.add_argument("--device", **device)
    p.set_defaults(func=cmd_trust)
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
