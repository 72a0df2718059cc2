"""MRML glue for results: table nodes and plot chart nodes (predictions, metrics, ROC curves, the
trust card, randomization and fidelity curves), and the compare layout that shows them in its
table and plot views beside the maps.

Two helpers make every node: :func:`add_table` (a table node from named columns, with column titles
and descriptions) and :func:`add_plot_chart` (a plot chart of :class:`Series`, each two columns of a
table node). Like :mod:`.mrml`, every function takes the scene as an argument and never reaches for
``slicer.mrmlScene`` or ``slicer.app``; nothing here imports ``slicer`` (only ``vtk``), so the same
code runs inside Slicer and on real MRML in plain Python tests (``slicer-core``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import vtk

from .errors import InputError

if TYPE_CHECKING:
    from .scoring.fidelity import FidelityResult
    from .scoring.trust import TrustCard

Columns = Mapping[str, Any]  # column name -> numbers (a numeric ndarray) or strings (anything else)

# A layout with the two methods side by side (axial each), the 3D view, the metrics table and the
# ROC chart. Registered on the layout node under this id.
COMPARE_LAYOUT_ID = 19271
COMPARE_LAYOUT_XML = """
<layout type="vertical" split="true">
 <item splitSize="600">
  <layout type="horizontal">
   <item><view class="vtkMRMLSliceNode" singletontag="Red">
    <property name="orientation" action="default">Axial</property>
    <property name="viewlabel" action="default">R</property>
    <property name="viewcolor" action="default">#F34A33</property>
   </view></item>
   <item><view class="vtkMRMLSliceNode" singletontag="Yellow">
    <property name="orientation" action="default">Axial</property>
    <property name="viewlabel" action="default">Y</property>
    <property name="viewcolor" action="default">#EDD54C</property>
   </view></item>
   <item><view class="vtkMRMLViewNode" singletontag="1">
    <property name="viewlabel" action="default">1</property>
   </view></item>
  </layout>
 </item>
 <item splitSize="400">
  <layout type="horizontal">
   <item><view class="vtkMRMLTableViewNode" singletontag="TableView1">
    <property name="viewlabel" action="default">T</property>
   </view></item>
   <item><view class="vtkMRMLPlotViewNode" singletontag="PlotView1">
    <property name="viewlabel" action="default">P</property>
   </view></item>
  </layout>
 </item>
</layout>
"""


# ---- the two helpers ------------------------------------------------------------------------------
def add_table(scene: Any, name: str, columns: Columns, titles: Mapping[str, str] | None = None,
              descriptions: Mapping[str, str] | None = None) -> Any:
    """A new table node ``name`` holding ``columns`` (all of one length): a numeric ndarray becomes a
    number column, anything else a text column. ``titles``/``descriptions``: column name -> the
    title shown and the tooltip."""
    table = vtk.vtkTable()
    for column, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(float(v))
        else:
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(str(v))
        array.SetName(str(column))
        table.AddColumn(array)
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.SetAndObserveTable(table)
    for column, title in (titles or {}).items():
        node.SetColumnTitle(column, str(title))
    for column, description in (descriptions or {}).items():
        node.SetColumnDescription(column, str(description))
    return node


@dataclass(frozen=True)
class Series:
    """One line of a plot chart: column ``y`` against column ``x`` of ``table`` (a table node)."""

    name: str
    table: Any
    x: str
    y: str
    dashed: bool = False
    markers: bool = False  # False: the line alone
    color: tuple[float, float, float] | None = None


def add_plot_chart(scene: Any, name: str, series: Iterable[Series], title: str, x_title: str, y_title: str,
                   x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None) -> Any:
    """A new plot chart node ``name`` with one Scatter series node per :class:`Series` (Line series
    would space X evenly); fixed axis ranges when given."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    # the ranges are ignored while the chart's automatic ranges are on (vtkMRMLPlotChartNode)
    if x_range is not None:
        chart.SetXAxisRangeAuto(False)
        chart.SetXAxisRange(*x_range)
    if y_range is not None:
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(*y_range)
    for line in series:
        node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", line.name)
        node.SetAndObserveTableNodeID(line.table.GetID())
        node.SetXColumnName(line.x)
        node.SetYColumnName(line.y)
        node.SetPlotType(node.PlotTypeScatter)
        if not line.markers:
            node.SetMarkerStyle(node.MarkerStyleNone)
        node.SetLineStyle(node.LineStyleDash if line.dashed else node.LineStyleSolid)
        if line.color is not None:
            node.SetColor(*[float(c) for c in line.color])
        chart.AddAndObservePlotSeriesNodeID(node.GetID())
    return chart


def table_columns(table_node: Any) -> dict[str, list[Any]]:
    """A table node's columns as name → list (numbers as float, text as str)."""
    table = table_node.GetTable()
    out: dict[str, list[Any]] = {}
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        values = [column.GetValue(r) for r in range(table.GetNumberOfRows())]
        if column.IsA("vtkStringArray"):
            out[column.GetName()] = [str(v) for v in values]
        else:
            out[column.GetName()] = [float(v) for v in values]
    return out


