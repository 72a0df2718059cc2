"""The core runs on numpy 1.26 (Slicer 5.8) and numpy 2.x (Slicer 5.10 and later).

A static scan of every ``np.<name>`` the package and the Slicer module use against the names numpy
2.0 added (its release notes: the array-API aliases, ``trapezoid``, ``unique_*``, ``isdtype``, ...);
and the one function that used ``np.trapezoid`` run with it removed, as on numpy 1.26.
The Slicer-5.8 environment (``slicer_env.py``) runs the Slicer tests on a real numpy 1.26.4.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

MODULE = Path(__file__).resolve().parents[2]
# added in numpy 2.0 (doc/source/release/2.0.0-notes.rst, "NumPy 2.0 Python API changes") or later
NUMPY2_ONLY = {"trapezoid", "concat", "permute_dims", "pow", "acos", "acosh", "asin", "asinh", "atan", "atan2",
               "atanh", "bitwise_left_shift", "bitwise_right_shift", "bitwise_invert", "isdtype", "unique_values",
               "unique_counts", "unique_all", "unique_inverse", "matrix_transpose", "vecdot", "vecmat", "matvec",
               "cumulative_sum", "cumulative_prod", "astype", "strings", "long", "ulong", "matrix_norm",
               "vector_norm", "exceptions", "dtypes"}


def numpy_names_used() -> dict:
    """{name: 'file:line'} of every ``np.X`` / ``numpy.X`` / ``np.linalg.X`` attribute in the core and module."""
    used = {}
    files = [*sorted((MODULE / "saliency_inspector").rglob("*.py")), MODULE / "SaliencyInspector.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                inner = node.value
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.attr == "linalg":
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id in ("np", "numpy"):
                    used.setdefault(node.attr, f"{path.relative_to(MODULE)}:{node.lineno}")
    return used


def test_no_numpy_2_only_name_in_the_core():
    used = numpy_names_used()
    assert "zeros" in used and "asarray" in used  # the scan sees the code
    bad = {name: where for name, where in used.items() if name in NUMPY2_ONLY}
    assert not bad, f"numpy >= 2 only (Slicer 5.8 ships numpy 1.26.4): {bad}"


def test_auprc_is_the_same_without_np_trapezoid(monkeypatch):
    from saliency_inspector.scoring.trust import auprc_pair

    rng = np.random.default_rng(0)
    scores, labels = rng.random(500), rng.random(500) < 0.2
    expected = auprc_pair(scores, labels)
    monkeypatch.delattr(np, "trapezoid", raising=False)  # numpy 1.26 has no trapezoid
    assert auprc_pair(scores, labels) == pytest.approx(expected, abs=1e-12)
    # the trapezoid area against a known answer: a constant map -> (1 + prevalence) / 2
    ap, trapezoid = auprc_pair(np.ones(100), np.arange(100) < 25)
    assert trapezoid == pytest.approx((1 + 0.25) / 2) and ap == pytest.approx(0.25)
