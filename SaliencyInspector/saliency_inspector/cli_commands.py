"""The CLI's sub-commands (``cmd_*``, one per sub-command of :mod:`.cli`'s parser): each guards its
outputs (:mod:`.cli_guard`), calls one library function and prints; progress goes to stderr so that
stdout stays for results."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .cli_guard import guard_outputs, refuse_shipped_models
from .errors import InputError
from .io.files import check_distinct_outputs

PROG = "saliency-inspector"


def progress(message: str) -> None:
    """Progress lines go to stderr so that stdout stays for results."""
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)


def load_model(source, card, arch, device):
    """The classifier of ``--model/--card/--arch/--device`` (the shipped models registered first)."""
    from .models import demo_model  # noqa: F401 - registers the "demo" model source and architecture
    from .models.loaders import load_classifier

    progress(f"loading model {source}")
    return load_classifier(source, card=card, arch=arch, device=device)


def write_tables(result, json_path, csv_path) -> None:
    """``--json`` / ``--csv``: write the result's table where asked and say so."""
    if json_path:
        result.write_json(json_path)
        progress(f"wrote {json_path}")
    if csv_path:
        result.write_csv(csv_path)
        progress(f"wrote {csv_path}")


PHANTOM_FILES = ("ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd", "case.json")


def cmd_phantom(args) -> int:
    from .synth.phantom import make_phantom, write_phantom_case

    size = tuple(args.size) if args.size else None
    guard_outputs(files=[args.out / n for n in PHANTOM_FILES], folders=[args.out])
    progress(f"making phantom (seed {args.seed})")
    case = make_phantom(seed=args.seed, size=size, lesions=args.lesion, oblique=args.oblique,
                        lesion_scale=args.lesion_scale, progress=progress)
    paths = write_phantom_case(case, args.out, progress=progress)
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
    from .cli import estimator_settings
    from .explainers.explanation import explain
    from .io.names import safe_name
    from .io.volume import read_volume

    model_path = Path(args.model)
    inputs = [args.ct, args.card, model_path if model_path.exists() else None]
    if model_path.is_file():
        inputs.append(model_path.with_suffix(".json"))  # the card beside the weights
    guard_outputs(inputs, files=[args.out / "predictions.json"], folders=[args.out, args.dicom_out])
    if bool(args.dicomweb) != bool(args.study) or (args.push and not args.dicomweb) or \
            bool(args.dicomweb) == bool(args.ct):
        raise InputError("give a CT, or --dicomweb URL with --study UID (and --push only with --dicomweb)")
    geometry = {}  # how an irregular DICOM series was put on an even grid: into predictions.json
    if args.dicomweb:  # PACS in: pull the study's CT series through a temporary folder (io/dicomweb.py)
        from .io.dicomweb import read_study_ct
        ct, source = read_study_ct(args.dicomweb, args.study, series=args.series, note=progress,
                                   strict_geometry=args.strict_geometry, provenance=geometry)
    else:
        ct = read_volume(args.ct, series=args.series, note=progress, strict_geometry=args.strict_geometry,
                         provenance=geometry)
    classifier = load_model(args.model, args.card, args.arch, args.device)
    methods = args.method or ["hirescam", "gradcam"]

    def map_files(classes):
        return [args.out / f"{m}_{safe_name(c)}.nrrd" for m in methods for c in classes]

    if classifier.class_names:  # names known from the card: check them before the forward pass
        guard_outputs(inputs, files=map_files(classifier.class_names))
    result = explain(classifier, ct, methods=methods, classes=args.target_class, layer=args.layer,
                     progress=progress, settings=estimator_settings(args))
    guard_outputs(inputs, files=map_files(result.classes))
    written = result.save(args.out)
    if geometry:
        import json

        record = json.loads((args.out / "predictions.json").read_text())
        (args.out / "predictions.json").write_text(json.dumps({**record, "ct_geometry": geometry}, indent=2) + "\n")
    if args.dicom_out or args.push:  # PACS out: Parametric Maps + SEG + SR (io/dicom_case.py), pushed with --push
        from .io.dicom_case import source_for, write_case_dicom
        if not args.dicomweb:
            source = source_for(ct, args.ct, args.series)
        record = result.predictions()
        objects = write_case_dicom(args.dicom_out or args.out / "dicom", source, maps=result.maps,
                                   predictions=[{"class": c, "probability": p} for c, p in
                                                zip(record["class_names"], record["probabilities"])])
        written += objects
        if args.push:
            from .io.dicomweb import push
            push(args.dicomweb, objects)
            progress(f"stored {len(objects)} objects in study {source.study_uid} on {args.dicomweb}")
    for path in written:
        print(path)
    return 0


