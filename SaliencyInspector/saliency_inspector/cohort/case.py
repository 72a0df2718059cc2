"""The work of one cohort case, knowing nothing of where it runs (this process, a pool, a Ray actor).

:func:`run_case` reads the case's CT and masks from the manifest's paths, explains it, scores every
map against the masks, writes the case's files and returns a small JSON-ready result (predictions
and metric rows, no arrays). ``result.json`` is written last and atomically (temporary file, then
rename): a case interrupted half-way has no ``result.json`` and is simply run again on resume.
A failing case returns ``status: "failed"`` with a one-line reason (and leaves ``error.json``)
instead of raising, so one bad CT does not stop a cohort.

A :class:`CaseWorker` loads the model once, on its first case, and keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.records import json_default

KEEP_MAPS = ("none", "feature", "ct")
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
FORMAT_VERSION = 3  # bump when per-case outputs change meaning: every case is recomputed
# per-case metric columns kept in the cohort tables (the registry's metrics plus the mask size)
CONTEXT_KEYS = ("mask_voxels", "threshold", "region", "importance", "note")


@dataclass(frozen=True)
class BatchSettings:
    """Everything that changes a case's numbers; its fingerprint decides whether a case is redone."""

    model: str
    methods: tuple = ("hirescam", "gradcam")
    classes: tuple | str = "all"
    card: str | None = None
    arch: str | None = None
    keep_maps: str = "none"
    threshold: str = "topk"
    region: str = "auto"
    device: str = "auto"
    dicom_out: bool = False  # write cases/<id>/dicom/ (Parametric Maps, SEG, SR: io/dicom_case.py)
    dicomweb: str | None = None  # the manifest's study_uid rows are on this DICOMweb server
    push: bool = False  # store each case's DICOM objects in its study (STOW-RS, retried)

    def fingerprint(self) -> str:
        """Hash of the settings and of the model files' identity (path, size, modification time)."""
        record = {**asdict(self), "format": FORMAT_VERSION, "model_files": _model_identity(self.model),
                  "card_file": _file_identity(self.card) if self.card else None}
        record.pop("device")  # cpu and cuda give the same numbers within float tolerance
        for key in ("dicom_out", "dicomweb", "push"):  # unset: the fingerprint of runs made before them
            if not record[key]:
                record.pop(key)
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CaseJob:
    """What every worker needs besides the case: the settings, their fingerprint, the output folder."""

    settings: BatchSettings
    fingerprint: str
    out_dir: Path
    threads: int | None = None  # torch threads in a worker process (None: leave torch's default)
    extra: dict = field(default_factory=dict)


def case_key(case, fingerprint: str) -> str:
    """The case's inputs (CT, masks; path, size, mtime) and the settings' fingerprint, hashed.

    File identity rather than content: hashing every CT would read the whole cohort again on each
    resume; a CT rewritten in place gets a new modification time and is redone.
    """
    record = {"settings": fingerprint, "case_id": case.case_id, "ct": _file_identity(case.ct),
              **{k: _file_identity(v) for k, v in sorted(case.paths.items()) if v is not None}}
    if case.source.get("study_uid"):  # a DICOMweb case: its server, study, series and instance UIDs
        record["ct"] = dicomweb_identity(case)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def case_folder(out_dir, case_id: str) -> Path:
    from ..io.names import safe_name

    return Path(out_dir) / "cases" / safe_name(case_id)


def finished_result(out_dir, case, fingerprint: str) -> dict | None:
    """The stored result of a case done with these inputs and settings, or None (to be computed)."""
    path = case_folder(out_dir, case.case_id) / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("status") != "ok" or result.get("push", {}).get("status") == "failed":
        return None  # failed, or its push failed: computed and pushed again
    try:
        return result if result.get("key") == case_key(case, fingerprint) else None
    except InputError:  # its study cannot be queried now: the case is tried and fails with the reason
        return None


def dicomweb_identity(case) -> dict:
    """The case's series on its DICOMweb server (io/dicomweb.series_identity), asked once per case
    and kept on the case, so that the worker pulls the very series the resume key names."""
    if "identity" not in case.source:
        from ..io.dicomweb import series_identity

        case.source["identity"] = series_identity(case.source["dicomweb"], case.source["study_uid"],
                                                  case.source.get("series_uid"))
    return case.source["identity"]


class CaseWorker:
    """Runs cases one after another with one model, loaded on the first case and kept."""

    def __init__(self, job: CaseJob):
        self.job = job
        self.classifier = None
        self.model_loads = 0
        self.cases_run = 0
        if job.threads:  # this worker's share of the machine's cores (see executors.threads_per_worker)
            import SimpleITK as sitk
            import torch

            torch.set_num_threads(int(job.threads))
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(job.threads))

    def run(self, case) -> dict:
        if self.classifier is None:
            try:
                self.classifier = load_model(self.job.settings)
            except Exception as err:  # noqa: BLE001 - the model is every case's: report it on the row
                return failed_result(self.job, case, err)
            self.model_loads += 1
        self.cases_run += 1
        return run_case(case, self.job, self.classifier)

    def pid(self) -> int:
        return os.getpid()


