"""``compare --quantus``: the model-calling Quantus-family metrics per method, in the table and files."""

from __future__ import annotations

import json
import math

import pytest

from saliency_inspector import cli
from saliency_inspector.scoring.quality import MODEL_KEYS


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    from saliency_inspector.synth.phantom import make_phantom, write_phantom_case

    out = tmp_path_factory.mktemp("quantus_case")
    write_phantom_case(make_phantom(seed=3, size=(64, 64, 32), lesions=["lung_left"], lesion_scale=1.8), out)
    return out


@pytest.mark.slow
def test_compare_quantus_rows(case_dir, tmp_path, capsys):
    code = cli.main(["compare", str(case_dir / "ct.nrrd"), "--model", "demo", "--masks",
                     str(case_dir / "lesions.seg.nrrd"), "--class", "lung_left", "--method", "hirescam",
                     "--method", "gradient", "--fidelity-steps", "3", "--quantus",
                     "--json", str(tmp_path / "c.json"), "--csv", str(tmp_path / "c.csv"), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Quantus families" in printed and "Region perturbation AOPC" in printed
    rows = {r["method"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    grad, cam = rows["gradient"], rows["hirescam"]
    for key in MODEL_KEYS:  # every model metric is reported for a re-runnable method
        assert grad[key] is not None and math.isfinite(grad[key]), key
    assert cam["max_sensitivity"] is None  # a CAM is not re-run on a perturbed input (NaN -> null)
    assert -1 <= grad["faithfulness_correlation"] <= 1 and 0 <= grad["monotonicity"] <= 1
    assert cam["region_perturbation_aopc"] is not None
    header = (tmp_path / "c.csv").read_text().splitlines()[0].split(",")
    assert header[-len(MODEL_KEYS):] == list(MODEL_KEYS)
