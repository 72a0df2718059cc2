"""`demo`: the main job end to end on a small phantom; its outputs and its report."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from saliency_inspector.workflows.demo import run_demo
from saliency_inspector.models.demo_model import DEFAULT_ARCH_KWARGS, DEMO_CLASSES, build_demo_network, demo_card
from saliency_inspector.models.card import ModelCard
from saliency_inspector.models.loaders import Classifier
from saliency_inspector.io.segments import read_segments
from saliency_inspector.io.volume import read_volume

METHODS = ("hirescam", "gradcam")


def small_classifier():
    """The demo architecture with seeded random weights: the pipeline's test, not the model's."""
    import torch

    torch.manual_seed(0)
    return Classifier(build_demo_network(**DEFAULT_ARCH_KWARGS), ModelCard.from_dict(demo_card()),
                      torch.device("cpu"))


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo")
    messages = []
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_demo(out, device="cpu", progress=messages.append, size=(48, 48, 20),
                          classifier=small_classifier(), panel_px=160)
    return out, result, stdout.getvalue(), messages


def test_demo_writes_every_output(demo):
    out, result, _, messages = demo
    for name in ("ct.nrrd", "organs.seg.nrrd", "lesions.seg.nrrd", "case.json", "predictions.json",
                 "metrics.csv", "metrics.json", "report.html"):
        assert (out / name).is_file(), name
    ct = read_volume(out / "ct.nrrd")
    assert ct.size_xyz == (48, 48, 20)
    for method in METHODS:
        for name in DEMO_CLASSES:
            saliency = read_volume(out / "maps" / f"{method}_{name}.nrrd")
            assert saliency.same_grid(ct)  # every map on the CT's own grid
            assert (out / "images" / f"{method}_{name}.png").is_file()
    assert messages  # progress was reported


def test_predictions_carry_the_phantoms_truth(demo):
    out, result, _, _ = demo
    record = json.loads((out / "predictions.json").read_text())
    assert record["class_names"] == list(DEMO_CLASSES)
    assert record["truth"] == {"lung_left": False, "lung_right": False, "liver": True, "kidney": False}
    assert [les["organ"] for les in record["lesions"]] == ["liver"]
    probabilities = np.asarray(record["probabilities"])
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-np.asarray(record["logits"]))), rtol=1e-5)
    assert "liver" in result.focus_classes  # the true class is always looked at closely
    assert record["orientation"] == "LPS"  # the demo card's; the report says it too
    assert "the model saw the CT in LPS orientation" in (out / "report.html").read_text(encoding="utf-8")


def test_metrics_files_hold_every_map_against_every_segment(demo):
    out, result, _, _ = demo
    rows = json.loads((out / "metrics.json").read_text())
    organs = read_segments(out / "organs.seg.nrrd")
    lesions = read_segments(out / "lesions.seg.nrrd")
    scored = (set(organs.names) | set(lesions.names)) - {"body"}  # the body is the region
    assert {(r["method"], r["class"]) for r in rows} == {(m, c) for m in METHODS for c in DEMO_CLASSES}
    for method in METHODS:
        for name in DEMO_CLASSES:
            segments = {r["segment"] for r in rows if r["method"] == method and r["class"] == name}
            assert segments == scored
    assert all(r["region"].startswith("body") for r in rows)
    csv_lines = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_lines) == len(rows) + 1 and csv_lines[0].startswith("method,class,segment,dice")


def test_report_opens_with_its_pictures_and_the_metrics_table(demo):
    out, result, stdout, _ = demo
    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    parser = Images()
    parser.feed(html)
    # one picture per (method, class) plus the ROC plot(s), all beside the report
    assert len(parser.sources) >= len(METHODS) * len(DEMO_CLASSES) + 1
    for src in parser.sources:
        assert not Path(src).is_absolute() and (out / src).is_file(), src
    # the metrics table of the true class holds the numbers written to metrics.json
    row = next(r for r in json.loads((out / "metrics.json").read_text())
               if r["method"] == "hirescam" and r["class"] == "liver" and r["segment"] == "lesion_liver")
    assert "lesion_liver" in html and f"{row['roc_auc']:.3f}" in html
    # stdout: the table of the true class and where the report is
    assert "HiResCAM · class liver" in stdout and "Grad-CAM · class liver" in stdout and "lesion_liver" in stdout
    assert f"report: {report.resolve()}" in stdout


def test_demo_into_a_file_is_an_input_error(tmp_path, capsys):
    from saliency_inspector.cli import main

    target = tmp_path / "a-file"
    target.write_text("keep me")
    assert main(["demo", "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"  # the user's file is untouched
