"""The one place result files are written (io/records.py): undefined numbers never reach a file as
NaN or Infinity (not JSON), CSV cells of undefined values are empty, text tables say "n/a"."""

import csv
import json
import math

import numpy as np
import pytest

from saliency_inspector.io.records import (csv_cell, finite, format_cell, is_missing, json_text, write_csv,
                                           write_json)


def _strict_load(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinities_become_null_at_any_depth(tmp_path):
    record = {"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), 2)], "c": {"d": np.float32("nan")},
              "e": np.float64(0.25), "f": np.int64(3), "g": None, "h": "text", "i": True}
    path = write_json(tmp_path / "sub" / "r.json", record)
    loaded = _strict_load(path.read_text(encoding="utf-8"))
    assert loaded == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None}, "e": 0.25, "f": 3, "g": None,
                      "h": "text", "i": True}
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert finite(0.1) == 0.1 and finite(7) == 7 and finite("x") == "x"


def test_json_text_matches_json_dumps_when_every_number_is_finite():
    record = [{"segment": "liver", "dice": 0.1 + 0.2, "mask_voxels": 12, "note": ""}]
    assert json_text(record) == json.dumps(record, indent=2) + "\n"
    assert json_text(record, indent=1) == json.dumps(record, indent=1) + "\n"


def test_csv_cells_of_undefined_values_are_empty_and_floats_exact(tmp_path):
    rows = [{"name": "a", "x": float("nan"), "y": 0.1 + 0.2, "extra": "left out"},
            {"name": "b", "x": None, "y": 2}]
    path = write_csv(tmp_path / "sub" / "t.csv", rows, ["name", "x", "y", "z"])
    text = path.read_text(encoding="utf-8")
    assert text.splitlines() == ["name,x,y,z", f"a,,{0.1 + 0.2!r},", "b,,2,"]
    back = list(csv.DictReader(text.splitlines()))
    assert float(back[0]["y"]) == 0.1 + 0.2
    assert csv_cell(float("nan")) == "" and csv_cell(None) == "" and csv_cell(0.0) == 0.0


def test_text_cells_say_n_a_for_undefined_values():
    assert format_cell(None) == "n/a" and format_cell(float("nan")) == "n/a" and format_cell(np.float32("nan")) == "n/a"
    assert format_cell(0.12345) == "0.123" and format_cell(2, digits=1) == "2.0"
    assert format_cell(float("inf")) == "inf"  # infinite is a value in a table, only JSON has no word for it
    assert is_missing(None) and is_missing(math.nan) and not is_missing(0.0) and not is_missing("n/a")


def test_a_value_json_cannot_hold_is_an_error_not_a_silent_string():
    with pytest.raises(TypeError):
        json_text({"a": object()})