def load_model(settings: BatchSettings):
    """The classifier of the settings (the shipped demo model registers itself first)."""
    from ..models import demo_model  # noqa: F401 - registers the "demo" source and architecture
    from ..models.loaders import load_classifier

    return load_classifier(settings.model, card=settings.card, arch=settings.arch, device=settings.device)


def explain_case(classifier, ct, settings: BatchSettings):
    """explain() with the batch's methods and classes (a separate name so tests can count calls)."""
    from ..explainers.explanation import explain

    classes = settings.classes if isinstance(settings.classes, str) else list(settings.classes)
    return explain(classifier, ct, methods=list(settings.methods), classes=classes)


def run_case(case, job: CaseJob, classifier) -> dict:
    """Explain and score one case and write its files; never raises for a bad case (status failed)."""
    from ..explainers.registry import get_method
    from ..scoring.evaluation import evaluate
    from ..scoring.metrics import METRICS
    from ..scoring.quality import MAP_KEYS, SEGMENT_KEYS
    from ..io.names import safe_name
    from ..io.volume import read_volume, write_volume

    settings = job.settings
    folder = case_folder(job.out_dir, case.case_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (folder / RESULT_FILE, folder / ERROR_FILE):
            stale.unlink(missing_ok=True)
        ct, source = _read_case_ct(case)
        segments = _case_segments(case, ct)
        explanation = explain_case(classifier, ct, settings)
        rows = []
        segments = _with_class_unions(segments, explanation.classes, ct) if segments is not None else None
        for (method, klass), volume in explanation.maps.items():
            if segments is None:
                continue
            table = evaluate(volume, segments, region=settings.region, threshold=settings.threshold, ct=ct,
                             importance=get_method(method).importance)
            for record in table.to_records():
                rows.append({"case_id": case.case_id, "method": method, "class": klass,
                             "segment": record["segment"], **{k: record[k] for k in METRICS},
                             **{k: record.get(k) for k in (*SEGMENT_KEYS, *MAP_KEYS)},
                             **{k: record[k] for k in CONTEXT_KEYS}})
        predictions = _predictions(case, explanation)
        maps = []
        if settings.keep_maps != "none":
            source = explanation.maps if settings.keep_maps == "ct" else explanation.raw
            suffix = ".nrrd" if settings.keep_maps == "ct" else ".feature.nrrd"
            for (method, klass), volume in source.items():
                path = write_volume(volume, folder / "maps" / f"{method}_{safe_name(klass)}{suffix}")
                maps.append(str(path.relative_to(folder)))
        (folder / "predictions.json").write_text(json.dumps(explanation.predictions(), indent=2) + "\n")
        gaze = None
        (folder / "gaze.npz").unlink(missing_ok=True)
        if case.paths.get("fixations") is not None:  # the readers' fixations, scored over the cohort
            from .gaze import write_case_gaze

            gaze = write_case_gaze(folder, case.paths["fixations"], ct, explanation)
        result = {"case_id": case.case_id, "key": case_key(case, job.fingerprint), "status": "ok",
                  "error": "", "predictions": predictions, "rows": rows, "maps": maps,
                  "model": explanation.model, "layer": explanation.layer, "gaze": gaze}
        if settings.dicom_out or settings.push:
            result.update(_case_dicom(case, folder, ct, source, explanation, segments, rows, predictions, settings))
        _write_case_page(folder, case, ct, explanation, rows, predictions)
        _write_atomically(folder / RESULT_FILE, result)
        return result
    except Exception as err:  # noqa: BLE001 - fault isolation: one case's failure is its own row
        return failed_result(job, case, err)


def _read_case_ct(case):
    """(CT, its DicomSource or None): pulled from the case's study on its DICOMweb server, or read
    from the manifest's path."""
    from ..io.volume import read_volume

    if not case.source.get("study_uid"):
        return read_volume(case.ct), None
    from ..io.dicomweb import read_study_ct

    identity = dicomweb_identity(case)
    return read_study_ct(identity["dicomweb"], identity["study_uid"], series=identity["series_uid"])


def _case_dicom(case, folder: Path, ct, source, explanation, segments, rows, predictions, settings) -> dict:
    """cases/<id>/dicom/ (maps, masks, scores as DICOM) and, with push, the objects stored in the
    case's study (retried; the outcome is the result's "push" entry, a failure never raises)."""
    from ..io.dicom_case import source_for, write_case_dicom
    from ..scoring.metrics import METRICS

    source = source or source_for(ct, case.ct)
    objects = write_case_dicom(folder / "dicom", source, maps=explanation.maps, segments=segments, rows=rows,
                               metrics=METRICS,
                               predictions=[{"class": p["class"], "probability": p["probability"]}
                                            for p in predictions])
    out = {"dicom": [str(p.relative_to(folder)) for p in objects]}
    if settings.push:
        from ..io.dicomweb import push_with_retry

        out["push"] = push_with_retry(settings.dicomweb, objects)
    return out


def failed_result(job: CaseJob, case, err: Exception) -> dict:
    """The error row of a case (one line) and its ``error.json`` (with the traceback, for debugging)."""
    reason = _one_line(err)
    try:
        key = case_key(case, job.fingerprint)
    except InputError:  # a DICOMweb case whose study cannot be queried: no key, retried next run
        key = ""
    result = {"case_id": case.case_id, "key": key, "status": "failed",
              "error": reason, "predictions": [], "rows": [], "maps": []}
    try:
        folder = case_folder(job.out_dir, case.case_id)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / ERROR_FILE, {**result, "traceback": traceback.format_exc()})
    except OSError:
        pass
    return result