# ---- results as tables and charts ---------------------------------------------------------------
def add_predictions_table(scene: Any, class_names: Sequence[str], probabilities: Any, logits: Any = None,
                          name: str = "Predictions") -> Any:
    """A table node: class, probability (and logit), one row per class."""
    columns = {"class": [str(c) for c in class_names],
               "probability": np.asarray(probabilities, dtype=float).ravel()}
    if logits is not None:
        columns["logit"] = np.asarray(logits, dtype=float).ravel()
    return add_table(scene, name, columns, descriptions={"probability": "model output probability for the class"})


def add_metrics_table(scene: Any, rows: list[dict[str, Any]], name: str = "Saliency metrics",
                      metrics_info: Mapping[str, Any] | None = None) -> Any:
    """A table node with one row per segment and one column per key of ``rows`` (evaluate()'s rows).

    ``metrics_info`` (metrics.METRICS: key → info with name / meaning) gives column titles and
    descriptions, so the table's tooltips say what each number means. The map-quality columns of
    evaluate()'s rows (Quantus's localisation and complexity families) are titled from their own
    registry, :data:`scoring.quality.QUALITY_METRICS` (label, meaning, direction, the file it follows).
    """
    from .scoring.quality import QUALITY_METRICS

    if not rows:
        raise InputError("no metric rows to show; the segmentation gave no segments to score")
    keys = list(rows[0].keys())
    columns: dict[str, Any] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(isinstance(v, (int, float, np.floating, np.integer, bool)) or v is None for v in values) \
                and not all(v is None for v in values):
            columns[key] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            columns[key] = ["" if v is None else str(v) for v in values]
    titles, descriptions = {}, {}
    for key in keys:
        info = (metrics_info or {}).get(key)
        if info is None and key in QUALITY_METRICS:
            q = QUALITY_METRICS[key]
            info = {"name": q.label, "meaning": f"{q.meaning} ({q.family}; {'higher' if q.higher_is_better else 'lower'}"
                                                f" is better; follows {q.source})"}
        if info is None:
            continue
        title = _info_get(info, "name")
        meaning = _info_get(info, "meaning") or _info_get(info, "description")
        if title:
            titles[key] = title
        if meaning:
            descriptions[key] = meaning
    return add_table(scene, name, columns, titles, descriptions)


def add_roc_chart(scene: Any, curves: Mapping[str, tuple[Any, Any]],
                  colors: Mapping[str, tuple[float, float, float]] | None = None, name: str = "ROC curves") -> Any:
    """A plot chart of ROC curves, one series per segment.

    ``curves``: segment name → (false positive rates, true positive rates). Each curve's points are
    in a table node of its own (columns ``FPR`` / ``TPR``): curves have different numbers of points.
    Returns the chart node.
    """
    colors = colors or {}
    series = []
    for segment, (fpr, tpr) in curves.items():
        fpr = np.asarray(fpr, dtype=float).ravel()
        tpr = np.asarray(tpr, dtype=float).ravel()
        if fpr.shape != tpr.shape:
            raise ValueError(f"ROC curve '{segment}': FPR and TPR lengths differ")
        table = add_table(scene, f"{name} {segment}", {"FPR": fpr, "TPR": tpr})
        series.append(Series(str(segment), table, "FPR", "TPR", color=colors.get(segment)))
    return add_plot_chart(scene, name, series, name, "false positive rate", "true positive rate",
                          x_range=(0.0, 1.0), y_range=(0.0, 1.0))


def add_trust_table(scene: Any, card: TrustCard, name: str = "Trust card") -> Any:
    """A table node of the trust card (:class:`scoring.trust.TrustCard`): one row per method, three
    columns per criterion (``<key>_value``, ``<key>_baseline``, ``<key>_verdict``, and the verdict's
    ``<key>_n``, ``<key>_low``, ``<key>_high``: n and the 95 % interval of the statistic) titled and
    described from :data:`scoring.trust.CRITERIA` (its rule in the verdict column's tooltip)."""
    from .scoring.trust import CRITERIA

    rows = card.table()
    if not rows:
        raise InputError("the trust card has no methods to show")
    columns: dict[str, Any] = {"method": [str(r["method"]) for r in rows]}
    titles, descriptions = {}, {}
    for key, c in CRITERIA.items():
        for part in ("value", "baseline"):
            columns[f"{key}_{part}"] = np.array([np.nan if r[f"{key}_{part}"] is None else float(r[f"{key}_{part}"])
                                                 for r in rows])
        columns[f"{key}_verdict"] = [str(r[f"{key}_verdict"]) for r in rows]
        for part in ("n", "low", "high"):  # the verdict's n and the 95 % interval of the statistic it judged
            columns[f"{key}_{part}"] = np.array([np.nan if r[f"{key}_{part}"] is None else float(r[f"{key}_{part}"])
                                                 for r in rows])
        titles.update({f"{key}_value": c.name, f"{key}_baseline": f"{c.name} baseline",
                       f"{key}_verdict": f"{c.name} verdict", f"{key}_n": f"{c.name} n",
                       f"{key}_low": f"{c.name} Δ 95 % low", f"{key}_high": f"{c.name} Δ 95 % high"})
        descriptions.update({f"{key}_value": c.measures, f"{key}_baseline": c.baseline, f"{key}_verdict": c.rule,
                             f"{key}_n": "independent units behind the interval (cases or pairs of cases)",
                             f"{key}_low": "lower end of the statistic's 95 % bootstrap interval",
                             f"{key}_high": "upper end of the statistic's 95 % bootstrap interval"})
    return add_table(scene, name, columns, titles, descriptions)


