"""A typed client of the public API: mypy --strict checks it against ``saliency_inspector/__init__.pyi``.

Not a test module (pytest does not collect it); `test_public_api.py` runs mypy on it.
"""

from __future__ import annotations

import numpy as np

import saliency_inspector as si


def first_liver_auc(ct_path: str, organs_path: str) -> float:
    """The README's Python example, typed: explain, then score one map against the organs."""
    classifier: si.Classifier = si.demo_classifier(device="cpu")
    ct: si.Volume = si.read_volume(ct_path)
    result: si.Explanation = si.explain(classifier, ct, methods=["hirescam", "gradcam"], classes="all")
    organs: si.Segments = si.read_segments(organs_path, reference=ct)
    table: si.EvaluationTable = si.evaluate(result.map("hirescam", "liver"), organs, ct=ct)
    return float(table.row("liver")["roc_auc"])


def register_mine() -> si.Method:
    """A method of one's own joins the one registry."""

    def intensity(model: object, x: object) -> object:
        return x

    return si.register_method("typing_client_intensity", intensity, label="Intensity", replace=True)


def phantom_shape() -> tuple[int, ...]:
    case: si.PhantomCase = si.make_phantom(seed=0, size=(32, 32, 16))
    array: np.ndarray = case.ct.array
    return tuple(array.shape)