def map_importance(path, given=None) -> tuple:
    """(importance, why) of a map file: ``given`` (``--importance``), else its method's declared
    one (the file name ``<method>_<class>.nrrd``, checked against a ``predictions.json`` beside it
    when there is one), else ReLU(map)."""
    from .explainers.registry import get_method, method_in_file_name

    if given:
        return given, f"ranking voxels by {given} (--importance)"
    method = method_in_file_name(path)
    beside = Path(path).parent / "predictions.json"
    if method and beside.is_file():
        try:
            listed = json.loads(beside.read_text()).get("methods")
        except (ValueError, OSError, AttributeError):
            listed = None
        if isinstance(listed, list) and method not in listed:
            method = None  # the name looks like a method's, but that run did not make one
    if method is None:
        return "relu", ("the map's method is not known from its file name; ranked by ReLU(map) "
                        "(give --importance abs|signed for a gradient or signed map)")
    importance = get_method(method).importance
    return importance, f"{Path(path).name}: method {method}, ranked by its declared importance {importance}"


def cmd_evaluate(args) -> int:
    from .scoring.evaluation import evaluate
    from .io.segments import read_segments
    from .io.volume import read_volume

    from .scoring.consistency import check_same_body

    guard_outputs([args.map, args.masks, args.ct, args.names, args.region_masks], files=[args.json, args.csv],
                  folders=[args.dicom_out])

    check_distinct_outputs({'--json': args.json, '--csv': args.csv})
    if args.names and str(args.masks).lower().endswith((".seg.nrrd", ".seg.nhdr")):
        raise InputError(f"--names {args.names}: names the labels of a labelmap, and {args.masks} is a .seg.nrrd "
                         "whose segments carry their own names; leave --names out")
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
    importance, why = map_importance(args.map, args.importance)
    table = evaluate(saliency, segments, region=region, threshold=args.threshold, ct=handed.pop(), note=progress,
                     importance=importance)
    progress(why)
    write_tables(table, args.json, args.csv)
    if args.dicom_out:  # the map, the masks and the scores for a PACS (io/dicom_case.py)
        _evaluate_dicom(args, saliency, segments, table)
    print(table.format())
    return 0


def _evaluate_dicom(args, saliency, segments, table) -> None:
    """``evaluate --dicom-out``: the map as a Parametric Map, the masks (on the map's grid) as SEG and
    the rows as an SR; the CT's series is referenced when ``--ct`` is a DICOM folder on the map's grid."""
    from .io.dicom_case import source_for, write_case_dicom
    from .io.volume import read_volume
    from .scoring.metrics import METRICS

    method, _, name = Path(args.map).name.split(".")[0].partition("_")  # explain's <method>_<class>.nrrd
    method, name = (method, name) if name else ("map", method)
    ct_dicom = args.ct is not None and Path(args.ct).is_dir() and read_volume(args.ct).same_grid(saliency)
    source = source_for(saliency, args.ct if ct_dicom else None)
    rows = [{"method": method, "class": name, **row} for row in table.to_records()]
    paths = write_case_dicom(args.dicom_out, source, maps={(method, name): saliency},
                             segments=segments.resampled_to(saliency), rows=rows, metrics=METRICS)
    progress(f"wrote {len(paths)} DICOM objects into {args.dicom_out}")


def cmd_compare(args) -> int:
    from .cli import estimator_settings
    from .io.segments import read_segments
    from .io.volume import read_volume
    from .view.compare_page import write_compare_report
    from .workflows.compare import compare_estimators

    guard_outputs([args.ct, args.masks, args.model, args.card], files=[args.json, args.csv], folders=[args.out])

    check_distinct_outputs({'--json': args.json, '--csv': args.csv})
    ct = read_volume(args.ct)
    segments = read_segments(args.masks, reference=ct, note=progress)
    classifier = load_model(args.model, args.card, args.arch, args.device)
    methods = args.method or ["hirescam", "gradcam", "gradient", "smoothgrad", "ig"]
    result = compare_estimators(classifier, ct, segments, args.target_class, methods=methods, segment=args.segment,
                                settings=estimator_settings(args), steps=args.fidelity_steps,
                                replacement=args.replacement, blur_mm=args.blur_mm, seed=args.seed,
                                progress=progress, allow_mismatch=args.allow_mismatch,
                                quantus=getattr(args, "quantus", False))
    write_tables(result, args.json, args.csv)
    if args.out:
        page = write_compare_report(result, ct, segments.masks[result.segment], args.out)
        progress(f"wrote {page}")
    print(result.format())
    return 0


def parse_point(text: str):
    """``--at x,y,z`` (LPS mm) -> three floats."""
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--at {text!r}: give three finite numbers x,y,z in mm (LPS), e.g. --at -40,10,-120")
    return values