def add_randomization_chart(scene: Any, card: TrustCard, name: str = "Randomization") -> Any:
    """A plot chart of SSIM to the original map per randomization step, one series per method plus
    its baseline (dashed). Each method's points are in a table node with columns ``step``,
    ``block``, ``ssim``, ``spearman``, ``baseline``. Returns the chart node."""
    series = []
    for method, curve in card.curves.items():
        verdict = card.rows.get(method, {}).get("randomization")
        baseline = verdict.baseline if verdict is not None and verdict.baseline is not None else np.nan
        steps = np.arange(len(curve.blocks), dtype=float)
        table = add_table(scene, f"{name} {method}", {
            "step": steps, "block": list(curve.blocks), "ssim": np.asarray(curve.ssim, float),
            "spearman": np.asarray(curve.spearman, float), "baseline": np.full(len(steps), float(baseline))})
        series += [Series(method, table, "step", "ssim", markers=True),
                   Series(f"{method} baseline", table, "step", "baseline", dashed=True)]
    return add_plot_chart(scene, name, series, f"{name}: SSIM to the original map, output block first",
                          "randomization step (0 = trained model)", "SSIM")


FIDELITY_MEASURES = ("F", "random_F", "random_F_low", "random_F_high", "F_minus_random", "F_minus_random_low",
                     "F_minus_random_high", "F_verdict", "auc_mif", "auc_lif", "random_auc_mif", "random_auc_lif",
                     "F_logit", "random_F_logit", "F_logit_minus_random", "F_logit_minus_random_low",
                     "F_logit_minus_random_high", "F_logit_verdict", "random_maps", "ranked_by")


def add_fidelity_nodes(scene: Any, result: FidelityResult, name: str = "Fidelity") -> tuple[Any, Any]:
    """A table of the fidelity summary (F, its random-map chance line, the AUCs, how it was made)
    and a plot chart of the deletion (MIF) and LIF curves with the random map's (dashed), from a
    :class:`scoring.fidelity.FidelityResult`. Returns ``(table node, chart node)``."""
    data = result.to_dict()
    measures = [k for k in FIDELITY_MEASURES if k in data]
    table = add_table(scene, name, {
        "measure": np.array(measures + ["replacement", "steps"], dtype=object),
        "value": np.array([f"{data[k]:.4f}" if isinstance(data[k], float) else str(data[k]) for k in measures]
                          + [data["replacement"], str(data["steps"])],
                          dtype=object)})
    fractions = np.asarray(result.curves.fractions, dtype=float)
    curves = {"deletion (MIF)": result.curves.mif_probability, "LIF": result.curves.lif_probability}
    if result.random is not None:
        curves.update({"random MIF (mean)": result.random.mif_probability,
                       "random LIF (mean)": result.random.lif_probability})
    series = []
    for label, values in curves.items():
        points = add_table(scene, f"{name} {label}", {"fraction": fractions,
                                                      "probability": np.asarray(values, dtype=float)})
        series.append(Series(label, points, "fraction", "probability", dashed=label.startswith("random")))
    return table, add_plot_chart(scene, f"{name} curves", series, f"{name}: class probability as voxels are replaced",
                                 "fraction of voxels replaced", "class probability")


# ---- the layout that shows them ----------------------------------------------------------------
def register_compare_layout(layout_node: Any) -> bool:
    """Make the compare layout known to the layout node (layout descriptions are not saved with a
    scene: a scene saved in this layout names only its id). When the node already shows that id
    (a scene just loaded), it is applied again so the views are made. True when it shows it."""
    if not layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout_node.AddLayoutDescription(COMPARE_LAYOUT_ID, COMPARE_LAYOUT_XML)
    if layout_node.GetViewArrangement() != COMPARE_LAYOUT_ID:
        return False
    layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)  # no-op unless its description was missing
    return True


def set_compare_layout(layout_node: Any) -> int:
    """Register (once) and switch to the compare layout; returns its id."""
    register_compare_layout(layout_node)
    layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)
    return COMPARE_LAYOUT_ID


def show_table_and_chart(app_logic: Any, table_node: Any = None, chart_node: Any = None) -> None:
    """Show the table and the chart in the layout's table/plot views (application logic)."""
    selection = app_logic.GetSelectionNode()
    if table_node is not None:
        selection.SetActiveTableID(table_node.GetID())
        app_logic.PropagateTableSelection()
    if chart_node is not None:
        selection.SetActivePlotChartID(chart_node.GetID())
        app_logic.PropagatePlotChartSelection()


def _info_get(info: Any, key: str) -> Any:
    return info.get(key) if isinstance(info, dict) else getattr(info, key, None)
