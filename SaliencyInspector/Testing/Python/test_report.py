"""HTML report: pictures referenced by existing relative paths, the metrics tables, the legend."""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from saliency_inspector.scoring.curves import roc_curve
from saliency_inspector.scoring.evaluation import evaluate
from saliency_inspector.scoring.metrics import METRICS, TABLE_KEYS
from saliency_inspector.view.report import plot_roc, write_report
from saliency_inspector.io.volume import Volume


class Page(HTMLParser):
    """Collects image sources, table rows (cell texts) and the text of the page."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.text = [], [], []
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "tr":
            self._row = {"class": attrs.get("class"), "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path) -> Page:
    page = Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def scored():
    """A map peaking inside 'target' (and not in 'other'), scored by evaluation.evaluate."""
    k, j, i = np.mgrid[0:12, 0:20, 0:20]
    saliency = Volume((np.exp(-((i - 5) ** 2 + (j - 6) ** 2 + (k - 6) ** 2) / 8.0) - 0.05).astype(np.float32),
                      spacing=(1.0, 1.0, 2.0))
    masks = {"target": (i - 5) ** 2 + (j - 6) ** 2 + (k - 6) ** 2 <= 4,  # a ball round the peak
             "other": (i >= 14) & (j >= 14),
             "<odd & name>": (i == 0) & (j == 0)}
    table = evaluate(saliency, masks, region="all")
    return saliency, masks, table


def write_pictures(folder):
    from matplotlib.pyplot import imsave

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m, colour in (("hirescam", (1, 0, 0)), ("gradcam", (0, 0, 1))):
        path = folder / f"{m}_liver.png"
        imsave(path, np.ones((8, 8, 3)) * colour)
        paths[(m, "liver")] = path
    return paths


def test_report_references_existing_pictures_and_holds_the_metrics(tmp_path, scored):
    saliency, masks, table = scored
    images = write_pictures(tmp_path / "images")
    fpr, tpr, _ = roc_curve(saliency, masks["target"])
    roc = plot_roc([("hirescam vs target", fpr, tpr, table.row("target")["roc_auc"])], tmp_path / "images" / "roc.png")
    predictions = [{"class": "liver", "probability": 0.91, "logit": 2.3, "truth": True},
                   {"class": "kidney", "probability": 0.04, "logit": -3.1, "truth": False}]
    out = write_report(tmp_path / "report.html", title="case <1>", ct=saliency, predictions=predictions,
                       images=images, tables={("hirescam", "liver"): table, ("gradcam", "liver"): table},
                       class_segments={"liver": ["target"]}, focus_classes=["liver"],
                       roc_images=[("class liver", roc)], notes=["a note & more"])
    page = parse(out)
    html = out.read_text()

    # every picture is a relative path to an existing file: the report opens from its folder
    assert sorted(page.images) == sorted(["images/hirescam_liver.png", "images/gradcam_liver.png", "images/roc.png"])
    for src in page.images:
        assert not Path(src).is_absolute() and (out.parent / src).is_file()
    # HiResCAM before Grad-CAM in the class's row of pictures
    assert html.index("images/hirescam_liver.png") < html.index("images/gradcam_liver.png")

    # the metrics table: one row per segment, numbers as evaluate computed them, the class's organ highlighted
    names = {r["segment"] for r in table.rows}
    by_segment = {}
    for row in page.rows:
        if row["cells"] and row["cells"][0] in names:
            by_segment.setdefault(row["cells"][0], row)
    assert set(by_segment) == names
    for r in table.rows:
        cells = by_segment[r["segment"]]["cells"]
        for column, key in enumerate(TABLE_KEYS, start=1):
            value = r[key]
            expected = "n/a" if np.isnan(value) else f"{value:.3f}"
            assert cells[column].startswith(expected), (r["segment"], key, cells[column])
    assert by_segment["target"]["class"] == "focus" and by_segment["other"]["class"] is None
    assert "<odd & name>" not in html  # escaped
    # a prediction row with its truth
    assert any(row["cells"][:4] == ["liver", "0.910", "2.300", "yes"] for row in page.rows)

    # the legend: every metric's one-line meaning from the registry
    text = " ".join(page.text)
    for info in METRICS.values():
        assert info.meaning in text
    assert "a note & more" in text


def test_a_missing_picture_is_refused(tmp_path, scored):
    with pytest.raises(ValueError, match="picture not found"):
        write_report(tmp_path / "report.html", images={("hirescam", "liver"): tmp_path / "nope.png"})
    assert not (tmp_path / "report.html").exists()


def test_roc_plot_draws_the_curves(tmp_path, scored):
    saliency, masks, table = scored
    fpr, tpr, _ = roc_curve(saliency, masks["target"])
    path = plot_roc([("perfect", fpr, tpr, table.row("target")["roc_auc"])], tmp_path / "roc.png", title="t")
    image = imread(path)[..., :3]
    assert image.shape[0] > 300 and image.shape[1] > 300
    # matplotlib's first line colour (C0, #1f77b4) is drawn
    c0 = np.array([0x1F, 0x77, 0xB4]) / 255
    assert np.any(np.all(np.abs(image - c0) < 0.02, axis=-1))
    # the map ranks every target voxel first: the curve goes straight up at fpr = 0
    assert table.row("target")["roc_auc"] == pytest.approx(1.0)
    assert tpr[fpr == 0].max() == pytest.approx(1.0)