def cmd_demo(args) -> int:
    guard_outputs(folders=[args.out, args.dicom_out])
    if args.dicom_out and args.shortcut:
        raise InputError("--dicom-out writes the main demo's case; leave it out with --shortcut")
    if args.shortcut:
        from .workflows.shortcut import run_shortcut_demo

        run_shortcut_demo(out_dir=args.out, device=args.device, progress=progress)
        return 0
    from .workflows.demo import run_demo

    result = run_demo(out_dir=args.out, device=args.device, progress=progress, shared_scale=args.shared_scale,
                      at=parse_point(args.at) if args.at else None)
    if args.dicom_out:
        from .workflows.demo_dicom import write_demo_dicom

        paths = write_demo_dicom(result, args.dicom_out)
        progress(f"wrote {len(paths)} DICOM objects into {args.dicom_out}")
    return 0


def cmd_train(args) -> int:
    import json

    from .training.loop import train

    refuse_shipped_models(args.out)
    guard_outputs([args.manifest, args.card], folders=[args.out])
    if bool(args.card) == bool(args.arch):
        raise InputError("give the network either as --card CARD.json (with an architecture) or as --arch "
                         "NAME/JSON with --size and --window")
    card = args.card
    if args.arch:
        from .models.card import parse_arch

        card = {"name": args.name or "model", "classes": args.classes, "multilabel": True,
                "input": {"size": args.size, "spacing": None, "window": args.window, "channels": 1},
                "target_layer": args.layer, "architecture": parse_arch(args.arch)}
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

    refuse_shipped_models(args.out)
    guard_outputs([args.manifest], folders=[args.out] + ([] if args.manifest else [args.cohort]))
    manifest = args.manifest or shortcut_cohort(args.cohort, TRAINING["n_cases"], seed=TRAINING["cohort_seed"],
                                                progress=progress)
    results = train_shortcut_models(manifest, args.out, progress=progress)
    for result in results.values():
        print(result["weights"])
    return 0


def cmd_train_demo(args) -> int:
    from .training.demo_recipe import train_demo_model

    refuse_shipped_models(args.out)
    guard_outputs(folders=[args.out])
    result = train_demo_model(out_dir=args.out, seed=args.seed, progress=progress,
                              shuffle_labels=getattr(args, "shuffle_labels", False), arch=args.arch,
                              mask_fraction=args.mask_fraction, workers=2)  # phantoms made in 2 processes
    print(result["weights"])
    print(result["card"])
    return 0


def cmd_batch(args) -> int:
    from .workflows.batch import batch

    guard_outputs([args.manifest, args.model, args.card], folders=[args.out])
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    result = batch(args.manifest, args.model, args.out, methods=args.method or ["hirescam", "gradcam"],
                   classes=args.target_class or "all", keep_maps=args.keep_maps, card=args.card, arch=args.arch,
                   device=args.device, threshold=args.threshold, workers=args.workers, ray=args.ray,
                   resamples=args.resamples, seed=args.seed, progress=True, dicom_out=args.dicom_out,
                   dicomweb=args.dicomweb, push=args.push)
    for key in ("cohort_csv", "cohort_json", "report"):
        print(result.files[key])
    if result.exit_code:
        what = "a push failed" if result.push_failed and len(result.failed) < result.total else "every case failed"
        print(f"{PROG}: {what}; see {result.files['errors']}", file=sys.stderr)
    return result.exit_code


def cmd_self_explaining(args) -> int:
    from .workflows.self_explaining import run_self_explaining

    guard_outputs([m for m in args.models if Path(m).exists()], folders=[args.out])
    done = run_self_explaining(args.models, args.out, n_cases=args.cases, steps=args.fidelity_steps, seed=args.seed,
                               threshold=args.threshold, device=args.device, progress=progress)
    print(done["table"])
    print("\n".join(str(p) for p in done["files"]))
    return 0


def cmd_trust(args) -> int:
    from .io.segments import read_segments
    from .io.volume import read_volume
    from .workflows.trust import run_trust

    guard_outputs([args.ct, *args.model, *(args.card or []), args.masks, args.fixations, *(args.cohort or []),
                   *(args.cohort_masks or []), args.shuffled_model], folders=[args.out])
    ct = read_volume(args.ct)
    cards = args.card or []
    models = []
    for n, source in enumerate(args.model):
        models.append(load_model(source, cards[n] if n < len(cards) else None, args.arch, args.device))
    shuffled = load_model(args.shuffled_model, None, args.arch, args.device) if args.shuffled_model else None
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
                       randomize=not args.skip_randomization, progress=progress,
                       allow_mismatch=args.allow_mismatch, shuffled_model=shuffled)
    print(result.card.format())
    print(result.json_path)
    print(result.report)
    return 0
