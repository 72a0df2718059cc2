"""`saliency-inspector batch`: one inspection per manifest case, then the cohort's tables and page.

    result = si.batch("cohort/manifest.csv", model="demo", out_dir="runs/a", workers=2)

Per case (:mod:`.case`, run by an executor of :mod:`.executors`): explain every requested class,
score every map against the case's organ and lesion masks, write ``cases/<id>/`` (``result.json``,
``predictions.json``, ``report.html``, maps per ``keep_maps``). Then, over all cases in manifest
order: ``per_case.csv`` (one row per case, method, class, segment), ``predictions.csv``,
``errors.csv``, ``cohort.csv`` / ``cohort.json`` (bootstrap intervals, :mod:`.stats`, of the mask
metrics and of the mask-only map-quality metrics of :mod:`..scoring.quality`), the model's
ROC AUC per class (``model_auc.csv``), the methods compared pairwise across cases
(``method_tests.csv``: paired Wilcoxon, Holm-corrected, rank-biserial effect), ``report.html`` and
``batch.json`` (settings and summary); with a ``fixations`` column, the readers' gaze per case and
over the cohort (``gaze_per_case.csv``, ``gaze_cohort.csv``; :mod:`..cohort.gaze`).

Resumable: a case whose ``result.json`` carries the same inputs-and-settings key is skipped;
failed cases are tried again on the next run. Fault-isolated: a failing case is an error row with
its one-line reason, the others go on. Exit status at the CLI: 0 (a warning when some cases
failed), 1 when every case failed, 2 for bad input found before any work.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.records import write_csv, write_json
from ..cohort.case import KEEP_MAPS, BatchSettings, CaseJob, case_folder, finished_result
from ..cohort.stats import (AUC_KEYS, COMPARISON_KEYS, RESAMPLES, STAT_KEYS, cohort_statistics,
                            method_comparisons, model_auc)

# metrics summarised over the cohort (the registry's keys), and the ones the cohort page plots
PLOTTED_METRICS = ("roc_auc", "mass_in_mask", "pointing_game", "dice")


@dataclass
class BatchResult:
    """What a batch run did: case ids computed now, skipped (done before), failed (id -> reason)."""

    out_dir: Path
    computed: list
    skipped: list
    failed: dict
    seconds: float
    files: dict = field(default_factory=dict)
    stats: list = field(default_factory=list)
    auc: list = field(default_factory=list)
    push_failed: dict = field(default_factory=dict)  # case id -> why its DICOM objects are not on the server

    @property
    def total(self) -> int:
        return len(self.computed) + len(self.skipped) + len(self.failed)

    @property
    def exit_code(self) -> int:
        """0, or 1 when every case failed or a push failed."""
        return 1 if (self.failed and len(self.failed) == self.total) or self.push_failed else 0

    def summary(self) -> str:
        return (f"{len(self.computed)} done, {len(self.skipped)} skipped (already done), "
                f"{len(self.failed)} failed, of {self.total} cases in {self.seconds:.1f} s")


def batch(manifest, model, out_dir, *, methods=("hirescam", "gradcam"), classes="all", keep_maps: str = "none",
          card=None, arch=None, device: str = "auto", threshold: str = "topk", region: str = "auto",
          workers: int | None = None, ray: str | None = None, executor=None, resamples: int = RESAMPLES,
          seed: int = 0, progress=True, on_result=None, dicom_out: bool = False, dicomweb: str | None = None,
          push: bool = False) -> BatchResult:
    """Inspect every case of a manifest and write the cohort tables; returns a :class:`BatchResult`.

    ``manifest``: CSV or JSON-lines path (:func:`~saliency_inspector.io.manifest.read_manifest`);
    ``model``/``card``/``arch``/``device``: as for ``load_classifier``; ``methods``, ``classes``
    ("all" or names): as for ``explain``; ``keep_maps``: ``none``, ``feature`` (raw maps on their
    feature grid, small) or ``ct`` (maps on the CT grid); ``threshold``/``region``: as for
    ``evaluate``. Where it runs: ``executor`` (any object with ``run(cases, job)``), else
    ``ray`` (an address, "auto" or "local") or ``workers`` local processes (1: this process).
    ``resamples``/``seed``: the bootstrap. ``progress``: True for a progress bar on stderr, False
    for none, or a callable taking one-line messages. ``on_result(result)`` is called in this
    process after each computed case. Bad input (manifest, methods, options) raises InputError
    before any case starts.

    PACS: ``dicom_out`` writes each case's maps, masks and scores as DICOM into ``cases/<id>/dicom/``;
    ``dicomweb`` (a URL) makes the manifest's rows studies on that server (a ``study_uid`` column,
    optional ``series_uid``, instead of ``ct``; their resume key holds the series' instance UIDs);
    ``push`` stores each case's objects in its study as it finishes, retried a few times with back-off;
    a push that still fails is an ``errors.csv`` row (the case's scores are kept, ``pushes.csv`` lists
    every push) and the case is computed and pushed again on the next run.
    """
    from ..explainers.registry import METHODS
    from ..scoring.thresholds import parse_threshold
    from ..io.manifest import read_manifest
    from ..cohort.executors import make_executor
    from ..cohort.lock import output_lock

    start = time.perf_counter()
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    # the cohort workflow runs the CAMs and the model's own maps (attention: one forward pass)
    cams = [n for n, m in METHODS.items() if m.is_cam or m.family == "model"]
    unknown = [m for m in methods if m not in cams]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(cams)}")
    if keep_maps not in KEEP_MAPS:
        raise InputError(f"--keep-maps {keep_maps!r}: choose one of {', '.join(KEEP_MAPS)}")
    parse_threshold(threshold)
    if not (isinstance(resamples, int) and resamples >= 100):
        raise InputError(f"resamples must be a whole number of at least 100, got {resamples!r}")
    classes = "all" if classes in (None, "all") or classes == ["all"] else \
        ((classes,) if isinstance(classes, str) else tuple(classes))
    if push and not dicomweb:
        raise InputError("--push stores the objects in each case's study on the DICOMweb server: give --dicomweb URL")
    # every problem of the manifest at once, before any work
    cohort = read_manifest(manifest, require=("study_uid",) if dicomweb else ("ct",))
    if dicomweb:
        from ..io.dicomweb import check_server

        check_server(dicomweb)  # a server that is down is one line now, not one error per case
        for case in cohort:
            case.source["dicomweb"] = dicomweb.rstrip("/")
    settings = BatchSettings(model=str(model), methods=methods, classes=classes, card=card and str(card),
                             arch=arch, keep_maps=keep_maps, threshold=threshold, region=region, device=device,
                             dicom_out=bool(dicom_out), dicomweb=dicomweb and dicomweb.rstrip("/"), push=bool(push))
    out = Path(out_dir)
    # an unusable model or a typo in --class must not fail 10,000 cases one by one: checked on the
    # driver before the first case — unless every case is already done (a resume loads no model)
    if any(finished_result(out, case, settings.fingerprint()) is None for case in cohort):
        _check_model(settings)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give --out a folder")
    if out.resolve() in Path(manifest).resolve().parents:  # the user's files are never overwritten
        raise InputError(f"--out {out} holds the manifest; give a separate output folder (batch writes "
                         "cohort.json, report.html and cases/ there)")
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):  # a second run into this folder is refused, not run twice
        fingerprint = settings.fingerprint()
        job = CaseJob(settings, fingerprint, out.resolve())
        say = progress if callable(progress) else (_stderr if progress else (lambda message: None))

        done = {}
        todo = []
        for case in cohort:
            stored = finished_result(out, case, fingerprint)
            if stored is not None:
                done[case.case_id] = stored
            else:
                todo.append(case)
        skipped = list(done)
        say(f"{len(cohort)} cases: {len(skipped)} already done with these inputs and settings, {len(todo)} to run")

        executor = executor or make_executor(workers, ray)
        computed, failed = [], {}
        bar = _progress_bar(len(todo), progress is True)
        try:
            for result in executor.run(todo, job) if todo else ():
                case_id = result["case_id"]
                if result["status"] == "ok":
                    done[case_id] = result
                    computed.append(case_id)
                    failed.pop(case_id, None)
                    _say_push(say, result)
                else:
                    failed[case_id] = result["error"]
                    if bar is None:
                        say(f"case {case_id} failed: {result['error']}")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"failed {len(failed)}" if failed else "", refresh=False)
                if on_result is not None:
                    on_result(result)
        finally:
            if bar is not None:
                bar.close()
            if executor is not None and hasattr(executor, "close"):
                executor.close()

        seconds = time.perf_counter() - start
        result = BatchResult(out, computed, skipped, failed, seconds,
                             push_failed={k: r["push"]["error"] for k, r in done.items()
                                          if r.get("push", {}).get("status") == "failed"})
        result.files, result.stats, result.auc = write_cohort_tables(out, cohort, done, failed, settings,
                                                                     resamples=resamples, seed=seed)
        result.seconds = time.perf_counter() - start
        write_json(out / "batch.json", {"settings": asdict(settings), "fingerprint": fingerprint,
                                        "manifest": str(Path(manifest).resolve()), "summary": result.summary(),
                                        "computed": computed, "skipped": skipped, "failed": failed,
                                        "resamples": resamples, "seed": seed}, indent=1)
        say(result.summary())
        if failed and not (failed and len(failed) == result.total):
            say(f"warning: {len(failed)} case(s) failed; their reasons are in {out / 'errors.csv'}")
        if result.push_failed:
            say(f"warning: the DICOM objects of {len(result.push_failed)} case(s) are not on the server; see "
                f"{out / 'errors.csv'} (the next run pushes them again)")
        return result


def _check_model(settings: BatchSettings) -> None:
    """The model loads, answers a blank input of its card's size (when the card fixes one) and has
    the requested classes: loaded once here, on the driver, before the first case (InputError)."""
    from ..explainers.explanation import select_classes
    from ..cohort.case import load_model

    classifier = load_model(settings)
    size = classifier.card.input.size
    if size is not None:
        import torch

        try:
            classifier.predict(torch.zeros((1, classifier.card.input.channels, *size)))
        except Exception as err:  # noqa: BLE001 - any failure here would fail every case
            raise InputError(f"--model {settings.model}: the model does not run on an input of its card's "
                             f"size {tuple(size)} ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    names = classifier.card.classes
    if settings.classes != "all" and names is not None:  # a card-less .pt2 names outputs 0..K-1 once run
        select_classes(names, list(settings.classes))


def write_cohort_tables(out: Path, cohort, done: dict, failed: dict, settings: BatchSettings,
                        resamples: int = RESAMPLES, seed: int = 0):
    """per_case.csv, predictions.csv, errors.csv, cohort.csv/json, model_auc.csv and report.html,
    from the cases' results in manifest order (so the tables do not depend on completion order)."""
    from ..scoring.metrics import METRICS, REFERENCE_KEYS
    from ..scoring.quality import MAP_KEYS, QUALITY_METRICS, SEGMENT_KEYS
    from ..view.cohort_report import write_cohort_report
    from ..cohort.case import CONTEXT_KEYS

    rows, predictions, errors, pushes = [], [], [], []
    for case in cohort:
        if case.case_id in done:
            rows += done[case.case_id]["rows"]
            predictions += done[case.case_id]["predictions"]
        elif case.case_id in failed:
            errors.append({"case_id": case.case_id, "ct": _where(case), "error": failed[case.case_id]})
        push = done.get(case.case_id, {}).get("push")
        if push:
            pushes.append({"case_id": case.case_id, "study_uid": case.source.get("study_uid", ""), **{
                k: push.get(k) for k in ("status", "attempts", "objects")}, "errors": " | ".join(push["errors"])})
            if push["status"] == "failed":
                errors.append({"case_id": case.case_id, "ct": _where(case), "error": push["error"]})
    metrics = list(METRICS)
    # the mask-only map-quality metrics (Quantus's localisation and complexity families) are columns
    # of every row beside the agreement metrics: summarised and tested the same way, direction from
    # their registry (scoring/quality.py)
    quality = [*SEGMENT_KEYS, *MAP_KEYS]
    metrics += quality
    stats = cohort_statistics(rows, predictions, metrics, resamples=resamples, seed=seed)
    auc = model_auc(predictions, resamples=resamples, seed=seed)
    scores = [m for m in metrics if m not in REFERENCE_KEYS]  # reference levels are equal for every method
    better = {**{k: m.higher_is_better for k, m in METRICS.items()},
              **{k: QUALITY_METRICS[k].higher_is_better for k in quality}}
    tests = method_comparisons(rows, scores, {k: better[k] for k in scores}, seed=seed)
    files = {
        "per_case": write_csv(out / "per_case.csv", rows,
                              ["case_id", "method", "class", "segment", *metrics, *CONTEXT_KEYS]),
        "predictions": write_csv(out / "predictions.csv", predictions,
                                 ["case_id", "class", "label", "probability", "logit", "predicted", "correct"]),
        "errors": write_csv(out / "errors.csv", errors, ["case_id", "ct", "error"]),
        "cohort_csv": write_csv(out / "cohort.csv", stats, list(STAT_KEYS)),
        "model_auc": write_csv(out / "model_auc.csv", auc, list(AUC_KEYS)),
        "method_tests": write_csv(out / "method_tests.csv", tests, list(COMPARISON_KEYS)),
    }
    from ..cohort.gaze import write_gaze_tables  # readers' gaze: the manifest's fixations column

    gaze_files, gaze_rows, gaze_notes = write_gaze_tables(
        out, [(c.case_id, case_folder(out, c.case_id) / done[c.case_id]["gaze"]["file"]) for c in cohort
              if c.case_id in done and done[c.case_id].get("gaze")], seed=seed, resamples=resamples)
    files.update(gaze_files)
    if settings.push:
        files["pushes"] = write_csv(out / "pushes.csv", pushes,
                                    ["case_id", "study_uid", "status", "attempts", "objects", "errors"])
    files["cohort_json"] = write_json(out / "cohort.json", {
        "cases": len(cohort), "done": len(done), "failed": len(failed), "resamples": resamples, "seed": seed,
        "confidence": 0.95, "interval": "percentile bootstrap of the mean over cases",
        "settings": asdict(settings), "statistics": stats, "model_auc": auc, "errors": errors,
        "gaze": {"statistics": gaze_rows, "notes": gaze_notes} if gaze_rows else None,
        "method_tests": tests, "method_test": "paired Wilcoxon signed-rank across cases (zeros dropped), "
        "Holm over the method pairs of each class, segment and metric, rank-biserial effect size",
        "metrics": {k: {"name": m.name, "meaning": m.meaning, "range": m.range,
                        "higher_is_better": m.higher_is_better} for k, m in METRICS.items()},
        "quality_metrics": {k: {"name": QUALITY_METRICS[k].label, "meaning": QUALITY_METRICS[k].meaning,
                                "family": QUALITY_METRICS[k].family, "per": QUALITY_METRICS[k].per,
                                "higher_is_better": QUALITY_METRICS[k].higher_is_better,
                                "follows": QUALITY_METRICS[k].source} for k in quality}}, indent=1)
    pages = {case.case_id: str(case_folder(out, case.case_id).relative_to(out) / "report.html")
             for case in cohort if case.case_id in done}
    files["report"] = write_cohort_report(
        out / "report.html", stats=stats, rows=rows, predictions=predictions, auc=auc, errors=errors, tests=tests,
        metrics=[m for m in PLOTTED_METRICS if m in METRICS], quality=quality, case_pages=pages, gaze=gaze_rows,
        title=f"SaliencyInspector cohort: {len(cohort)} cases, model {settings.model}")
    return files, stats, auc


def _where(case) -> str:
    """The case's CT for the tables: its file, or its study on the DICOMweb server."""
    return str(case.ct) if case.ct is not None else f"{case.source.get('dicomweb')} study {case.source.get('study_uid')}"


def _say_push(say, result: dict) -> None:
    push = result.get("push")
    if push and (push["status"] == "failed" or push["attempts"] > 1):
        say(f"case {result['case_id']}: " + (push["error"] if push["status"] == "failed" else
                                             f"pushed on attempt {push['attempts']} ({push['errors'][0]})"))


def _stderr(message: str) -> None:
    print(f"[saliency-inspector] {message}", file=sys.stderr, flush=True)


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar with ETA on stderr (None when disabled, nothing to do, or tqdm is missing)."""
    if not enabled or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="case", desc="cases", file=sys.stderr, dynamic_ncols=True)

