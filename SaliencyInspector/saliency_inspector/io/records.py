"""Writing result records: JSON with null for undefined numbers, CSV with empty cells, "n/a" in text.

An undefined score is NaN in memory (see :mod:`saliency_inspector.scoring.metrics`). JSON has no NaN
or infinity, so :func:`finite` turns them into ``None`` (null) before writing; a CSV cell of an
undefined value is empty; a table for people shows "n/a". Every result file of the package is
written through here, so the rules are the same everywhere.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

MISSING_TEXT = "n/a"


def is_missing(value) -> bool:
    """True for None and NaN: a value with nothing to show."""
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def finite(value):
    """``value`` with every NaN or infinite float turned into None, through dicts, lists and tuples
    (tuples become lists, as JSON has them). Other values are returned as they are."""
    if isinstance(value, (float, np.floating)):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_default(value):
    """``json.dumps``'s ``default`` for numpy scalars (their Python value); anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(record, indent: int = 2) -> str:
    """``record`` as JSON text ending in a newline, non-finite numbers as null, numpy scalars as numbers."""
    return json.dumps(finite(record), indent=indent, default=json_default) + "\n"


def write_json(path, record, indent: int = 2) -> Path:
    """Write :func:`json_text` of ``record`` to ``path`` (UTF-8; its folder made) and return the path."""
    from .files import written_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as tmp:  # a full disk leaves no truncated file under the name
        tmp.write_text(json_text(record, indent), encoding="utf-8")
    return path


def csv_cell(value):
    """A CSV cell: empty for None and NaN, else the value as the csv module writes it (floats exact)."""
    return "" if is_missing(value) else value


def write_csv(path, rows, columns) -> Path:
    """Write ``rows`` (dicts) as CSV with a header of ``columns``, in that order (keys not among the
    columns are left out, missing ones are empty; see :func:`csv_cell`). UTF-8; the folder is made."""
    from .files import written_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns)
    with written_atomically(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: csv_cell(row.get(c)) for c in columns})
    return path


def format_cell(value, digits: int = 3) -> str:
    """A number for a table read by people: ``digits`` decimals, or "n/a" for None and NaN."""
    return MISSING_TEXT if is_missing(value) else f"{value:.{digits}f}"
