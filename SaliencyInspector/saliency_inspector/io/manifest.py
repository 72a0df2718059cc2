"""Cohort manifests: one row per case (id, CT, optional masks, labels), read and checked at once.

A manifest is a CSV file (or JSON lines, ``.jsonl``) with a ``case_id`` and a ``ct`` column;
optional path columns ``organs``, ``lesions``, ``marker`` and ``fixations``; an optional ``split``
(train / val / test); every other column is a 0/1 label of the class it names (blank: unknown).
Relative paths resolve against the manifest's folder. Every problem (a missing column, a duplicate
id, a path that does not exist, a label that is not 0/1) is reported in one error before any work
starts, so a long run does not stop after an hour on row 900.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .files import resolve_path
from .names import safe_name

PATH_COLUMNS = ("ct", "organs", "lesions", "marker", "fixations")
# a case on a DICOMweb server instead of a CT file (batch --dicomweb URL): its study and, optionally,
# its series
UID_COLUMNS = ("study_uid", "series_uid")
RESERVED_COLUMNS = ("case_id", "split") + PATH_COLUMNS + UID_COLUMNS
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_LISTED = 10  # problems named in the error; the rest are counted


@dataclass
class CohortCase:
    """One manifest row: its id, split, resolved paths (None when blank) and labels (None: unknown)."""

    case_id: str
    ct: Path
    split: str = ""
    paths: dict = field(default_factory=dict)  # "organs"/"lesions"/"marker"/"fixations" -> Path | None
    labels: dict = field(default_factory=dict)  # class -> 0 | 1 | None
    row: int = 0  # 1-based data row in the file (header not counted)
    source: dict = field(default_factory=dict)  # "study_uid"/"series_uid" of a DICOMweb case (batch sets "dicomweb")


@dataclass
class Manifest:
    """The cases of a manifest and the label classes it defines, in column order."""

    path: Path
    cases: list
    classes: list

    def __len__(self):
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    def split(self, name: str) -> list:
        """The cases of one split ("train", "val", "test")."""
        return [c for c in self.cases if c.split == name]


def read_manifest(path, classes=None, require=("ct",)) -> Manifest:
    """Read and check a cohort manifest (CSV or JSON lines).

    ``classes``: the label columns to use (each must exist); by default every column that is not
    ``case_id``, ``split`` or a path column. ``require``: path columns that must be present and
    non-blank in every row. Raises :class:`InputError` listing every problem at once.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (a CSV or .jsonl file with case_id and ct columns)")
    columns, rows = _read_rows(path)
    problems = []
    missing = [c for c in ("case_id", *require) if c not in columns]
    if classes is not None:
        missing += [c for c in classes if c not in columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; the columns are "
                         f"{', '.join(columns) or '(none)'}")
    label_columns = list(classes) if classes is not None else [c for c in columns if c not in RESERVED_COLUMNS]
    seen, folders, cases = {}, {}, []
    for number, row in enumerate(rows, start=1):
        raw_id = str(row.get("case_id") or "")
        case_id = raw_id.strip()
        where = f"row {number}" + ((f" ({case_id})" if case_id.isprintable() else f" ({case_id!r})") if case_id else "")
        if not case_id:
            problems.append(f"{where}: empty case_id")
        elif any(ord(c) < 32 or ord(c) == 127 for c in raw_id):  # a newline would vanish from tables and names
            problems.append(f"{where}: case_id holds a newline, tab or other control character; give one-line ids")
        elif case_id in seen:
            problems.append(f"{where}: duplicate case_id (also row {seen[case_id]})")
        else:
            seen[case_id] = number
            # each case gets the folder cases/<safe_name(id)>: two ids must never share one, also
            # where the file system ignores case (macOS, Windows)
            folder = safe_name(case_id).casefold()
            if folder in folders:
                problems.append(f"{where}: case_id would share its output folder with row {folders[folder][0]} "
                                f"({folders[folder][1]}); rename one of them")
            folders.setdefault(folder, (number, case_id))
        paths = {}
        for column in PATH_COLUMNS:
            value = str(row.get(column) or "").strip()
            if not value:
                paths[column] = None
                if column in require:
                    problems.append(f"{where}: no {column} given")
                continue
            try:
                resolved = resolve_path(path.parent / value) if not Path(value).is_absolute() else Path(value)
            except InputError as err:  # a symbolic link loop
                problems.append(f"{where}: {column} {err}")
                paths[column] = None
                continue
            if not resolved.exists():
                problems.append(f"{where}: {column} {value} does not exist")
            paths[column] = resolved
        uids = {c: str(row.get(c) or "").strip() for c in UID_COLUMNS if str(row.get(c) or "").strip()}
        for column, value in uids.items():
            if not _UID.match(value) or len(value) > 64:
                problems.append(f"{where}: {column} {value!r} is not a DICOM UID (digits and dots)")
        for column in UID_COLUMNS:
            if column in require and column not in uids:
                problems.append(f"{where}: no {column} given")
        labels = {}
        for column in label_columns:
            value = str(row.get(column) if row.get(column) is not None else "").strip()
            if value == "":
                labels[column] = None
            elif value in ("0", "1", "0.0", "1.0"):
                labels[column] = int(float(value))
            else:
                problems.append(f"{where}: label {column}={value!r} is not 0, 1 or blank")
        cases.append(CohortCase(case_id, paths.pop("ct"), str(row.get("split") or "").strip(), paths, labels, number,
                                uids))
    if not rows:
        problems.append("no cases")
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise InputError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems[:MAX_LISTED]) + more)
    return Manifest(path, cases, label_columns)


def write_manifest(path, rows: list, columns: list) -> Path:
    """Write rows (dicts) as a CSV manifest with these columns; paths are written as given."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path


def _read_rows(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the manifest ({err.__class__.__name__}); "
                         "give a UTF-8 CSV or JSON-lines file") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {number} is not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {number} is not a JSON object")
            rows.append({str(k): v for k, v in row.items()})
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return columns, rows
    # a StringIO keeps a quoted field's newline (splitlines() dropped it: "a\nb" became the id "ab")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    return columns, rows
