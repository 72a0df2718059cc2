"""The trust card in MRML (slicer-core): table node and randomization plot made from the card."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("trame_slicer", reason="trame-slicer is not installed")

import offscreen_views as ov  # noqa: E402

from saliency_inspector import mrml, mrml_charts  # noqa: E402
from saliency_inspector.scoring import trust  # noqa: E402
from saliency_inspector.io.volume import Volume  # noqa: E402


@pytest.fixture(scope="module")
def card():
    """A card from real comparisons of synthetic maps: a map that never changes, one that does."""
    rng = np.random.default_rng(0)
    base = Volume(rng.random((12, 14, 16)).astype(np.float32))
    noise = [base.with_array(rng.random(base.shape).astype(np.float32)) for _ in range(3)]
    still = trust.randomization_curve([("original", base)] + [(f"block{n}", base) for n in range(3)], "still")
    moving = trust.randomization_curve([("original", base)] + [(f"block{n}", m) for n, m in enumerate(noise)], "moving")
    # "other cases": similar maps; 6 cases give 15 pairs, above the minimum of 10
    alike = [base.with_array(0.8 * base.array + 0.2 * rng.random(base.shape).astype(np.float32)) for _ in range(5)]
    baseline = trust.cohort_baseline([base] + alike, source="test")
    few = trust.cohort_baseline([base] + alike[:2], source="test: 3 cases")  # 3 pairs: too few to judge
    rows = trust.judge_all({"still": trust.Evidence(curve=still, baseline=baseline),
                            "moving": trust.Evidence(curve=moving, baseline=baseline),
                            "few": trust.Evidence(curve=moving, baseline=few)})
    return trust.TrustCard(rows=rows, curves={"still": still, "moving": moving})


def test_trust_table_is_the_card_with_titles_and_rules_from_the_registry(card):
    app = ov.make_app()
    table = mrml_charts.add_trust_table(app.scene, card)
    columns = mrml_charts.table_columns(table)
    assert columns["method"] == ["still", "moving", "few"]
    assert columns["randomization_verdict"] == ["fail", "pass", "inconclusive"]
    last = card.curves["moving"].ssim[-1]
    assert columns["randomization_value"] == pytest.approx([1.0, last, last])
    assert columns["randomization_baseline"][0] == pytest.approx(card.rows["still"]["randomization"].baseline)
    # each verdict's n and the 95 % interval of its statistic (SSIM − baseline) travel to the table
    assert list(columns["randomization_n"]) == [15, 15, 3]
    for n, method in enumerate(("still", "moving", "few")):
        v = card.rows[method]["randomization"]
        assert [columns["randomization_low"][n], columns["randomization_high"][n]] == pytest.approx(v.interval)
    assert columns["randomization_low"][0] > 0 > columns["randomization_high"][1]
    assert np.isnan(columns["gaze_value"]).all() and columns["gaze_verdict"] == ["not measured"] * 3
    assert np.isnan(columns["gaze_n"]).all()
    for key, c in trust.CRITERIA.items():
        assert table.GetColumnTitle(f"{key}_value") == c.name
        assert table.GetColumnDescription(f"{key}_verdict") == c.rule


def test_randomization_chart_holds_each_curve_and_its_baseline(card):
    app = ov.make_app()
    chart = mrml_charts.add_randomization_chart(app.scene, card)
    assert chart.GetNumberOfPlotSeriesNodes() == 4
    for n, (method, curve) in enumerate(card.curves.items()):
        ssim_series, base_series = chart.GetNthPlotSeriesNode(2 * n), chart.GetNthPlotSeriesNode(2 * n + 1)
        assert ssim_series.GetName() == method and ssim_series.GetPlotType() == ssim_series.PlotTypeScatter
        columns = mrml_charts.table_columns(ssim_series.GetTableNode())
        assert columns["ssim"] == pytest.approx(curve.ssim) and columns["block"] == curve.blocks
        assert columns[base_series.GetYColumnName()] == pytest.approx(
            [card.rows[method]["randomization"].baseline] * len(curve.blocks))
        assert base_series.GetLineStyle() == base_series.LineStyleDash


@pytest.mark.slow
def test_logic_trust_puts_the_card_of_the_shown_map_in_a_table_and_a_chart(monkeypatch, tmp_path):
    """The module's Logic.trust, imported as Slicer imports it (slicer_standins for the application
    only), on real MRML: the shown map's method and class go through the card into the nodes."""
    import importlib

    import slicer_standins

    app = ov.make_app()
    slicer_standins.install(monkeypatch, app, tmp_path / "slicer-tmp")
    module = importlib.import_module("SaliencyInspector")
    try:
        logic = module.SaliencyInspectorLogic()
        # 96×96×40: at 64×64 (6 mm voxels) the same-patient check refuses the phantom's own body outline
        ct, organs = logic.loadPhantomSample(size=(96, 96, 40))
        nodes, _, _ = logic.explain(ct, model="demo", methods=("hirescam",), classes="liver", device="cpu")
        table, chart, card = logic.trust(ct, nodes[("hirescam", "liver")], segmentationNode=organs, device="cpu")
    finally:
        for name in ("SaliencyInspector", "SaliencyInspectorLib.dependencies", "SaliencyInspectorLib"):
            sys.modules.pop(name, None)
    columns = mrml_charts.table_columns(table)
    assert columns["method"] == ["hirescam"] and columns["randomization_verdict"] == ["pass"]
    assert columns["repeatability_verdict"] == ["not measured"]
    # measured against the liver segments of this one CT: one case, below the minimum of 5, inconclusive
    assert columns["localization_verdict"] == ["inconclusive"] and list(columns["localization_n"]) == [1]
    assert columns["randomization_n"][0] == 10 and columns["randomization_high"][0] < 0
    assert "liver" in card.rows["hirescam"]["localization"].details["mask"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2 and table.GetScene() is app.scene