def _one_line(err: Exception) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if isinstance(err, InputError):
        return text or "bad input"
    return f"{type(err).__name__}: {text}"[:300]


def _case_segments(case, ct):
    """Organ and lesion masks on the CT's grid (None when the manifest gives none)."""
    from ..io.segments import Segments, read_segments

    parts = []
    for column in ("organs", "lesions"):
        path = case.paths.get(column)
        if path is not None:
            parts += list(read_segments(path, reference=ct))
    if not parts:
        return None
    names = [s.name for s in parts]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"segment name(s) {', '.join(duplicated)} appear in both the organs and the lesions "
                         "file; rename them")
    return Segments(parts, ct)


def _with_class_unions(segments, classes, ct):
    """Add, for a class that is no segment's name, the union of the segments named ``<class>_*``
    (kidney = kidney_left ∪ kidney_right), and likewise ``lesion_<class>`` for its lesions: every
    class then has one organ (and lesion) row that the cohort statistics can follow across cases."""
    from ..io.segments import Segment, Segments

    names = set(segments.names)
    added = []
    for klass in classes:
        for prefix in ("", "lesion_"):
            name = f"{prefix}{klass}"
            parts = [s for s in segments if s.name.startswith(name + "_")]
            if name not in names and parts:
                union = np.zeros(ct.shape, bool)
                for s in parts:
                    union |= s.mask
                added.append(Segment(name, union, parts[0].color))
                names.add(name)
    return Segments(list(segments) + added, ct) if added else segments


def _predictions(case, explanation) -> list:
    """Per class: probability, logit, prediction (p >= 0.5, or the arg-max when single-label), label."""
    probabilities = np.asarray(explanation.probabilities, dtype=np.float64)
    top = int(np.argmax(probabilities))
    out = []
    for index, klass in enumerate(explanation.class_names):
        predicted = int(probabilities[index] >= 0.5) if explanation.multilabel else int(index == top)
        label = case.labels.get(klass)
        out.append({"case_id": case.case_id, "class": klass, "probability": float(probabilities[index]),
                    "logit": float(explanation.logits[index]), "predicted": predicted, "label": label,
                    "correct": None if label is None else int(predicted == label)})
    return out


def _write_case_page(folder: Path, case, ct, explanation, rows, predictions) -> None:
    """A small case page (predictions and metric tables, no pictures) that the cohort page links to."""
    from ..view.report import write_report

    tables: dict = {}
    for row in rows:
        tables.setdefault((row["method"], row["class"]), []).append(row)
    truth = [{"class": p["class"], "probability": p["probability"], "logit": p["logit"],
              "truth": None if p["label"] is None else bool(p["label"])} for p in predictions]
    focus = [p["class"] for p in predictions if p["label"] or p["predicted"]]
    write_report(folder / "report.html", title=f"SaliencyInspector: case {case.case_id}", ct=ct,
                 case_info={"CT": str(case.ct or f"study {case.source.get('study_uid')}"), "model": f"{explanation.model} · layer {explanation.layer}"},
                 predictions=truth, tables=tables, focus_classes=focus, methods=list(explanation.methods),
                 notes=["Part of a cohort run (saliency-inspector batch); the cohort page is ../../report.html."])


def _write_atomically(path: Path, record: dict) -> None:
    """JSON under a temporary name, renamed into place: no partial file, even on a full disk."""
    from ..io.files import written_atomically

    text = json.dumps(record, indent=1, allow_nan=False, default=json_default) + "\n"
    with written_atomically(path) as tmp:
        tmp.write_text(text)


def _file_identity(path) -> list | None:
    if path is None:
        return None
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p), None, None]
    if p.is_dir():  # a DICOM series or a MONAI bundle: every file in it
        return [str(p), sorted([str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                               for f in p.rglob("*") if f.is_file())]
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _model_identity(model: str):
    if str(model) == "demo":
        from ..models.demo_model import DEMO_CARD_PATH, DEMO_WEIGHTS_PATH

        return ["demo", _file_identity(DEMO_WEIGHTS_PATH), _file_identity(DEMO_CARD_PATH)]
    return _file_identity(model)
